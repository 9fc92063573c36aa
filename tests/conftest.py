import pytest
import torch

# Tests use tiny tensors: one thread avoids thread start-up and oversubscription when a test launches
# subprocesses (DDP, SIGKILL-resume) on a 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield
