"""SpaceTime: companion-matrix state-space layers with a closed-loop forecaster.

Paper: "Effectively Modeling Time Series with Simple Discrete State Spaces", Zhang, Saab, Poli, Dao, Goel & Ré,
ICLR 2023, arXiv 2303.09489.

Per channel (``D`` channels, each its own SSM of order ``N``), a discrete SSM whose state matrix is a companion
matrix — the down-shift ``S`` (ones on the subdiagonal) plus a learnable last column ``a``:

    A = S + a e_{N−1}ᵀ          (A s)_i = s_{i−1} + a_i s_{N−1}      (s_{−1} := 0)
    s_t = A s_{t−1} + b u_t,     y_t = cᵀ s_t + D u_t                 (D: a per-channel skip)

Its characteristic polynomial is ``z^N − Σ_i a_i z^i``, so ``a`` places the poles freely: the kernel
``K_j = cᵀ A^j b`` obeys the recursion ``K_{j+N} = Σ_i a_i K_{j+i}`` (Cayley–Hamilton), i.e. an AR(N) filter —
the reason the companion SSM expresses AR(p) processes that diagonal SSMs cannot (the paper's Proposition; with
``a`` holding the AR coefficients, ``b = e_0`` and ``c`` the first N impulse-response values, ``K`` *is* the AR
impulse response). ``a_norm="l1"`` divides ``a`` by its ℓ1 norm, the reference code's setting (then every pole
has |λ| ≤ 1); ``"clip"`` divides only when the norm exceeds 1; ``"none"`` leaves it free.

Open loop, parallel (``impl="fft"``). The kernel comes from the paper's truncated generating function evaluated
at T points ``z_m = r ω^m`` (ω = e^{−2πi/T}):

    Σ_{j<T} K_j z^j = cᵀ (I − z^T A^T)(I − zA)⁻¹ b,
    (I − zA)⁻¹ = M⁻¹ + z M⁻¹ a e_{N−1}ᵀ M⁻¹ / (1 − z e_{N−1}ᵀ M⁻¹ a),   M = I − zS   (Sherman–Morrison)

``M⁻¹ = Σ_m z^m S^m`` is a polynomial in z, so ``K̂(z)`` is a ratio of polynomials of degree < N, evaluated at
all T points with FFTs; an inverse FFT returns ``K_0 … K_{T−1}`` (:func:`companion_kernel`, the reference code's
``companion_krylov``): O((N + T) log T) per channel instead of O(N T) for explicit powers. The points lie on the
circle of radius ``r = 2^{−1/T}`` (coefficient j is recovered by dividing by r^j ≤ 2): on the unit circle
``1 − z e_{N−1}ᵀ M⁻¹ a = det(I − zA)`` vanishes when a pole sits on a root of unity, which ℓ1-normalised
non-negative ``a`` (pole at 1) or ``a = e_0`` (a cyclic shift) hit exactly.

Chunk invariance needs more than ``y = K ∗ u``: the free motion of an incoming state ``s_0`` and the final state.
The shift structure gives both without any N × T matrix. The last state entry ``w_t = (s_t)_{N−1}`` is one
scalar sequence, ``w = K^{last} ∗ u + e_{N−1}ᵀ A^t s_0`` (both by the same generating function,
:func:`last_component_free`), and ``s_t = S s_{t−1} + a w_{t−1} + b u_t`` unrolls to

    (s_t)_i = (s_0)_{i−t} [i ≥ t] + Σ_{m=0}^{min(i, t−1)} (a_{i−m} w_{t−1−m} + b_{i−m} u_{t−m})

so a readout ``rᵀ s_t`` is two causal filters of length N (taps ``Σ_i r_i a_{i−m}`` on w and ``Σ_i r_i b_{i−m}``
on u) plus a boundary term for t < N, and ``s_T`` needs only the last N values of w and u. Cost per call:
O(B D T log T + D N³ log T) (the N³ for A^T, used by the truncation). The generating-function parts run in
float64 and are cast to the state dtype (float32 for float32 and bf16 inputs). ``impl="recurrent"`` steps the
recurrence (O(N) per step via the shift structure) and is the reference.

Closed loop (the paper's decoder for long horizons): a learnable row ``k`` predicts the layer's next input from
its state, ``û_{t+1} = kᵀ s_t`` (trained against the real next inputs, :meth:`SpaceTime.next_inputs`). To
forecast, the layer consumes the context open loop, then feeds its own predictions back:

    s_{T+h} = A s_{T+h−1} + b û_{T+h} = (A + b kᵀ) s_{T+h−1},    y_{T+h} = cᵀ s_{T+h} + D û_{T+h}

so ``y_{T+h} = cᵀ (A + bkᵀ)^h s_T + D kᵀ (A + bkᵀ)^{h−1} s_T`` — its own closed-loop kernels
(:meth:`SpaceTime.forecast`; stepped by default, or the powers of A + bkᵀ by doubling). ``k`` starts at 0,
so an untrained closed loop is the (stable) open loop with zero input. The
reference code rolls the closed loop out from the first input of the window (inputs after the first are replaced
by predictions); here it starts from the state after the whole context, which is what a deployed forecaster sees.

Checked against the reference code (HazyResearch/spacetime): ``A[1:, :-1] = I`` plus the last column from ``a``
(``model/ssm/companion.py``); ℓ1 normalisation of ``a`` (``norm_a_order: 1`` in its configs); the
generating-function kernel with Sherman–Morrison (``model/functional/companion_krylov.py``); FFT convolution
with padding to 2L (the reference code convolves from a zero state only; the state handling above is ours); the
closed-loop layer with its extra ``k`` and ``A + BK`` (``model/ssm/closed_loop/``).
The state is ``{"s": [B, D, N]}`` (float32; float64 for float64 inputs).
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
from ..rnn.lmu import power_sequence

A_NORMS = ("l1", "clip", "none")


# -- functional companion-SSM math (float64 callers get float64 results) -----------------------------------------------
def companion_matrix(a: Tensor) -> Tensor:
    """Dense ``A = S + a e_{N−1}ᵀ`` for ``a [..., N]`` → ``[..., N, N]``."""
    n = a.shape[-1]
    shift = torch.diag(torch.ones(n - 1, dtype=a.dtype, device=a.device), -1)
    last = torch.zeros(n, dtype=a.dtype, device=a.device)
    last[-1] = 1.0
    return shift + a.unsqueeze(-1) * last


def companion_step(a: Tensor, s: Tensor) -> Tensor:
    """``A s`` in O(N): shift down, plus ``a`` times the last entry (``a [D, N]``, ``s [..., D, N]``)."""
    shifted = torch.cat([torch.zeros_like(s[..., :1]), s[..., :-1]], dim=-1)
    return shifted + a * s[..., -1:]


def krylov_explicit(a: Tensor, v: Tensor, length: int) -> Tensor:
    """Reference ``[v, A v, …, A^{length−1} v]`` as ``[..., N, length]`` by repeated companion steps."""
    out = [v]
    for _ in range(length - 1):
        out.append(companion_step(a, out[-1]))
    return torch.stack(out, dim=-1)


def _lower_toeplitz(v: Tensor) -> Tensor:
    """Coefficients of ``(M⁻¹ v)_i = Σ_m z^m v_{i−m}``: ``C[..., i, m] = v_{i−m}`` (m ≤ i), else 0."""
    n = v.shape[-1]
    i, m = torch.arange(n, device=v.device)[:, None], torch.arange(n, device=v.device)[None]
    return v[..., (i - m).clamp(min=0)] * (m <= i)


def _upper_hankel(c: Tensor) -> Tensor:
    """Coefficients of ``(cᵀ M⁻¹)_j = Σ_m z^m c_{j+m}``: ``R[..., j, m] = c_{j+m}`` (j + m < N), else 0."""
    n = c.shape[-1]
    j, m = torch.arange(n, device=c.device)[:, None], torch.arange(n, device=c.device)[None]
    return c[..., (j + m).clamp(max=n - 1)] * (j + m <= n - 1)


class _Points:
    """The evaluation points ``z_m = r ω^m`` (m < T) and polynomial evaluation there, in complex128."""

    def __init__(self, length: int, device=None):
        self.length, self.r = length, 2.0 ** (-1.0 / length)
        angle = -2 * math.pi * torch.arange(length, dtype=torch.float64, device=device) / length
        self.z = self.r * torch.polar(torch.ones_like(angle), angle)
        self.unscale = self.r ** -torch.arange(length, dtype=torch.float64, device=device)

    def evaluate(self, coef: Tensor) -> Tensor:
        """``Σ_m coef[..., m] z^m`` at every point → ``[..., T]`` (coefficients folded modulo T when N > T)."""
        n, length = coef.shape[-1], self.length
        scaled = coef * self.r ** torch.arange(n, dtype=torch.float64, device=coef.device)
        blocks = -(-n // length)
        scaled = F.pad(scaled, (0, blocks * length - n))
        scaled = scaled.reshape(*coef.shape[:-1], blocks, length).sum(-2)
        return torch.fft.fft(scaled.to(torch.complex128), dim=-1)

    def coefficients(self, values: Tensor) -> Tensor:
        """Inverse of :meth:`evaluate` for a truncated power series: its first T coefficients (real part)."""
        return torch.fft.ifft(values, dim=-1).real * self.unscale


def companion_kernel(a: Tensor, b: Tensor, c: Tensor, length: int, power: Tensor | None = None) -> Tensor:
    """The paper's fast kernel ``K_j = cᵀ A^j b`` (j < length) for ``a, b, c [..., N]`` → ``[..., length]``
    (``power`` = A^length if already computed):

    ``Σ_j K_j z^j = c̃ᵀ(I − zA)⁻¹ b = p_cb(z) + z p_ca(z) p_eb(z) / (1 − z p_ea(z))`` with
    ``c̃ = (I − z^T A^T)ᵀ c`` (z^T = r^T at every point) and the four polynomials ``p_xy(z) = xᵀ M⁻¹ y``.
    """
    pts = _Points(length, a.device)
    if power is None:
        power = torch.linalg.matrix_power(companion_matrix(a), length)
    c_t = c - pts.r ** length * torch.einsum("...ij,...i->...j", power, c)
    toe_b, toe_a = _lower_toeplitz(b), _lower_toeplitz(a)
    p_cb = pts.evaluate(torch.einsum("...im,...i->...m", toe_b, c_t))
    p_ca = pts.evaluate(torch.einsum("...im,...i->...m", toe_a, c_t))
    p_eb, p_ea = pts.evaluate(toe_b[..., -1, :]), pts.evaluate(toe_a[..., -1, :])
    return pts.coefficients(p_cb + pts.z * p_ca * p_eb / (1 - pts.z * p_ea))


def last_component_free(a: Tensor, v: Tensor, length: int, power: Tensor | None = None) -> Tensor:
    """``e_{N−1}ᵀ A^j v`` for j < length (the last state entry of the free motion from ``v``), for ``a [D, N]``
    and ``v [..., D, N]`` → ``[..., D, length]``: ``e_{N−1}ᵀ(I − zA)⁻¹ ṽ = p_eṽ(z) / (1 − z p_ea(z))`` with
    ``ṽ = v − r^T A^T v`` (Sherman–Morrison collapses to this ratio for the last row)."""
    pts = _Points(length, a.device)
    if power is None:
        power = torch.linalg.matrix_power(companion_matrix(a), length)
    v_t = v - pts.r ** length * torch.einsum("dij,...dj->...di", power, v)
    return pts.coefficients(pts.evaluate(v_t.flip(-1)) / (1 - pts.z * pts.evaluate(a.flip(-1))))


def fft_causal_conv(u: Tensor, kernel: Tensor) -> Tensor:
    """``y[b, t, d, r] = Σ_{j ≤ t} kernel[d, r, j] u[b, t − j, d]`` for ``u [B, T, D]``, ``kernel [D, R, T]``."""
    length = u.shape[1]
    u_f = torch.fft.rfft(u, n=2 * length, dim=1)                    # [B, F, D]
    k_f = torch.fft.rfft(kernel, n=2 * length, dim=-1)              # [D, R, F]
    y = torch.fft.irfft(u_f.unsqueeze(-1) * k_f.permute(2, 0, 1), n=2 * length, dim=1)
    return y[:, :length]


# -- the mixer ------------------------------------------------------------------------------------------------------
@register_mixer("spacetime", paper="Effectively Modeling Time Series with Simple Discrete State Spaces",
                arxiv="2303.09489")
class SpaceTime(Mixer):
    """SpaceTime companion SSM (Zhang et al., ICLR 2023, arXiv 2303.09489), one per channel:
    ``s_t = (S + a e_{N−1}ᵀ) s_{t−1} + b u_t``, ``y_t = cᵀ s_t + D u_t``; FFT (generating-function kernel) and
    recurrent forms agree; :meth:`forecast` runs the closed loop ``s ← (A + b kᵀ) s``.

    Options: ``d_state`` (N); ``a_norm`` ("l1" as in the paper's code, "clip", "none"); ``skip`` (the D u term);
    ``ssm_lr`` (learning rate of the dynamics ``a`` and ``k``; all SSM parameters get no weight decay);
    ``impl`` in ``IMPLS`` or ``"auto"`` (= fft).
    """

    IMPLS: tuple[str, ...] = ("recurrent", "fft")
    constant_state = True

    def __init__(self, d_model: int, d_state: int = 32, a_norm: str = "l1", skip: bool = True,
                 ssm_lr: float | None = 1e-3, impl: str = "auto"):
        super().__init__(d_model)
        if isinstance(d_state, bool) or not isinstance(d_state, int) or d_state < 1:
            raise SeqzooError(f"spacetime d_state must be a positive int, got {d_state!r}")
        if a_norm not in A_NORMS:
            raise SeqzooError(f"spacetime a_norm {a_norm!r} is not valid; valid: {', '.join(A_NORMS)}")
        if impl != "auto" and impl not in self.IMPLS:
            raise SeqzooError(f"impl {impl!r} is not valid for spacetime; valid: auto, {', '.join(self.IMPLS)}")
        self.d_state, self.a_norm, self.impl = d_state, a_norm, "fft" if impl == "auto" else impl
        scale = d_state ** -0.5
        self.a = nn.Parameter(torch.randn(d_model, d_state))
        self.b = nn.Parameter(torch.randn(d_model, d_state))
        self.c = nn.Parameter(scale * torch.randn(d_model, d_state))
        self.k = nn.Parameter(torch.zeros(d_model, d_state))  # closed loop starts as the (stable) open loop
        self.skip = nn.Parameter(torch.ones(d_model)) if skip else None
        for p in (self.a, self.k):
            set_optim(p, weight_decay=0.0, lr=ssm_lr)
        for p in (self.b, self.c):
            set_optim(p, weight_decay=0.0)

    # -- parameters in the working dtype ----------------------------------------------------------------------------
    def last_column(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """The (normalised) last column ``a`` of A, ``[D, N]``."""
        a = self.a.to(dtype)
        if self.a_norm == "none":
            return a
        norm = a.abs().sum(-1, keepdim=True).clamp_min(1e-12)
        return a / norm if self.a_norm == "l1" else a / norm.clamp_min(1.0)

    def kernel(self, length: int) -> Tensor:
        """``K_j = cᵀ A^j b`` for j < length, ``[D, length]`` (float64, by :func:`companion_kernel`)."""
        return companion_kernel(self.last_column(), self.b.double(), self.c.double(), length)

    # -- open loop --------------------------------------------------------------------------------------------------
    def _run(self, u: Tensor, s0: Tensor, rows: Tensor, impl: str) -> tuple[Tensor, Tensor]:
        """Readouts ``rowsᵀ s_t`` (``rows [D, R, N]``) for t = 1 … T of the inputs ``u [B, T, D]`` from state
        ``s0 [B, D, N]``: ``([B, T, D, R], s_T)``, all in the dtype of ``u``."""
        work = u.dtype
        if impl == "recurrent":
            a, b, rows = self.last_column(work), self.b.to(work), rows.to(work)
            s, out = s0, []
            for t in range(u.shape[1]):
                s = companion_step(a, s) + b * u[:, t, :, None]
                out.append(torch.einsum("bdn,drn->bdr", s, rows))
            return torch.stack(out, dim=1), s
        return self._run_fft(u, s0, rows)

    def _run_fft(self, u: Tensor, s0: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        """The parallel form through the companion structure (see the module docstring): the last state entry
        ``w_t`` is one scalar sequence (kernel ``e_{N−1}ᵀA^j b`` plus the free motion of ``s0``), and since
        ``s_t = S s_{t−1} + a w_{t−1} + b u_t`` unrolls to ``(s_t)_i = (s_0)_{i−t} + Σ_{m ≤ min(i, t−1)}
        (a_{i−m} w_{t−1−m} + b_{i−m} u_{t−m})``, every readout is two length-N filters of ``w`` and ``u``
        (plus a boundary term for t < N) and ``s_T`` needs only the last N values of both."""
        length, n, work = u.shape[1], self.d_state, u.dtype
        a, b, rows = self.last_column(), self.b.double(), rows.double()
        power = torch.linalg.matrix_power(companion_matrix(a), length)                  # A^T, [D, N, N]
        last = torch.zeros(n, dtype=torch.float64, device=u.device)
        last[-1] = 1.0
        k_last = companion_kernel(a, b, last.expand_as(b), length, power)                # e_{N−1}ᵀ A^j b
        w = fft_causal_conv(u, k_last.unsqueeze(1).to(work))[..., 0]                     # w_1 … w_T
        s0_live = s0.requires_grad or bool((s0 != 0).any())
        if s0_live:  # + e_{N−1}ᵀ A^t s0 = e_{N−1}ᵀ A^{t−1} (A s0), t = 1 … T
            free = last_component_free(a, companion_step(a, s0.double()), length, power)
            w = w + free.transpose(1, 2).to(work)
        w = torch.cat([s0[:, None, :, -1].to(work), w], dim=1)                         # w_0 … w_T
        hankel = _upper_hankel(rows)                                                    # [D, R, N, N]
        q_a = torch.einsum("drjm,dj->drm", hankel, a)                                   # Σ_i r_i a_{i−m}
        q_b = torch.einsum("drjm,dj->drm", hankel, b)                                   # Σ_i r_i b_{i−m}
        pad = (0, max(0, length - n))
        y = (fft_causal_conv(u, F.pad(q_b, pad)[..., :length].to(work))
             + fft_causal_conv(w[:, :-1], F.pad(q_a, pad)[..., :length].to(work)))
        edge = min(length, n)
        w_rev = w.flip(1)[:, 1:edge + 1].transpose(1, 2)                               # w_{T−1−m}, m < edge
        u_rev = u.flip(1)[:, :edge].transpose(1, 2)                                    # u_{T−m},   m < edge
        s_last = (torch.einsum("dim,bdm->bdi", _lower_toeplitz(a).to(work)[..., :edge], w_rev)
                  + torch.einsum("dim,bdm->bdi", _lower_toeplitz(b).to(work)[..., :edge], u_rev))
        if s0_live:
            near = min(length, n - 1)                                          # t = 1 … near see S^t s0 directly
            if near > 0:
                boundary = torch.einsum("drjm,bdm->bjdr", hankel.to(work)[:, :, 1:near + 1], s0)
                y = torch.cat([y[:, :near] + boundary, y[:, near:]], dim=1)  # Σ_{i ≥ t} r_i (s0)_{i−t}
            if length < n:
                s_last = s_last + F.pad(s0[..., :n - length], (length, 0))
        return y, s_last

    def _inputs(self, x: Tensor, state: State) -> tuple[Tensor, Tensor]:
        if "s" not in state:
            raise SeqzooError("spacetime state lacks 's'; expected keys: s (use init_state or a returned state)")
        work = state_dtype(x.dtype)
        return x.to(work), state["s"].to(work)

    def _mix(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        u, s0 = self._inputs(x, state)
        out, s_last = self._run(u, s0, self.c.unsqueeze(1), self.impl)
        y = out[..., 0]
        if self.skip is not None:
            y = y + self.skip.to(u.dtype) * u
        return y.to(x.dtype), {"s": s_last}

    def next_inputs(self, x: Tensor, state: State | None = None) -> tuple[Tensor, Tensor, State]:
        """Open loop with the closed-loop readout too: ``(y, û, state)`` where ``û_t = kᵀ s_t`` is the layer's
        prediction of its next input ``x_{t+1}`` (the closed-loop training target)."""
        self.check_input(x)
        state = state if state is not None else self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
        u, s0 = self._inputs(x, state)
        out, s_last = self._run(u, s0, torch.stack([self.c, self.k], dim=1), self.impl)
        y = out[..., 0] + (self.skip.to(u.dtype) * u if self.skip is not None else 0)
        return y.to(x.dtype), out[..., 1].to(x.dtype), {"s": s_last}

    # -- closed loop ------------------------------------------------------------------------------------------------
    def closed_loop(self, state: State, horizon: int, impl: str = "recurrent") -> tuple[Tensor, Tensor, State]:
        """Roll the closed loop ``horizon`` steps from ``state``: ``(y [B, H, D], û [B, H, D], state)``.
        ``impl="recurrent"`` steps it (O(N) per step: a companion step plus a rank-one term); ``"fft"`` builds
        the powers ``(A + bkᵀ)^h s`` by doubling (dense N×N products, the kernel form)."""
        if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
            raise SeqzooError(f"forecast horizon must be a positive int, got {horizon!r}")
        s = state["s"]
        work = s.dtype
        a, b, c, k = self.last_column(work), self.b.to(work), self.c.to(work), self.k.to(work)
        skip = self.skip.to(work) if self.skip is not None else torch.zeros_like(c[:, 0])
        if impl not in self.IMPLS:
            raise SeqzooError(f"impl {impl!r} is not valid for closed_loop; valid: {', '.join(self.IMPLS)}")
        if impl == "recurrent":
            ys, us = [], []
            for _ in range(horizon):
                u_hat = (s * k).sum(-1)
                s = companion_step(a, s) + b * u_hat[..., None]
                ys.append((s * c).sum(-1) + skip * u_hat)
                us.append(u_hat)
            return torch.stack(ys, 1), torch.stack(us, 1), {"s": s}
        closed = companion_matrix(a) + b.unsqueeze(-1) * k.unsqueeze(-2)               # A + b kᵀ [D, N, N]
        seq = power_sequence(closed, s, horizon + 1)                                     # [B, D, H+1, N]
        u_hat = torch.einsum("bdhn,dn->bhd", seq[:, :, :-1], k)
        y = torch.einsum("bdhn,dn->bhd", seq[:, :, 1:], c) + skip * u_hat
        return y, u_hat, {"s": seq[:, :, -1]}

    def forecast(self, x_context: Tensor, horizon: int, state: State | None = None) -> Tensor:
        """Consume ``x_context [B, T, D]`` open loop, then forecast ``horizon`` outputs closed loop (each step's
        input is the layer's own prediction ``kᵀ s``). Returns ``[B, horizon, D]`` in the dtype of the context."""
        _, state = self(x_context, state)
        y, _, _ = self.closed_loop(state, horizon)
        return y.to(x_context.dtype)

    # -- contract -------------------------------------------------------------------------------------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None) -> State:
        dtype = state_dtype(dtype if dtype is not None else torch.get_default_dtype())
        return {"s": torch.zeros(batch_size, self.d_model, self.d_state, device=device, dtype=dtype)}

    def state_size(self, seq_len: int) -> int:
        return self.d_model * self.d_state

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_state={self.d_state}, a_norm={self.a_norm!r}, "
                f"skip={self.skip is not None}, impl={self.impl!r}")


__all__ = ["SpaceTime", "companion_matrix", "companion_step", "companion_kernel", "last_component_free",
           "krylov_explicit", "fft_causal_conv"]
