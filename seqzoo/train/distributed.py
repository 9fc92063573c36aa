"""Multi-process data parallel through PyTorch's own engine (``torchrun`` + DistributedDataParallel).

``torchrun --nproc_per_node=N`` starts N processes with ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` set;
:func:`setup` joins them into a process group (gloo on CPU, NCCL on CUDA, one GPU per local rank) and
:func:`wrap` puts a module under DDP, which averages gradients across ranks during ``backward``. Without those
variables (or with ``WORLD_SIZE=1``) everything here is a no-op, so the same training script runs alone or
under ``torchrun``. Users who outgrow one host keep using ``torchrun``'s multi-node options unchanged.
"""

from __future__ import annotations

import json
import os

import torch
import torch.distributed as dist
from torch import nn

from ..core.errors import SeqzooError


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when not launched by torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise SeqzooError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from None


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """True on rank 0 (and in a single process): the rank that writes files and shows progress."""
    return rank() == 0


def setup(device_type: str) -> bool:
    """Join the torchrun process group if launched with ``WORLD_SIZE > 1``.

    Returns True when this call created the group (so the caller should :func:`teardown` it), False when there
    is nothing to do (single process, or a group the caller already set up).
    """
    if env_world_size() <= 1 or (dist.is_available() and dist.is_initialized()):
        return False
    if not dist.is_available():
        raise SeqzooError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")
    for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise SeqzooError(f"WORLD_SIZE > 1 but {var} is not set; launch with "
                              "python -m torch.distributed.run --nproc_per_node=N ...")
    if device_type == "cuda":
        if torch.cuda.device_count() <= local_rank():
            raise SeqzooError(f"LOCAL_RANK={local_rank()} but only {torch.cuda.device_count()} CUDA device(s); "
                              "use --nproc_per_node <= the number of GPUs")
        torch.cuda.set_device(local_rank())
        dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank()))
    else:
        dist.init_process_group("gloo")
    return True


def teardown() -> None:
    """Leave the process group (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _reduce_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_mean(value: float | torch.Tensor) -> float | torch.Tensor:
    """Mean of ``value`` over ranks (a float in gives a float out; a tensor gives a tensor on its device)."""
    if not is_distributed():
        return value
    if isinstance(value, torch.Tensor):
        t = value.detach().to(_reduce_device(), torch.float64, copy=True)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return (t / dist.get_world_size()).to(value.device, value.dtype)
    t = torch.tensor(float(value), dtype=torch.float64, device=_reduce_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / dist.get_world_size()


def all_gather_json(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` for a JSON-serialisable ``obj``.

    Sent as UTF-8 bytes in tensors rather than with ``all_gather_object``, so nothing is unpickled.
    """
    if not is_distributed():
        return [obj]
    device = _reduce_device()
    data = torch.tensor(list(json.dumps(obj).encode("utf-8")), dtype=torch.uint8, device=device)
    size = torch.tensor([data.numel()], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros(longest, dtype=torch.uint8, device=device)
    padded[: data.numel()] = data
    chunks = [torch.zeros_like(padded) for _ in sizes]
    dist.all_gather(chunks, padded)
    return [json.loads(bytes(c[: int(s.item())].cpu().tolist()).decode("utf-8")) for c, s in zip(chunks, sizes)]


def broadcast_json(obj):
    """Rank 0's JSON-serialisable ``obj`` on every rank."""
    return all_gather_json(obj)[0]


def barrier() -> None:
    if is_distributed():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` under DistributedDataParallel when running distributed, else ``module`` unchanged."""
    if not is_distributed():
        return module
    if device.type == "cuda":
        return nn.parallel.DistributedDataParallel(module, device_ids=[device.index])
    return nn.parallel.DistributedDataParallel(module)
