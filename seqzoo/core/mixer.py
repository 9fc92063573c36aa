"""The mixer contract (DESIGN.md, Contract 2).

A mixer maps ``x: [B, T, D]`` and an optional state to ``(y: [B, T, D], new_state)``. Feeding ``x`` in any split
along ``T`` while threading the state gives the same ``y`` as one call (chunk invariance), and a causal mixer's
``y[:, :t]`` never depends on ``x[:, t:]``. Subclasses implement :meth:`_mix` (always called with a state) and
:meth:`init_state`; this base class validates inputs once for all of them.

Parameters with special optimiser needs (for example SSM ``A`` and ``Δ``: no weight decay and their own learning
rate) are marked with :func:`set_optim` and the trainer puts them in their own parameter group.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .errors import SeqzooError
from .state import State, state_numel


def set_optim(param: nn.Parameter, *, weight_decay: float | None = None, lr: float | None = None) -> nn.Parameter:
    """Declare optimiser settings for one parameter (read by ``seqzoo.train``)."""
    opts = {}
    if weight_decay is not None:
        opts["weight_decay"] = float(weight_decay)
    if lr is not None:
        opts["lr"] = float(lr)
    param._seqzoo_optim = opts
    return param


def get_optim(param: nn.Parameter) -> dict:
    return dict(getattr(param, "_seqzoo_optim", {}))


class Mixer(nn.Module):
    """Base class of every sequence mixer. See the module docstring for the contract."""

    causal: bool = True
    registry_name: str = ""

    def __init__(self, d_model: int):
        super().__init__()
        if not isinstance(d_model, int) or d_model <= 0:
            raise SeqzooError(f"d_model must be a positive int, got {d_model!r}")
        self.d_model = d_model

    # -- to implement -------------------------------------------------------------------------------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None) -> State:
        raise NotImplementedError(f"{type(self).__name__} must implement init_state")

    def _mix(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        raise NotImplementedError(f"{type(self).__name__} must implement _mix")

    # -- shared -------------------------------------------------------------------------------------------------
    def check_input(self, x: Tensor) -> None:
        """Validate ``x``; mixers over other layouts (e.g. ``[B, T, C, H, W]``) override this."""
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise SeqzooError(f"{type(self).__name__} expects x of shape [B, T, {self.d_model}], got {list(x.shape)}")

    def example_input_shape(self, batch_size: int, seq_len: int) -> tuple[int, ...]:
        """Shape of an input of ``seq_len`` steps (used by the contract tests and ``state_size``)."""
        return (batch_size, seq_len, self.d_model)

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        self.check_input(x)
        if state is None:
            state = self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
        return self._mix(x, state)

    def state_size(self, seq_len: int) -> int:
        """State elements per sequence after ``seq_len`` tokens (measured by running the mixer)."""
        p = next(self.parameters(), None)
        device = p.device if p is not None else None
        dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
        with torch.no_grad():
            _, state = self.forward(torch.zeros(self.example_input_shape(1, seq_len), device=device, dtype=dtype))
        return state_numel(state)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}"
