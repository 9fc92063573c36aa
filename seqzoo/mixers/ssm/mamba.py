"""Mamba: the selective state-space block (S6 inside a gated block with a short causal convolution).

Paper: "Mamba: Linear-Time Sequence Modeling with Selective State Spaces", Albert Gu and Tri Dao, 2023,
arXiv 2312.00752 (sec. 3.2 Algorithm 2, sec. 3.4 the block, sec. 3.6 and appendix on Δ and A initialisation).

With model width ``d``, inner width ``E·d`` (``expand`` E = 2), state size ``N`` (``d_state`` = 16) and a Δ rank
``R`` (``dt_rank``, "auto" = ⌈d / 16⌉), one block maps ``x_t ∈ R^d`` as follows:

    [u_t, z_t] = W_in x_t                                   (x branch and gate branch, each of width E·d)
    u_t ← SiLU(conv_t(u))                                   causal depthwise conv of kernel ``d_conv`` = 4 over time
    [δ_t, B_t, C_t] = W_x u_t                               δ_t ∈ R^R, B_t, C_t ∈ R^N  (the selection: input-dependent)
    Δ_t = softplus(W_Δ δ_t + b_Δ)                           Δ_t ∈ R^{E·d}, one step size per channel
    A = −exp(A_log)                                         A ∈ R^{E·d × N}, real and negative
    h_t = exp(Δ_t A) ⊙ h_{t−1} + (Δ_t u_t) B_t              h_t ∈ R^{E·d × N} (zero-order hold for A, B̄ = Δ B)
    y_t = h_t C_t + D ⊙ u_t                                 D: a skip per channel
    out_t = W_out (y_t ⊙ SiLU(z_t))

The scan is :func:`seqzoo.ops.selective_scan` (``impl`` "recurrent" is the step-by-step reference, "chunk" and
"parallel" its fast forms) and the convolution is :class:`seqzoo.mixers.short_conv.ShortConv`, whose state is the
last ``d_conv − 1`` inputs of the x branch; so the block's state is
``{"conv": [B, d_conv − 1, E·d], "ssm": [B, E·d, N]}``, both float32 (float64 for float64 inputs), and any split
of a sequence into calls gives the same output as one call.

Initialisation (sec. 3.6 and the reference code ``mamba_ssm/modules/mamba_simple.py`` of state-spaces/mamba,
read for these values):

* S4D-Real: ``A_log[c, n] = log(n + 1)``, i.e. ``A[c, n] = −(n + 1)`` for every channel c;
* Δ: a target step ``dt`` is drawn log-uniformly in ``[dt_min, dt_max] = [1e-3, 1e-1]`` per channel (floored at
  1e-4) and the bias is its inverse softplus, ``b_Δ = dt + log(1 − exp(−dt))``, so ``softplus(b_Δ) = dt``;
  ``W_Δ`` is uniform in ``±R^{-1/2}``;
* ``D = 1``; the x-branch projection ``W_x`` has no bias; ``W_in``, ``W_out`` have no bias; the conv has one.

``A_log``, ``D`` and ``b_Δ`` are declared with :func:`seqzoo.core.set_optim` as "no weight decay" (as in the
reference code), with their own learning rate when ``ssm_lr`` is given.

:class:`SelectiveSSM` (the conv-free core from u to y) is a module of its own because MambaMixer
(``mambamixer.py``) reuses it to scan across channels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...core.errors import SeqzooError
from ...core.mixer import Mixer, set_optim
from ...core.registry import register_mixer
from ...core.state import State, state_dtype
from ...ops import selective_scan
from ..short_conv import ShortConv

DT_MIN, DT_MAX, DT_FLOOR = 1e-3, 1e-1, 1e-4
SCAN_IMPLS: tuple[str, ...] = ("recurrent", "chunk", "parallel")


def positive_int(owner: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SeqzooError(f"{owner}: {name} must be a positive int, got {value!r}")
    return value


def inverse_softplus(y: Tensor) -> Tensor:
    """``x`` with ``softplus(x) = y`` for ``y > 0``: ``x = y + log(1 − exp(−y))`` (stable for small and large y)."""
    return y + torch.log(-torch.expm1(-y))


def resolve_dt_rank(dt_rank, d_model: int, owner: str = "mamba") -> int:
    """``"auto"`` → ⌈d_model / 16⌉ (the paper's choice), else a positive int."""
    if dt_rank == "auto":
        return math.ceil(d_model / 16)
    return positive_int(owner, "dt_rank", dt_rank)


def resolve_scan_impl(impl, owner: str) -> str:
    valid = ("auto",) + SCAN_IMPLS
    if impl not in valid:
        raise SeqzooError(f"unknown impl {impl!r} for {owner}; valid: {', '.join(valid)}")
    return impl


class SelectiveSSM(nn.Module):
    """The S6 layer of Mamba on an already convolved and activated x branch ``u: [B, L, channels]``:
    ``[δ, B, C] = W_x u``, ``Δ = softplus(W_Δ δ + b_Δ)``, ``h_t = exp(Δ_t A) h_{t−1} + Δ_t u_t B_t``,
    ``y_t = h_t C_t + D u_t`` with ``A = −exp(A_log)``; returns ``(y, h_L)``.

    ``L`` is whatever axis is scanned: time in :class:`Mamba`, channels in MambaMixer's channel mixer.
    """

    def __init__(self, channels: int, d_state: int = 16, dt_rank: int = 1, *, dt_min: float = DT_MIN,
                 dt_max: float = DT_MAX, impl: str = "auto", chunk_size: int = 128, ssm_lr: float | None = None,
                 owner: str = "selective SSM"):
        super().__init__()
        self.channels = positive_int(owner, "channels", channels)
        self.d_state = positive_int(owner, "d_state", d_state)
        self.dt_rank = positive_int(owner, "dt_rank", dt_rank)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (dt_min, dt_max)) \
                or not 0.0 < dt_min <= dt_max:
            raise SeqzooError(f"{owner}: need 0 < dt_min <= dt_max, got dt_min={dt_min!r}, dt_max={dt_max!r}")
        if ssm_lr is not None and not (isinstance(ssm_lr, (int, float)) and ssm_lr > 0):
            raise SeqzooError(f"{owner}: ssm_lr must be a positive number or None, got {ssm_lr!r}")
        self.impl = resolve_scan_impl(impl, owner)
        self.chunk_size = positive_int(owner, "chunk_size", chunk_size)
        self.x_proj = nn.Linear(channels, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, channels, bias=True)
        self.A_log = nn.Parameter(torch.empty(channels, d_state))
        self.D = nn.Parameter(torch.empty(channels))
        self.dt_min, self.dt_max = float(dt_min), float(dt_max)
        self.reset_ssm_parameters()
        for p in (self.A_log, self.D, self.dt_proj.bias):
            set_optim(p, weight_decay=0.0, lr=ssm_lr)

    @torch.no_grad()
    def reset_ssm_parameters(self) -> None:
        """The paper's initialisation of A (S4D-Real), D (ones) and the Δ projection (see the module docstring)."""
        bound = self.dt_rank ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -bound, bound)
        log_dt = torch.rand(self.channels) * (math.log(self.dt_max) - math.log(self.dt_min)) + math.log(self.dt_min)
        dt = log_dt.exp().clamp(min=DT_FLOOR)
        self.dt_proj.bias.copy_(inverse_softplus(dt))
        n = torch.arange(1, self.d_state + 1, dtype=torch.float64)
        self.A_log.copy_(n.log().expand(self.channels, self.d_state))
        self.D.fill_(1.0)

    def A(self, dtype: torch.dtype | None = None) -> Tensor:
        """``A = −exp(A_log)`` as ``[channels, N]``."""
        a_log = self.A_log if dtype is None else self.A_log.to(dtype)
        return -torch.exp(a_log)

    def selection(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The input-dependent ``(Δ [B, L, channels], B [B, L, N], C [B, L, N])`` for ``u: [B, L, channels]``.

        Δ is computed in the state dtype (float32 for bf16 inputs) so the softplus keeps small steps accurate.
        """
        work = state_dtype(u.dtype)
        low, b, c = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        pre = F.linear(low.to(work), self.dt_proj.weight.to(work), self.dt_proj.bias.to(work))
        return F.softplus(pre), b, c

    def forward(self, u: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        delta, b, c = self.selection(u)
        return selective_scan(u, delta, self.A(delta.dtype), b, c, self.D, initial_state=state, impl=self.impl,
                              chunk_size=self.chunk_size)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, d_state={self.d_state}, dt_rank={self.dt_rank}, impl={self.impl!r}, "
                f"chunk_size={self.chunk_size}")


@register_mixer("mamba", paper="Mamba: Linear-Time Sequence Modeling with Selective State Spaces", arxiv="2312.00752")
class Mamba(Mixer):
    """The Mamba block (Gu and Dao 2023, arXiv 2312.00752): in-projection to an x branch and a gate, causal
    depthwise conv + SiLU, the selective scan ``h_t = exp(Δ_t A) h_{t−1} + Δ_t u_t B_t``, ``y_t = h_t C_t + D u_t``
    with input-dependent Δ, B, C, the gate ``y ⊙ SiLU(z)`` and an out-projection.

    Options: ``d_state`` N (16); ``expand`` E (2); ``d_conv`` conv kernel (4); ``dt_rank`` ("auto" = ⌈d/16⌉);
    ``dt_min``/``dt_max`` range of the initial Δ; ``conv_bias``; ``bias`` of the in/out projections;
    ``impl`` in ``IMPLS`` or "auto" (= "chunk"); ``chunk_size`` of the fast scans; ``ssm_lr`` own learning rate of
    A_log, D and the Δ bias (None: the main rate; they never get weight decay).
    State: ``{"conv": [B, d_conv − 1, E·d], "ssm": [B, E·d, N]}``.
    """

    IMPLS: tuple[str, ...] = SCAN_IMPLS
    constant_state = True

    def __init__(self, d_model: int, d_state: int = 16, expand: int = 2, d_conv: int = 4, dt_rank: int | str = "auto",
                 dt_min: float = DT_MIN, dt_max: float = DT_MAX, conv_bias: bool = True, bias: bool = False,
                 impl: str = "auto", chunk_size: int = 128, ssm_lr: float | None = None):
        super().__init__(d_model)
        self.expand = positive_int("mamba", "expand", expand)
        self.d_conv = positive_int("mamba", "d_conv", d_conv)
        self.d_inner = expand * d_model
        self.d_state = positive_int("mamba", "d_state", d_state)
        self.dt_rank = resolve_dt_rank(dt_rank, d_model)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self.conv = ShortConv(self.d_inner, d_conv, bias=conv_bias)
        self.ssm = SelectiveSSM(self.d_inner, d_state, self.dt_rank, dt_min=dt_min, dt_max=dt_max, impl=impl,
                                chunk_size=chunk_size, ssm_lr=ssm_lr, owner="mamba")
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    @property
    def impl(self) -> str:
        return self.ssm.impl

    # -- contract -----------------------------------------------------------------------------------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None) -> State:
        dtype = state_dtype(dtype if dtype is not None else torch.get_default_dtype())
        return {"conv": torch.zeros(batch_size, self.d_conv - 1, self.d_inner, device=device, dtype=dtype),
                "ssm": torch.zeros(batch_size, self.d_inner, self.d_state, device=device, dtype=dtype)}

    def state_size(self, seq_len: int) -> int:
        return (self.d_conv - 1) * self.d_inner + self.d_inner * self.d_state

    def _mix(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        missing = [key for key in ("conv", "ssm") if key not in state]
        if missing:
            raise SeqzooError(f"mamba state lacks {missing[0]!r}; expected keys: conv, ssm "
                              f"(use init_state or the state returned by a previous call)")
        u, z = self.in_proj(x).chunk(2, dim=-1)
        u, conv_state = self.branch(u, state["conv"])
        y, ssm_state = self.ssm(u, state["ssm"])
        out = self.out_proj(y * F.silu(z))
        return out, {"conv": conv_state.to(state_dtype(x.dtype)), "ssm": ssm_state}

    def branch(self, u: Tensor, conv_state: Tensor | None) -> tuple[Tensor, Tensor]:
        """SiLU(causal conv(u)) of the x branch and the new conv state."""
        u, conv_state = self.conv(u, conv_state)
        return F.silu(u), conv_state

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_inner={self.d_inner}, d_state={self.d_state}, dt_rank={self.dt_rank}, "
                f"d_conv={self.d_conv}, impl={self.impl!r}")


__all__ = ["Mamba", "SelectiveSSM", "inverse_softplus", "resolve_dt_rank", "DT_MIN", "DT_MAX", "DT_FLOOR"]
