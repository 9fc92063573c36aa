"""The layer around a per-channel LTI state space model, shared by S4, S4D and LSSL.

Per layer (S4: arXiv 2111.00396 and the authors' standalone S4 block; S4D: arXiv 2206.11893; LSSL:
arXiv 2110.13985), for an input ``x [B, T, H]`` (``H = d_model`` channels, each its own SSM; LSSL runs
``copies`` SSMs with different Δ on every channel, ``C = H · copies`` SSM channels):

    u = x (repeated ``copies`` times for LSSL)
    y_ssm = SSM(u) + D ⊙ u                                   (per channel, state x_t ∈ C^N or R^N)
    out = GLU(W (GELU(y_ssm)) + b)     (S4, S4D: a position-wise linear map C → 2H, halves gated by a sigmoid)
    out = W (GELU(y_ssm)) + b          (LSSL: position-wise linear mixing of the H · copies outputs to H)

Everything after the SSM is position-wise, so chunk invariance rests on the SSM alone. The SSM runs in
``state_dtype`` of the input (float32, float64 for float64 inputs; complex64/complex128 states), the output
projection in the input dtype.

The step sizes are ``Δ = exp(log Δ)`` per SSM channel, initialised log-uniformly in ``[dt_min, dt_max]``. The
SSM parameters (A, B, P, log Δ) are marked with :func:`seqzoo.core.set_optim`: no weight decay and their own
learning rate ``ssm_lr`` (None: the global rate), as S4 prescribes. C and D are ordinary parameters.

The state is ``{"x": [B, C, N] float}`` for a real SSM, and ``{"x": [B, C, M, 2]}`` (real and imaginary parts of
M complex modes; one member of each conjugate pair, so the real count is N) for a complex one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...core.errors import SeqzooError
from ...core.mixer import Mixer, set_optim
from ...core.state import State, state_dtype
from ...ops.ssm_kernel import IMPLS

IMPL_CHOICES = ("auto",) + IMPLS


def complex_param(value: Tensor) -> nn.Parameter:
    """A complex tensor stored as a real parameter ``[..., 2]`` (so dtype casts and optimisers treat it as real)."""
    return nn.Parameter(torch.view_as_real(value.to(torch.complex128)).to(torch.get_default_dtype()).clone())


def as_complex(param: Tensor, dtype: torch.dtype) -> Tensor:
    """The complex view of a ``[..., 2]`` parameter, computed in the real ``dtype``."""
    return torch.view_as_complex(param.to(dtype).contiguous())


def complex_of(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def check_positive_int(name: str, value, *, even: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (even and value % 2):
        kind = "a positive even int" if even else "a positive int"
        raise SeqzooError(f"{name} must be {kind}, got {value!r}")
    return value


class LTILayer(Mixer):
    """Base of the LTI SSM mixers (see the module docstring). Subclasses define the SSM parameters and
    :meth:`run_ssm`."""

    IMPLS: tuple[str, ...] = IMPLS
    constant_state = True
    complex_state: bool = True
    output_glu: bool = True

    def __init__(self, d_model: int, *, d_state: int, copies: int = 1, impl: str = "auto", dt_min: float = 1e-3,
                 dt_max: float = 1e-1, ssm_lr: float | None = 1e-3, name: str = "ssm"):
        super().__init__(d_model)
        self.d_state = check_positive_int("d_state", d_state, even=self.complex_state)
        self.copies = check_positive_int("copies", copies)
        if impl not in IMPL_CHOICES:
            raise SeqzooError(f"impl {impl!r} is not valid for {name}; valid: {', '.join(IMPL_CHOICES)}")
        if not (isinstance(dt_min, (int, float)) and isinstance(dt_max, (int, float)) and 0 < dt_min <= dt_max):
            raise SeqzooError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min!r}, dt_max={dt_max!r}")
        if ssm_lr is not None and not (isinstance(ssm_lr, (int, float)) and ssm_lr > 0):
            raise SeqzooError(f"ssm_lr must be a positive number or None (the global rate), got {ssm_lr!r}")
        self.impl, self.ssm_lr = impl, ssm_lr
        self.channels = d_model * copies
        log_dt = torch.rand(self.channels) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = self.ssm_param(log_dt)
        self.D = nn.Parameter(torch.randn(self.channels))
        self.out_proj = nn.Linear(self.channels, 2 * d_model if self.output_glu else d_model)

    def ssm_param(self, value: Tensor) -> nn.Parameter:
        """A parameter of the SSM itself: no weight decay, learning rate ``ssm_lr``."""
        param = value if isinstance(value, nn.Parameter) else nn.Parameter(value.to(torch.get_default_dtype()))
        return set_optim(param, weight_decay=0.0, lr=self.ssm_lr)

    # -- to implement -------------------------------------------------------------------------------------------
    @property
    def stored_modes(self) -> int:
        """Modes kept in the state per channel (N for a real SSM, N/2 conjugate-pair representatives)."""
        return self.d_state // 2 if self.complex_state else self.d_state

    def run_ssm(self, u: Tensor, x0: Tensor, impl: str) -> tuple[Tensor, Tensor]:
        """``u [B, T, C]`` (work dtype) and the stored-form state ``x0`` → ``(Re(C x_t) [B, T, C], x_{T−1})``."""
        raise NotImplementedError

    # -- contract -----------------------------------------------------------------------------------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None) -> State:
        dtype = state_dtype(dtype if dtype is not None else torch.get_default_dtype())
        shape = (batch_size, self.channels, self.stored_modes) + ((2,) if self.complex_state else ())
        return {"x": torch.zeros(shape, device=device, dtype=dtype)}

    def state_size(self, seq_len: int) -> int:
        return self.channels * self.stored_modes * (2 if self.complex_state else 1)

    def resolve_impl(self, length: int) -> str:
        """``auto``: the recurrence for single tokens (decoding), the convolution otherwise."""
        if self.impl != "auto":
            return self.impl
        return "recurrent" if length == 1 else "conv"

    def _mix(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        if "x" not in state:
            raise SeqzooError(f"{type(self).__name__} state lacks 'x'; expected keys: x "
                              f"(use init_state or the state returned by a previous call)")
        work = state_dtype(x.dtype)
        expected = self.init_state(x.shape[0], device=x.device, dtype=work)["x"].shape
        if tuple(state["x"].shape) != tuple(expected):
            raise SeqzooError(f"{type(self).__name__} state 'x' must have shape {list(expected)}, "
                              f"got {list(state['x'].shape)}")
        x0 = state["x"].to(work)
        if self.complex_state:
            x0 = torch.view_as_complex(x0.contiguous())
        u = x.to(work)
        if self.copies > 1:
            u = u.repeat_interleave(self.copies, dim=-1)
        y, xL = self.run_ssm(u, x0, self.resolve_impl(x.shape[1]))
        y = y + self.D.to(work) * u
        out = self.out_proj(F.gelu(y).to(x.dtype))
        if self.output_glu:
            out = F.glu(out, dim=-1)
        new = torch.view_as_real(xL).to(work) if self.complex_state else xL.to(work)
        return out, {"x": new}

    def step_sizes(self, dtype: torch.dtype) -> Tensor:
        """Δ per SSM channel (``[C]``)."""
        return torch.exp(self.log_dt.to(dtype))

    @staticmethod
    def zero_state(x0: Tensor) -> Tensor | None:
        """``x0``, or None when it is exactly zero and carries no gradient (its terms are then skipped)."""
        return None if (not x0.requires_grad and not bool(torch.any(x0 != 0))) else x0

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_state={self.d_state}, copies={self.copies}, impl={self.impl!r}, "
                f"ssm_lr={self.ssm_lr}")


__all__ = ["LTILayer", "as_complex", "check_positive_int", "complex_of", "complex_param"]
