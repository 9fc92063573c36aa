"""HiPPO matrices and their normal-plus-low-rank (NPLR / DPLR) form.

Papers:

* "HiPPO: Recurrent Memory with Optimal Polynomial Projections", Gu, Dao, Ermon, Rudra, Ré, NeurIPS 2020,
  arXiv 2008.07669 — the LegS and LegT matrices.
* "Efficiently Modeling Long Sequences with Structured State Spaces" (S4), Gu, Goel, Ré, ICLR 2022,
  arXiv 2111.00396 — the NPLR decomposition used to initialise S4.

Conventions: the continuous system is ``x'(t) = A x(t) + B u(t)`` (A already carries the minus sign, so it is
stable), indices ``n, k = 0 … N−1``, ``r_n = √(2n+1)``.

HiPPO-LegS (scaled Legendre measure on [0, t]):

    A_nk = −r_n r_k  (n > k),   −(n+1)  (n = k),   0  (n < k);        B_n = r_n

  With the time-varying form ``c'(t) = (1/t) A c(t) + (1/t) B u(t)``, ``c(t)`` holds the coefficients of the
  projection of ``u`` on [0, t] onto ``r_n P_n(2s/t − 1)`` (P_n: Legendre polynomials), so
  ``u(s) ≈ Σ_n c_n(t) r_n P_n(2s/t − 1)`` (:func:`legendre_reconstruct`). In log-time τ = log t the system is
  time-invariant: ``dc/dτ = A c + B u(e^τ)``.

HiPPO-LegT (translated Legendre measure on the window [t − θ, t]):

    A_nk = −(1/θ) r_n r_k · (1 if n ≥ k else (−1)^{n−k}),               B_n = (1/θ) r_n

  and ``u(t − θ + θ s) ≈ Σ_n c_n(t) r_n P_n(2s − 1)`` for s ∈ [0, 1] (the state keeps the last θ time units).

NPLR / DPLR form (S4). For a low-rank ``P ∈ R^{r×N}`` the matrix ``S = A + Pᵀ P`` is normal:

    LegS:  P = [√(n + ½)]                       (rank 1):  S = −½ I + (skew-symmetric)
    LegT:  P = (1/√θ) [r_n · [n odd]; r_n · [n even]]   (rank 2):  S = skew-symmetric

  (derivation: A + Aᵀ = −(Σ_r P_rᵀ P_r)·2 exactly, entry by entry, so S has a constant diagonal and a
  skew-symmetric rest.) A real normal matrix ``S = s_0 I + K`` with K skew is unitarily diagonalised through the
  Hermitian matrix ``−iK = V diag(μ) V*``: ``S = V (s_0 + iμ) V*``. Hence

    A = V (Λ − P̃ P̃*) V*,     Λ = s_0 + iμ,   P̃ = V* Pᵀ,   B̃ = V* B

  a diagonal-plus-low-rank matrix in the unitary basis V. Because A is real, the eigenvalues come in conjugate
  pairs (λ, λ̄) whose eigenvectors, P̃ and B̃ entries are conjugate too: :func:`nplr` returns only the half with
  Im λ > 0, and :func:`conj_pairs` appends the other half.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ...core.errors import SeqzooError

MEASURES = ("legs", "legt")


def _check_size(N: int) -> None:
    if isinstance(N, bool) or not isinstance(N, int) or N < 1:
        raise SeqzooError(f"HiPPO state size N must be a positive int, got {N!r}")


def legs(N: int, dtype=torch.float64) -> tuple[Tensor, Tensor]:
    """HiPPO-LegS ``(A [N, N], B [N])`` (see the module docstring)."""
    _check_size(N)
    r = torch.sqrt(2.0 * torch.arange(N, dtype=torch.float64) + 1.0)
    A = -torch.tril(r[:, None] * r[None, :], diagonal=-1) - torch.diag(torch.arange(N, dtype=torch.float64) + 1.0)
    return A.to(dtype), r.to(dtype)


def legt(N: int, theta: float = 1.0, dtype=torch.float64) -> tuple[Tensor, Tensor]:
    """HiPPO-LegT ``(A [N, N], B [N])`` for a window of length ``theta`` (see the module docstring)."""
    _check_size(N)
    if not theta > 0:
        raise SeqzooError(f"LegT window theta must be > 0, got {theta!r}")
    n = torch.arange(N, dtype=torch.float64)
    r = torch.sqrt(2.0 * n + 1.0)
    diff = n[:, None] - n[None, :]
    sign = torch.where(diff >= 0, torch.ones_like(diff), (-1.0) ** diff.abs())
    A = -(r[:, None] * r[None, :]) * sign / theta
    return A.to(dtype), (r / theta).to(dtype)


def transition(measure: str, N: int, dtype=torch.float64) -> tuple[Tensor, Tensor]:
    """``(A, B)`` of the HiPPO ``measure`` ("legs" or "legt" with θ = 1)."""
    if measure == "legs":
        return legs(N, dtype)
    if measure == "legt":
        return legt(N, dtype=dtype)
    raise SeqzooError(f"unknown HiPPO measure {measure!r}; valid: {', '.join(MEASURES)}")


def low_rank_correction(measure: str, N: int, dtype=torch.float64) -> Tensor:
    """``P [r, N]`` such that ``A + Pᵀ P`` is normal (rank 1 for LegS, 2 for LegT with θ = 1)."""
    _check_size(N)
    n = torch.arange(N, dtype=torch.float64)
    if measure == "legs":
        return torch.sqrt(n + 0.5)[None].to(dtype)
    if measure == "legt":
        r = torch.sqrt(2.0 * n + 1.0)
        odd = (n % 2 == 1).to(torch.float64)
        return torch.stack([r * odd, r * (1.0 - odd)]).to(dtype)
    raise SeqzooError(f"unknown HiPPO measure {measure!r}; valid: {', '.join(MEASURES)}")


@dataclass
class NPLR:
    """Half of the conjugate-paired DPLR form of a real HiPPO matrix (see :func:`nplr`).

    ``lam [N/2]`` (Im > 0), ``P [r, N/2]``, ``B [N/2]`` (complex128) and ``V [N, N/2]`` (the matching unit
    eigenvectors). With ``·_full = conj_pairs(·)``: ``A = V_full (diag(lam_full) − P_fullᵀ conj(P_full)) V_full*``
    and ``B = V_full B_full``.
    """

    lam: Tensor
    P: Tensor
    B: Tensor
    V: Tensor


def conj_pairs(x: Tensor) -> Tensor:
    """Append the complex conjugate of the last dimension: ``[..., M] → [..., 2M]``."""
    return torch.cat([x, x.conj()], dim=-1)


def nplr(measure: str, N: int) -> NPLR:
    """The NPLR form of HiPPO ``measure`` for an even state size ``N`` (module docstring; computed in float64).

    Returns one member of every conjugate pair; the eigenvalues are sorted by their imaginary part.
    """
    if isinstance(N, bool) or not isinstance(N, int) or N < 2 or N % 2:
        raise SeqzooError(f"the NPLR form pairs conjugate eigenvalues, so N must be an even int >= 2, got {N!r}")
    A, B = transition(measure, N)
    P = low_rank_correction(measure, N)
    S = A + P.T @ P
    s0 = torch.diagonal(S).mean()
    K = S - s0 * torch.eye(N, dtype=torch.float64)
    # S is normal: constant diagonal plus a skew-symmetric part (checked, not assumed)
    if (K + K.T).abs().max() > 1e-9 * max(1.0, K.abs().max().item()):
        raise SeqzooError(f"HiPPO-{measure}: A + PᵀP is not a constant diagonal plus a skew-symmetric matrix")
    mu, V = torch.linalg.eigh(-1j * K.to(torch.complex128))
    if mu.abs().min() < 1e-8:
        raise SeqzooError(f"HiPPO-{measure} N={N}: the skew part has a zero eigenvalue, no conjugate pairing")
    order = torch.argsort(mu, descending=True)[: N // 2]          # the half with Im λ > 0
    V = V[:, order]
    lam = s0.to(torch.complex128) + 1j * mu[order].to(torch.complex128)
    P_modal = P.to(torch.complex128) @ V.conj()                     # P̃ᵀ = P V̄ (rows: rank components)
    B_modal = V.conj().T @ B.to(torch.complex128)
    return NPLR(lam=lam, P=P_modal, B=B_modal, V=V)


def dplr_dense(lam: Tensor, P: Tensor) -> Tensor:
    """The dense DPLR matrix ``diag(lam) − Pᵀ conj(P)`` for ``lam [..., N]`` and ``P [..., r, N]``."""
    return torch.diag_embed(lam) - P.transpose(-1, -2) @ P.conj()


def legendre(n_max: int, x: Tensor) -> Tensor:
    """Legendre polynomials ``P_0 … P_{n_max−1}`` at ``x`` (Bonnet's recurrence): ``[n_max, *x.shape]``."""
    values = [torch.ones_like(x), x]
    for n in range(1, n_max - 1):
        values.append(((2 * n + 1) * x * values[n] - n * values[n - 1]) / (n + 1))
    return torch.stack(values[:n_max])


def legendre_reconstruct(coeffs: Tensor, s: Tensor) -> Tensor:
    """``Σ_n c_n √(2n+1) P_n(2s − 1)`` for ``coeffs [..., N]`` at relative positions ``s ∈ [0, 1]``: ``[..., S]``.

    For LegS at time t, ``s = (time) / t``; for LegT, ``s`` runs over the window [t − θ, t] as (time − t + θ) / θ.
    """
    N = coeffs.shape[-1]
    basis = legendre(N, 2.0 * s.to(coeffs.dtype) - 1.0)            # [N, S]
    scale = torch.sqrt(2.0 * torch.arange(N, dtype=coeffs.dtype) + 1.0)
    return (coeffs * scale) @ basis


__all__ = ["MEASURES", "NPLR", "conj_pairs", "dplr_dense", "legendre", "legendre_reconstruct", "legs", "legt",
           "low_rank_correction", "nplr", "transition"]

