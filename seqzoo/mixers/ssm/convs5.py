"""ConvS5: a convolutional state space model over video frames, with a diagonal (pointwise) state transition.

Paper: "Convolutional State Space Models for Long-Range Spatiotemporal Modeling", Jimmy T.H. Smith, Shalini De
Mello, Jan Kautz, Scott W. Linderman and Wonmin Byeon, NeurIPS 2023, arXiv 2310.19694 (ConvSSM, sec. 3; ConvS5,
sec. 3.3). S5 (the parameterisation it borrows): "Simplified State Space Layers for Sequence Modeling", Smith,
Warrington and Linderman, ICLR 2023, arXiv 2208.04933.

Inputs are videos ``u [B, T, C, H, W]`` (``C = d_model`` channels per pixel); the state is a tensor with ``P``
channels on the same H × W grid. A ConvSSM is the continuous system X'(t) = A ∗ X(t) + B ∗ U(t),
Y(t) = C ∗ X(t) + D ∗ U(t) with 2-D convolutions ∗. ConvS5 makes the state kernel A pointwise (1 × 1) — then the
ConvSSM is a block-diagonal SSM with one copy of the same P × P system per pixel, so it can be diagonalised and
scanned in parallel over time — and uses S5's diagonal parameterisation and initialisation. Discretised by zero-order
hold with a learned step Δ_p per state channel, for every pixel (i, j):

    Λ̄ = exp(Λ Δ),        B̄ = Λ^{-1} (Λ̄ − 1) ⊙ B̃                                    (ZOH, elementwise in p)
    X_t = Λ̄ ⊙ X_{t−1} + B̄ ∗ U_t                                                      (state  [P, H, W], complex)
    Y_t = act(2 Re(C̃ ∗ X_t) + D ∗ U_t)                                               (output [C, H, W])

with Λ ∈ C^P diagonal (Λ̄ multiplies each state channel at each pixel: the pointwise A), B̃ a k_B × k_B complex
convolution C → P, C̃ a k_C × k_C complex convolution P → C, D a real k_D × k_D convolution C → C (with bias), all
"same" padded (zeros, or circular with ``padding="circular"``), and act = GELU.

Parameterisation, as in the paper and its official code (NVlabs/ConvSSM, ``src/models/convS5``):

* Λ: the eigenvalues of the normal part of HiPPO-LegS of size N = ``d_state`` (real parts all equal to the mean
  of its diagonal, −½), one member of each conjugate pair, so P = N / 2 complex channels; with conjugate symmetry
  the real system of size N reads out 2 Re(C̃ X). Re Λ is clipped to ≤ −1e−4 (``clip_eigs``) so the system stays
  stable while training.
* B̃ = V⁻¹ B and C̃ = C V: He-initialised real kernels B (C → N) and C (N → C) moved into the eigenbasis V.
* Δ = exp(log Δ) with log Δ uniform in [log dt_min, log dt_max] (1e−3, 1e−1), one per state channel.
* Λ, log Δ and B̃ are the SSM parameters: no weight decay and their own learning rate ``ssm_lr`` (as S5's
  optimiser groups them); C̃ and D are ordinary weights. (The ConvSSM training code itself uses one AdamW with
  weight decay 1e−5 for every parameter; here the S5 grouping is kept, as for the other SSM mixers.)
* The official layer follows the D convolution by GroupNorm and the activation; here only the activation is kept
  (the mixer is used inside residual blocks that bring their own normalisation).

Receptive field: because A is pointwise, Y_t at pixel p depends on U_s (every s ≤ t, with weights decaying like
Λ̄^{t−s}) only within the square of radius r_B + r_C around p (r = (k − 1)/2), plus radius r_D through D at s = t.
One layer's spatial reach does not grow with time (a ConvSSM with a k × k state kernel A would reach k·t
pixels, but cannot be scanned in parallel); it grows with depth, by r_B + r_C per stacked layer.

Forms (``impl``): ``"recurrent"`` steps the state frame by frame (the reference; what autoregressive generation
does), ``"parallel"`` runs a Hillis–Steele log-depth scan over time (round j adds Λ̄^{2^j} X_{t−2^j} to X_t). The
convolutions do not depend on the state, so both forms apply them to all frames at once.

State: ``{"x": [B, P, H, W, 2]}`` — the real and imaginary parts of X, float32 (float64 for float64 inputs).
Its size does not depend on T; ``state_size`` reports it for frames of ``frame_size``. An input ``[B, T, C]`` is
taken as a video of 1 × 1 frames (then ConvS5 is an S5 layer on the channel vector: only the kernel centres act),
which lets the mixer run inside a token :class:`~seqzoo.models.CausalLM`.
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
from .hippo import nplr

PADDINGS = ("zeros", "circular")
ACTIVATIONS = {"gelu": F.gelu, "identity": lambda y: y}
MAX_REAL = -1e-4     # clip_eigs: Re Λ ≤ −1e−4


def _odd_kernel(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value % 2 == 0:
        raise SeqzooError(f"{name} must be a positive odd int (for 'same' padding), got {value!r}")
    return value


def _frame(value) -> tuple[int, int]:
    size = (value, value) if isinstance(value, int) and not isinstance(value, bool) else tuple(value)
    if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise SeqzooError(f"frame_size must be a positive int or a pair (H, W) of them, got {value!r}")
    return size


def _complex_pairs(value: Tensor) -> nn.Parameter:
    """A complex tensor stored as a real ``[..., 2]`` parameter (optimisers and dtype casts see real numbers)."""
    return nn.Parameter(torch.view_as_real(value.to(torch.complex128)).to(torch.get_default_dtype()).clone())


def _as_complex(param: Tensor, dtype: torch.dtype) -> Tensor:
    return torch.view_as_complex(param.to(dtype).contiguous())


def _scan_recurrent(lam_bar: Tensor, bu: Tensor, x0: Tensor) -> Tensor:
    """X_t = Λ̄ ⊙ X_{t−1} + bu_t, one frame at a time. ``bu [B, T, P, H, W]``, ``lam_bar [P]``, ``x0 [B, P, H, W]``."""
    a = lam_bar[:, None, None]
    states, x = [], x0
    for bu_t in bu.unbind(1):
        x = a * x + bu_t
        states.append(x)
    return torch.stack(states, dim=1)


def _scan_parallel(lam_bar: Tensor, bu: Tensor, x0: Tensor) -> Tensor:
    """The same recurrence by a Hillis–Steele scan: after round j, X_t holds Σ_{i < 2^{j+1}, i ≤ t} Λ̄^i bu_{t−i}
    (the initial state folded into the first frame), so ⌈log₂ T⌉ rounds give every X_t."""
    a = lam_bar[:, None, None]
    h = torch.cat([bu[:, :1] + (a * x0)[:, None], bu[:, 1:]], dim=1)
    shift, power = 1, a
    while shift < h.shape[1]:
        h = torch.cat([h[:, :shift], h[:, shift:] + power * h[:, :-shift]], dim=1)
        power, shift = power * power, shift * 2
    return h


_SCANS = {"recurrent": _scan_recurrent, "parallel": _scan_parallel}


@register_mixer("convs5", paper="Convolutional State Space Models for Long-Range Spatiotemporal Modeling",
                arxiv="2310.19694")
class ConvS5(Mixer):
    """ConvS5 (Smith et al., NeurIPS 2023, arXiv 2310.19694) on videos ``[B, T, C, H, W]``: per pixel
    ``X_t = Λ̄ ⊙ X_{t−1} + B̄ ∗ U_t``, ``Y_t = GELU(2 Re(C̃ ∗ X_t) + D ∗ U_t)`` with a diagonal HiPPO-initialised Λ,
    ZOH discretisation, k × k convolutions B̃, C̃, D, and a parallel scan over time.

    Options: ``d_state`` N (even; P = N / 2 complex state channels); ``b_kernel``, ``c_kernel``, ``d_kernel``
    (odd sizes); ``padding`` ("zeros" or "circular"); ``dt_min``, ``dt_max``; ``clip_eigs``; ``ssm_lr`` (None: the
    global rate); ``activation`` ("gelu" or "identity"); ``impl`` in ``IMPLS`` or "auto"; ``frame_size`` (H, W)
    of ``example_input_shape`` and ``state_size`` (any frame size works in ``forward``).
    """

    IMPLS: tuple[str, ...] = ("recurrent", "parallel")
    constant_state = True

    def __init__(self, d_model: int, d_state: int = 64, b_kernel: int = 3, c_kernel: int = 3, d_kernel: int = 3,
                 padding: str = "zeros", dt_min: float = 1e-3, dt_max: float = 1e-1, clip_eigs: bool = True,
                 ssm_lr: float | None = 1e-3, activation: str = "gelu", impl: str = "auto",
                 frame_size: int | tuple[int, int] = 6):
        super().__init__(d_model)
        if isinstance(d_state, bool) or not isinstance(d_state, int) or d_state < 2 or d_state % 2:
            raise SeqzooError(f"d_state must be an even int >= 2 (conjugate pairs of HiPPO eigenvalues), "
                              f"got {d_state!r}")
        self.kernels = {"B": _odd_kernel("b_kernel", b_kernel), "C": _odd_kernel("c_kernel", c_kernel),
                        "D": _odd_kernel("d_kernel", d_kernel)}
        if padding not in PADDINGS:
            raise SeqzooError(f"padding {padding!r} is not valid for convs5; valid: {', '.join(PADDINGS)}")
        if activation not in ACTIVATIONS:
            raise SeqzooError(f"activation {activation!r} is not valid for convs5; valid: {', '.join(ACTIVATIONS)}")
        if impl not in ("auto",) + self.IMPLS:
            raise SeqzooError(f"impl {impl!r} is not valid for convs5; valid: auto, {', '.join(self.IMPLS)}")
        if not (isinstance(dt_min, (int, float)) and isinstance(dt_max, (int, float)) and 0 < dt_min <= dt_max):
            raise SeqzooError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min!r}, dt_max={dt_max!r}")
        if ssm_lr is not None and not (isinstance(ssm_lr, (int, float)) and ssm_lr > 0):
            raise SeqzooError(f"ssm_lr must be a positive number or None (the global rate), got {ssm_lr!r}")
        self.d_state, self.P = d_state, d_state // 2
        self.padding, self.activation, self.impl = padding, activation, impl
        self.clip_eigs, self.ssm_lr = bool(clip_eigs), ssm_lr
        self.frame_size = _frame(frame_size)
        C, N, P, kB, kC = d_model, d_state, self.P, self.kernels["B"], self.kernels["C"]

        hippo = nplr("legs", N)                              # Λ [P] (Im > 0), V [N, P]
        self.Lambda_re = self._ssm(nn.Parameter(hippo.lam.real.to(torch.get_default_dtype()).clone()))
        self.Lambda_im = self._ssm(nn.Parameter(hippo.lam.imag.to(torch.get_default_dtype()).clone()))
        log_dt = torch.rand(P) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = self._ssm(nn.Parameter(log_dt))
        # B: He-normal real kernel C → N (fan-in C·k_B²), moved into the eigenbasis: B̃ = V⁻¹ B = V* B (V unitary)
        B = torch.randn(N, C * kB * kB, dtype=torch.float64) * math.sqrt(2.0 / (C * kB * kB))
        B_tilde = (hippo.V.conj().T @ B.to(torch.complex128)).view(P, C, kB, kB)
        self.B = self._ssm(_complex_pairs(B_tilde))
        # C: He-normal real kernel N → C (fan-in N·k_C²), C̃ = C V
        Cm = torch.randn(C * kC * kC, N, dtype=torch.float64) * math.sqrt(2.0 / (N * kC * kC))
        C_tilde = (Cm.to(torch.complex128) @ hippo.V).view(C, kC, kC, P).permute(0, 3, 1, 2)
        self.C = _complex_pairs(C_tilde)                     # [C, P, k_C, k_C, 2]
        self.D = nn.Conv2d(C, C, self.kernels["D"], padding=0, bias=True)

    def _ssm(self, param: nn.Parameter) -> nn.Parameter:
        return set_optim(param, weight_decay=0.0, lr=self.ssm_lr)

    # -- layout ---------------------------------------------------------------------------------------------------
    def check_input(self, x: Tensor) -> None:
        if not ((x.dim() == 5 or x.dim() == 3) and x.shape[2] == self.d_model):
            raise SeqzooError(f"convs5 expects videos [B, T, {self.d_model}, H, W] (or [B, T, {self.d_model}] as "
                              f"1×1 frames), got {list(x.shape)}")

    def example_input_shape(self, batch_size: int, seq_len: int) -> tuple[int, ...]:
        return (batch_size, seq_len, self.d_model) + self.frame_size

    # -- contract -------------------------------------------------------------------------------------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None, frame_size=None) -> State:
        """Zero state for frames of ``frame_size`` (default: this mixer's ``frame_size``; the first call adopts
        the size of its frames when it is given no state)."""
        dtype = state_dtype(dtype if dtype is not None else torch.get_default_dtype())
        H, W = _frame(frame_size) if frame_size is not None else self.frame_size
        return {"x": torch.zeros(batch_size, self.P, H, W, 2, device=device, dtype=dtype)}

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        self.check_input(x)
        if state is None:
            frame = tuple(x.shape[3:]) if x.dim() == 5 else (1, 1)
            state = self.init_state(x.shape[0], device=x.device, dtype=x.dtype, frame_size=frame)
        return self._mix(x, state)

    def state_size(self, seq_len: int) -> int:
        return self.P * self.frame_size[0] * self.frame_size[1] * 2

    def _mix(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        video = x if x.dim() == 5 else x[..., None, None]
        batch, T, C, H, W = video.shape
        work = state_dtype(x.dtype)
        if "x" not in state:
            raise SeqzooError("convs5 state lacks 'x'; expected keys: x (use init_state or the state returned by a "
                              "previous call)")
        expected = (batch, self.P, H, W, 2)
        if tuple(state["x"].shape) != expected:
            raise SeqzooError(f"convs5 state 'x' must have shape {list(expected)} for frames {H}×{W}, "
                              f"got {list(state['x'].shape)}")
        x0 = torch.view_as_complex(state["x"].to(work).contiguous())
        u = video.to(work)
        y, xs = self.ssm(u, x0, self.resolve_impl(T))
        out = y.to(x.dtype)
        out = out if x.dim() == 5 else out[..., 0, 0]
        return out, {"x": torch.view_as_real(xs[:, -1]).to(work) if T else state["x"].to(work)}

    def resolve_impl(self, length: int) -> str:
        if self.impl != "auto":
            return self.impl
        return "recurrent" if length == 1 else "parallel"

    # -- pieces (used by the property tests) ------------------------------------------------------------------------
    def discrete(self, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """ZOH: ``(Λ̄ [P], B̄ [P, C, k_B, k_B])`` complex (complex128 for float64 ``dtype``, else complex64)."""
        real = self.Lambda_re.to(dtype)
        if self.clip_eigs:
            real = real.clamp(max=MAX_REAL)
        lam = torch.complex(real, self.Lambda_im.to(dtype))
        dt_lam = torch.exp(self.log_dt.to(dtype)) * lam
        lam_bar = torch.exp(dt_lam)
        B_bar = (torch.expm1(dt_lam) / lam)[:, None, None, None] * _as_complex(self.B, dtype)
        return lam_bar, B_bar

    def conv(self, frames: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        """'Same' 2-D convolution of ``frames [N, C_in, H, W]`` (zero or circular padding)."""
        r_h, r_w = weight.shape[-2] // 2, weight.shape[-1] // 2
        if self.padding == "circular":
            frames = F.pad(frames, (r_w, r_w, r_h, r_h), mode="circular")
            return F.conv2d(frames, weight, bias)
        return F.conv2d(frames, weight, bias, padding=(r_h, r_w))

    def ssm(self, u: Tensor, x0: Tensor, impl: str) -> tuple[Tensor, Tensor]:
        """``u [B, T, C, H, W]`` (work dtype) and ``x0 [B, P, H, W]`` (complex) → ``(Y [B, T, C, H, W],
        X [B, T, P, H, W])``."""
        batch, T, C, H, W = u.shape
        if T == 0:
            return u.new_zeros(u.shape), x0.new_zeros(batch, 0, self.P, H, W)
        lam_bar, B_bar = self.discrete(u.dtype)
        frames = u.reshape(batch * T, C, H, W)
        bu = self.conv(frames, torch.cat([B_bar.real, B_bar.imag], dim=0))              # [BT, 2P, H, W]
        bu = torch.complex(bu[:, :self.P], bu[:, self.P:]).view(batch, T, self.P, H, W)
        xs = _SCANS[impl](lam_bar, bu, x0)                                                # [B, T, P, H, W]
        C_tilde = _as_complex(self.C, u.dtype)
        # 2 Re(C̃ ∗ X) = conv([Re X, Im X], [2 Re C̃, −2 Im C̃])
        readout = torch.cat([2 * C_tilde.real, -2 * C_tilde.imag], dim=1)                  # [C, 2P, k, k]
        states = torch.cat([xs.real, xs.imag], dim=2).reshape(batch * T, 2 * self.P, H, W)
        y = self.conv(states, readout) + self.conv(frames, self.D.weight.to(u.dtype), self.D.bias.to(u.dtype))
        return ACTIVATIONS[self.activation](y).view(batch, T, C, H, W), xs

    def extra_repr(self) -> str:
        k = self.kernels
        return (f"d_model={self.d_model}, d_state={self.d_state}, kernels=B{k['B']}/C{k['C']}/D{k['D']}, "
                f"padding={self.padding!r}, impl={self.impl!r}, ssm_lr={self.ssm_lr}")


__all__ = ["ConvS5"]
