"""Linear time-invariant (LTI) state space models per channel: convolution kernels and the two modes.

Papers:

* "Combining Recurrent, Convolutional, and Continuous-time Models with Linear State-Space Layers" (LSSL),
  Gu et al., NeurIPS 2021, arXiv 2110.13985 — the convolutional view with a Krylov kernel (dense Ā).
* "Efficiently Modeling Long Sequences with Structured State Spaces" (S4), Gu, Goel, Ré, ICLR 2022,
  arXiv 2111.00396 — the DPLR kernel by the generating function at roots of unity, a Cauchy kernel and the
  Woodbury identity (Algorithm 1).
* "On the Parameterization and Initialization of Diagonal State Space Models" (S4D), Gu, Gupta, Goel, Ré,
  NeurIPS 2022, arXiv 2206.11893 — the Vandermonde kernel of a diagonal Ā.

Every channel h = 1 … H runs its own discrete system with a complex (or real) state x ∈ C^N:

    x_t = Ā x_{t−1} + B̄ u_t,        y_t = Re(C x_t)                       (D u_t is added by the mixer)

so that, from the state x_{−1} = x0 carried in from earlier calls,

    y_t  = Σ_{s ≤ t} K_{t−s} u_s + Re(C Ā^{t+1} x0),       K_l = Re(C Ā^l B̄)              (output)
    x_{L−1} = Ā^L x0 + Σ_{j<L} Ā^j B̄ u_{L−1−j}                                           (final state)

``y = Re(C x)`` covers real systems (LSSL) and complex ones: a real SSM diagonalised over C has conjugate pairs of
modes; passing one member of each pair with C doubled gives the same real output (2 Re(c x) = c x + c̄ x̄), which
is how S4D runs on N/2 modes; the DPLR form couples the pairs through its low-rank term, so S4 passes all N.

Forms (``impl``): ``"recurrent"`` is the equation above one step at a time (the reference); ``"conv"`` computes
the kernel K, the free response G_t = C Ā^{t+1} (applied to x0) and the final state in closed form and convolves
by FFT (:func:`fft_causal_conv`, linear convolution via zero padding to 2L). The closed forms per structure:

* diagonal Ā = diag(exp(log Ā)) (S4D): a Vandermonde matrix V_{n,l} = Ā_n^l = exp(l log Ā_n);
  K_l = Re Σ_n C_n B̄_n V_{n,l}; G_{t,n} = C_n Ā_n V_{n,t}; Σ_j Ā^j B̄ u_{L−1−j} = (B̄ ⊙ V) · reversed u.
* dense Ā (LSSL, S4 with ZOH): Krylov rows v Ā^j for j < L by doubling (:func:`power_rows`: log₂ L matrix
  squarings): B̄-rows of Āᵀ give Ā^j B̄, C Ā-rows of Ā give G.
* DPLR A = diag(Λ) − Pᵀ P̄ (rank r, bilinear Ā; S4). For ω^L = 1 the truncated generating function is

      K̂(ω) = Σ_{l<L} K_l ω^l = C̃ (I − ω Ā)⁻¹ B̄,     C̃ = C (I − Ā^L)

  and with Ā = (I − Δ/2 A)⁻¹(I + Δ/2 A), B̄ = (I − Δ/2 A)⁻¹ Δ B:

      (I − ωĀ)⁻¹ B̄ = M(ω)⁻¹ Δ B,     M(ω) = (1 − ω) I − (1 + ω) Δ/2 A = D(ω) + s(ω) Pᵀ P̄
      D(ω)_n = (1 − ω) − s(ω) Λ_n,    s(ω) = (1 + ω) Δ / 2

  M⁻¹ by the Woodbury identity, with the diagonal (Cauchy) resolvent R = D⁻¹:

      a M⁻¹ b = aRb − (a R Pᵀ) · s (I_r + s P̄ R Pᵀ)⁻¹ · (P̄ R b)

  Every ``x R y = Σ_n x_n y_n / ((1 − ω) − s Λ_n)`` is a Cauchy-matrix product: dividing numerator and
  denominator by s gives the paper's form 2/(1+ω) · Σ_n x_n y_n / (g(ω) − Λ_n), g(ω) = (2/Δ)(1 − ω)/(1 + ω);
  the form used here has no pole at ω = −1 (a root of unity for even L). K follows by an inverse FFT over the
  L roots ω_k = exp(−2πik/L). The same resolvent gives the state and free-response terms: the inverse FFT of
  M⁻¹ΔB is Y_j = (I − Ā^L)⁻¹ Ā^j B̄, so Σ_j Ā^j B̄ u_{L−1−j} = (I − Ā^L) Σ_j Y_j u_{L−1−j}
  = (I − Ā^L) (1/L) Σ_k M(ω_k)⁻¹ΔB · Ū_k with Ū_k = Σ_j u_{L−1−j} ω_k^{−j} (Parseval; Cauchy sums over the
  nodes); and Σ_t ω^t C Ā^{t+1} x0 = C̃ M(ω)⁻¹ (I + Δ/2 A) x0. Every Cauchy sum is a batched matrix product with
  the [L, N] resolvent matrix of each channel. Ā^L comes from repeated squaring of the dense Ā.

Shapes: u ``[B, T, H]`` real; Ā, B̄, C per channel (``[H, N]`` diagonal/vectors, ``[H, N, N]`` dense, ``P
[H, r, N]``); states ``[B, H, N]`` (complex for complex systems). All in one dtype, chosen by the caller
(float32/complex64, or float64/complex128 for float64 inputs); everything is differentiable by autograd.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..core.errors import SeqzooError

IMPLS = ("recurrent", "conv")


def check_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise SeqzooError(f"impl {impl!r} is not valid for an LTI state space model; valid: {', '.join(IMPLS)}")
    return impl


def _real(x: Tensor) -> Tensor:
    return x.real if x.is_complex() else x


def small_solve(A: Tensor, b: Tensor) -> Tensor:
    """``A⁻¹ b`` for batches of small systems ``A [..., r, r]``, ``b [..., r]``: a division for r = 1, Cramer's
    rule for r = 2 (no LAPACK call: batched complex solves are slow on a busy CPU), ``torch.linalg.solve`` above."""
    r = A.shape[-1]
    if r == 1:
        return b / A[..., 0]
    if r == 2:
        a, bb, c, d = A[..., 0, 0], A[..., 0, 1], A[..., 1, 0], A[..., 1, 1]
        det = a * d - bb * c
        return torch.stack([(d * b[..., 0] - bb * b[..., 1]) / det, (a * b[..., 1] - c * b[..., 0]) / det], dim=-1)
    return torch.linalg.solve(A, b[..., None])[..., 0]


# ---------------------------------------------------------------------------------------------- convolution
def fft_causal_conv(u: Tensor, K: Tensor) -> Tensor:
    """``y_t = Σ_{s ≤ t} K_{t−s} u_s`` for ``u [B, T, H]`` and ``K [H, T]`` (real), by FFT of length 2T."""
    T = u.shape[1]
    n = 2 * T
    spectrum = torch.fft.rfft(u.transpose(1, 2), n=n) * torch.fft.rfft(K, n=n)
    return torch.fft.irfft(spectrum, n=n)[..., :T].transpose(1, 2)


# ---------------------------------------------------------------------------------------------- diagonal Ā
# Powers x^l for l < L are never materialised as an [N, L] table of exponentials: with l = q·c + r (c ≈ √L),
# x^l = x^{qc} · x^r, so every contraction Σ_n w_n x_n^l (and Σ_l x_n^l v_l) becomes two small Vandermonde tables of
# √L columns each and one batched matrix product. That replaces N·L complex exponentials by 2·N·√L of them
# (exp is the expensive part: at N = 32, L = 4096 this form is several times faster on CPU), and each power is
# still the product of two directly exponentiated factors, never a long chain of multiplications.
def _block(L: int) -> int:
    return max(1, math.isqrt(max(L - 1, 0)) + 1)


def _power_factors(log_x: Tensor, L: int) -> tuple[Tensor, Tensor, int]:
    """``(high [..., N, Q], low [..., N, c], c)`` with ``high[.., q] = x^{qc}`` and ``low[.., r] = x^r``."""
    c = _block(L)
    Q = -(-L // c)
    real = log_x.real.dtype if log_x.is_complex() else log_x.dtype
    low = _exp(log_x[..., None] * torch.arange(c, device=log_x.device, dtype=real))
    high = _exp(log_x[..., None] * (torch.arange(Q, device=log_x.device, dtype=real) * c))
    return high, low, c


def _exp(z: Tensor) -> Tensor:
    """``exp(z)``; for complex ``z`` as ``e^{Re z}·(cos Im z + i sin Im z)`` from real vectorised kernels, which on
    CPU is several times faster than the complex ``exp`` (same values to rounding)."""
    if not z.is_complex():
        return torch.exp(z)
    magnitude = torch.exp(z.real)
    return torch.complex(magnitude * torch.cos(z.imag), magnitude * torch.sin(z.imag))


def vandermonde(log_x: Tensor, L: int) -> Tensor:
    """``V[..., n, l] = exp(l · log_x[..., n])`` for ``l < L``: the powers of a diagonal Ā as ``[..., N, L]``."""
    high, low, c = _power_factors(log_x, L)
    return (high[..., :, None] * low[..., None, :]).flatten(-2)[..., :L]


def power_sum(weights: Tensor, log_x: Tensor, L: int, factors=None) -> Tensor:
    """``S[..., l] = Σ_n weights[..., n] · x_n^l`` for ``l < L`` (``log_x [H, N]``, ``weights [..., H, N]``),
    as one batched matrix product of the two power factors; returns ``[..., H, L]`` (complex)."""
    high, low, c = factors if factors is not None else _power_factors(log_x, L)
    weighted = (weights[..., None] * high).transpose(-1, -2)          # [..., H, Q, N]
    return (weighted @ low).flatten(-2)[..., :L]                      # [..., H, Q, c] -> [..., H, L]


def diagonal_kernel(log_dA: Tensor, dB: Tensor, C: Tensor, L: int) -> Tensor:
    """Vandermonde kernel ``K_l = Re Σ_n C_n B̄_n Ā_n^l`` (``[H, L]``) of a diagonal system (S4D)."""
    return _real(power_sum(C * dB, log_dA, L))


def _diagonal_conv(u: Tensor, log_dA: Tensor, dB: Tensor, C: Tensor, x0: Tensor | None):
    Bsz, L, H = u.shape
    factors = _power_factors(log_dA, L)
    y = fft_causal_conv(u, _real(power_sum(C * dB, log_dA, L, factors)))
    # final state x_{L-1} = B̄ ⊙ Σ_j Ā^j u_{L-1-j}: with j = q·c + r, Σ_q Ā^{qc} Σ_r Ā^r u_rev[q·c + r]
    high, low, c = factors
    Q = high.shape[-1]
    u_rev = torch.nn.functional.pad(u.flip(1), (0, 0, 0, Q * c - L)).to(low.dtype)   # [B, Q·c, H]
    blocks = u_rev.view(Bsz, Q, c, H).permute(3, 2, 0, 1).reshape(H, c, Bsz * Q)      # [H, c, B·Q]
    inner = (low @ blocks).view(H, -1, Bsz, Q)                                         # [H, N, B, Q]
    xL = dB[None] * torch.einsum("hnbq,hnq->bhn", inner, high)
    if x0 is not None:
        y = y + _real(power_sum(C * torch.exp(log_dA) * x0, log_dA, L, factors)).transpose(1, 2)
        xL = xL + torch.exp(L * log_dA) * x0
    return y, xL


# ------------------------------------------------------------------------------------------------- dense Ā
def power_rows(v: Tensor, M: Tensor, L: int) -> Tensor:
    """Rows ``v M^j`` for ``j < L`` (``v [H, N]``, ``M [H, N, N]``) as ``[H, L, N]``, by doubling:
    the rows for ``j < 2m`` are those for ``j < m`` followed by the same rows times ``M^m``; then ``M^m`` is squared.
    ``log₂ L`` squarings; column Krylov vectors ``M^j v`` are ``power_rows(v, Mᵀ, L)``."""
    rows, power = v[:, None, :], M
    while rows.shape[1] < L:
        rows = torch.cat([rows, rows @ power], dim=1)
        if rows.shape[1] < L:
            power = power @ power
    return rows[:, :L]


def dense_kernel(dA: Tensor, dB: Tensor, C: Tensor, L: int) -> Tensor:
    """Krylov kernel ``K_l = Re(C Ā^l B̄)`` (``[H, L]``) of a dense system (LSSL)."""
    return _real(power_rows(dB, dA.transpose(-1, -2), L) @ C[..., None])[..., 0]


def _dense_conv(u: Tensor, dA: Tensor, dB: Tensor, C: Tensor, x0: Tensor | None):
    L = u.shape[1]
    krylov = power_rows(dB, dA.transpose(-1, -2), L)                         # Ā^j B̄: [H, L, N]
    y = fft_causal_conv(u, _real(krylov @ C[..., None])[..., 0])
    xL = torch.einsum("hjn,bjh->bhn", krylov, u.flip(1).to(krylov.dtype))
    if x0 is not None:
        rows = power_rows((C[:, None, :] @ dA)[:, 0], dA, L)                  # C Ā^{t+1}: [H, L, N]
        y = y + _real(torch.einsum("htn,bhn->bth", rows, x0))
        xL = xL + torch.einsum("hnm,bhm->bhn", torch.linalg.matrix_power(dA, L), x0)
    return y, xL


# -------------------------------------------------------------------------------------------------- DPLR A
def roots_of_unity(L: int, dtype: torch.dtype, device=None, half: bool = False) -> Tensor:
    """``ω_k = exp(−2πi k / L)`` for ``k < L`` (or ``k ≤ L/2`` when ``half``: the nodes of an rfft), in ``dtype``."""
    count = L // 2 + 1 if half else L
    angle = -2.0 * math.pi * torch.arange(count, dtype=torch.float64, device=device) / L
    return torch.polar(torch.ones_like(angle), angle).to(dtype)


class Resolvent:
    """The Cauchy resolvent ``R = D(ω)⁻¹`` of a bilinear DPLR system at the nodes ω, with the Woodbury solves.

    ``lam [H, N]``, ``P [H, r, N]``, ``dt [H]``, ``omega [W]``; ``R [H, W, N]``, ``s [H, W]``. Every Cauchy sum
    ``Σ_n R_{w,n} v_n`` over a batch of vectors is one batched matrix product ``R @ v``; the r×r capacitance
    matrices ``I + s P̄ R Pᵀ`` (``[H, W, r, r]``) are formed once.
    """

    def __init__(self, lam: Tensor, P: Tensor, dt: Tensor, omega: Tensor):
        H, r, N = P.shape
        self.P = P
        self.s = (1 + omega)[None, :] * (dt[:, None] / 2).to(omega.dtype)                  # [H, W]
        self.R = 1.0 / ((1 - omega)[None, :, None] - self.s[..., None] * lam[:, None, :])   # [H, W, N]
        pairs = (P.conj()[:, :, None, :] * P[:, None, :, :]).reshape(H, r * r, N)         # P̄_i ⊙ P_j
        cross = self.cauchy(pairs.transpose(1, 2)).reshape(H, -1, r, r)                   # P̄ R Pᵀ
        eye = torch.eye(r, dtype=P.dtype, device=P.device)
        self.capacitance = eye + self.s[..., None, None] * cross

    def cauchy(self, v: Tensor) -> Tensor:
        """Cauchy sums ``Σ_n R_{w,n} v_{n,m}`` for ``v [H, N, m]``: ``[H, W, m]``."""
        return self.R @ v

    def middle(self, rhs: Tensor) -> Tensor:
        """``s (I + s P̄ R Pᵀ)⁻¹ rhs`` for ``rhs [H, W, r, m]``."""
        cap = self.capacitance[..., None, :, :].expand(*rhs.shape[:2], rhs.shape[-1], *self.capacitance.shape[-2:])
        solved = small_solve(cap, rhs.transpose(-1, -2))                                    # [H, W, m, r]
        return self.s[..., None, None] * solved.transpose(-1, -2)

    def bilinear_form(self, a: Tensor, b: Tensor) -> Tensor:
        """``a M(ω)⁻¹ b_m`` for a row ``a [H, N]`` and columns ``b [H, N, m]``: ``[H, W, m]``
        (Woodbury: ``aRb − (a R Pᵀ) · s (I + s P̄ R Pᵀ)⁻¹ · (P̄ R b)``)."""
        H, r, N = self.P.shape
        m = b.shape[-1]
        aRb = self.cauchy(a[..., None] * b)                                                  # [H, W, m]
        aRP = self.cauchy((a[:, None, :] * self.P).transpose(1, 2))                         # [H, W, r]
        Pb = self.P.conj().transpose(1, 2)[..., None] * b[:, :, None, :]                    # [H, N, r, m]
        PRb = self.cauchy(Pb.reshape(H, N, r * m)).reshape(H, -1, r, m)                     # [H, W, r, m]
        return aRb - (aRP[..., None] * self.middle(PRb)).sum(-2)

    def solve_weighted_sum(self, b: Tensor, weights: Tensor) -> Tensor:
        """``Σ_w (M(ω_w)⁻¹ b) weights_{w,m}`` for ``b [H, N]`` and ``weights [H, W, m]``: ``[H, N, m]``
        (= ``b ⊙ (Rᵀ w) − Σ_i P_i ⊙ (Rᵀ (μ_i w))`` with ``μ = s (I + s P̄ R Pᵀ)⁻¹ P̄ R b``)."""
        H, r, N = self.P.shape
        mu = self.middle(self.cauchy((self.P.conj() * b[:, None, :]).transpose(1, 2))[..., None])[..., 0]  # [H, W, r]
        m = weights.shape[-1]
        stacked = torch.cat([weights, (mu[..., None] * weights[:, :, None, :]).reshape(H, -1, r * m)], dim=-1)
        sums = self.R.transpose(1, 2) @ stacked                                              # [H, N, (1 + r) m]
        low_rank = (self.P[..., None] * sums[..., m:].reshape(H, N, r, m).transpose(1, 2)).sum(1)
        return b[..., None] * sums[..., :m] - low_rank


def dplr_kernel(lam: Tensor, P: Tensor, B: Tensor, C: Tensor, dt: Tensor, L: int, dA_L: Tensor, *,
                conjugate_pairs: bool = False) -> Tensor:
    """S4's kernel ``K_l = Re(C Ā^l B̄)``, l < L (``[H, L]``), of the bilinear discretisation of
    ``A = diag(lam) − Pᵀ P̄``: ``K̂(ω) = C̃ M(ω)⁻¹ Δ B`` at the roots of unity (Cauchy + Woodbury), then an
    inverse FFT. ``dA_L [H, N, N]`` is ``Ā^L`` (for ``C̃ = C (I − Ā^L)``). With ``conjugate_pairs`` (the modes come
    in conjugate pairs, so C Ā^l B̄ is real) only the L/2 + 1 nodes of a real FFT are evaluated."""
    omega = roots_of_unity(L, lam.dtype, lam.device, half=conjugate_pairs)
    C_tilde = C - (C[:, None, :] @ dA_L)[:, 0]
    spectrum = Resolvent(lam, P, dt, omega).bilinear_form(C_tilde, (dt.to(B.dtype)[:, None] * B)[..., None])[..., 0]
    return torch.fft.irfft(spectrum, n=L) if conjugate_pairs else torch.fft.ifft(spectrum).real


def _dplr_conv(u: Tensor, lam: Tensor, P: Tensor, B: Tensor, C: Tensor, dt: Tensor, dA_L: Tensor,
               x0: Tensor | None):
    L = u.shape[1]
    res = Resolvent(lam, P, dt, roots_of_unity(L, lam.dtype, lam.device))
    C_tilde = C - (C[:, None, :] @ dA_L)[:, 0]
    dtB = dt.to(B.dtype)[:, None] * B
    y = fft_causal_conv(u, torch.fft.ifft(res.bilinear_form(C_tilde, dtB[..., None])[..., 0]).real)
    # Σ_j Ā^j B̄ u_{L−1−j} = (I − Ā^L) (1/L) Σ_k M(ω_k)⁻¹ΔB · Ū_k,   Ū_k = Σ_j u_{L−1−j} ω_k^{−j}
    u_hat = torch.fft.fft(u.flip(1).to(lam.dtype), dim=1).conj().permute(2, 1, 0)        # [H, L, B]
    z = res.solve_weighted_sum(dtB, u_hat) / L                                            # [H, N, B]
    eye = torch.eye(lam.shape[-1], dtype=lam.dtype, device=lam.device)
    xL = ((eye - dA_L) @ z).permute(2, 0, 1)
    if x0 is not None:
        # Σ_t ω^t C Ā^{t+1} x0 = C̃ M(ω)⁻¹ (I + Δ/2 A) x0
        xt = x0.permute(1, 2, 0)                                                          # [H, N, B]
        Ax = lam[..., None] * xt - P.transpose(1, 2) @ (P.conj() @ xt)
        free = torch.fft.ifft(res.bilinear_form(C_tilde, xt + (dt[:, None, None] / 2) * Ax), dim=1).real
        y = y + free.permute(2, 1, 0)
        xL = xL + torch.einsum("hnm,bhm->bhn", dA_L, x0)
    return y, xL


# ---------------------------------------------------------------------------------------------------- entry
def ssm_recurrent(u: Tensor, dA: Tensor, dB: Tensor, C: Tensor, x0: Tensor) -> tuple[Tensor, Tensor]:
    """Reference: ``x_t = Ā x_{t−1} + B̄ u_t``, ``y_t = Re(C x_t)`` step by step. ``dA`` is ``[H, N]`` (diagonal,
    the values of Ā, not their log) or ``[H, N, N]`` (dense); returns ``(y [B, T, H], x_{T−1} [B, H, N])``."""
    x, outputs = x0, []
    diagonal = dA.dim() == 2
    for t in range(u.shape[1]):
        drive = dB * u[:, t, :, None].to(dB.dtype)
        x = (dA * x if diagonal else torch.einsum("hnm,bhm->bhn", dA, x)) + drive
        outputs.append(_real((x * C).sum(-1)))
    if not outputs:
        return u.new_zeros(u.shape), x
    return torch.stack(outputs, dim=1), x


def ssm_conv(u: Tensor, x0: Tensor | None, *, kind: str, **system: Tensor) -> tuple[Tensor, Tensor]:
    """Convolution mode with closed-form free response and final state (module docstring).

    ``kind="diagonal"``: ``log_dA, dB, C [H, N]``; ``kind="dense"``: ``dA [H, N, N], dB, C [H, N]``;
    ``kind="dplr"``: ``lam, B, C [H, N], P [H, r, N], dt [H], dA_L [H, N, N]`` (bilinear discretisation).
    ``x0`` is the incoming state ``[B, H, N]``, or None for a zero state (then its terms are skipped).
    Returns ``(y [B, T, H], x_{T−1} [B, H, N])``.
    """
    if kind == "diagonal":
        y, xL = _diagonal_conv(u, system["log_dA"], system["dB"], system["C"], x0)
    elif kind == "dense":
        y, xL = _dense_conv(u, system["dA"], system["dB"], system["C"], x0)
    elif kind == "dplr":
        y, xL = _dplr_conv(u, system["lam"], system["P"], system["B"], system["C"], system["dt"], system["dA_L"],
                           x0)
    else:
        raise SeqzooError(f"unknown LTI system kind {kind!r}; valid: diagonal, dense, dplr")
    return y, xL


__all__ = ["IMPLS", "Resolvent", "check_impl", "small_solve", "dense_kernel", "diagonal_kernel", "dplr_kernel", "fft_causal_conv",
           "power_rows", "power_sum", "roots_of_unity", "ssm_conv", "ssm_recurrent", "vandermonde"]
