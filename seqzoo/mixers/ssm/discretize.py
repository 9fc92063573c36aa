"""Discretisation of a continuous linear state space model with step size Δ.

Continuous: ``x'(t) = A x(t) + B u(t)``. Discrete: ``x_k = Ā x_{k−1} + B̄ u_k`` (u held over the step).

Bilinear (Tustin / trapezoidal rule), used by LSSL (arXiv 2110.13985) and S4 (arXiv 2111.00396):

    Ā = (I − Δ/2 A)⁻¹ (I + Δ/2 A),      B̄ = (I − Δ/2 A)⁻¹ Δ B

Zero-order hold (exact for piecewise-constant u), used by S4D (arXiv 2206.11893) and Mamba:

    Ā = exp(Δ A),      B̄ = (∫_0^Δ exp(s A) ds) B  = A⁻¹ (exp(ΔA) − I) B  when A is invertible

For a dense A the ZOH integral is taken without inverting A, from one matrix exponential of the block matrix
``[[A, B], [0, 0]]·Δ``, whose top-right block is exactly B̄ (Van Loan, "Computing integrals involving the matrix
exponential", 1978). For a diagonal A (``lam [..., N]``) everything is elementwise; the diagonal forms return
``log Ā`` instead of Ā so that powers ``Ā^l = exp(l log Ā)`` can be formed directly (a Vandermonde matrix):
for ZOH ``log Ā = Δ λ`` exactly, for the bilinear rule ``log Ā = log((1 + Δλ/2) / (1 − Δλ/2))``.

Shapes: dense ``A [..., N, N]``, ``B [..., N]``; diagonal ``lam [..., N]``, ``B [..., N]``; ``dt`` broadcasts
against the leading dimensions ``[...]`` (one step per channel). Real or complex; differentiable.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...core.errors import SeqzooError

METHODS = ("bilinear", "zoh")


def check_method(method: str) -> str:
    if method not in METHODS:
        raise SeqzooError(f"unknown discretisation {method!r}; valid: {', '.join(METHODS)}")
    return method


def bilinear(A: Tensor, B: Tensor, dt: Tensor) -> tuple[Tensor, Tensor]:
    """Dense bilinear rule: ``(Ā [..., N, N], B̄ [..., N])``."""
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    half = (dt / 2)[..., None, None].to(A.dtype)
    left = eye - half * A
    Abar = torch.linalg.solve(left, eye + half * A)
    Bbar = torch.linalg.solve(left, (dt[..., None].to(B.dtype) * B)[..., None])[..., 0]
    return Abar, Bbar


def zoh(A: Tensor, B: Tensor, dt: Tensor) -> tuple[Tensor, Tensor]:
    """Dense zero-order hold via the block matrix exponential: ``(Ā [..., N, N], B̄ [..., N])``."""
    N = A.shape[-1]
    dtype = torch.promote_types(A.dtype, B.dtype)
    lead = torch.broadcast_shapes(A.shape[:-2], B.shape[:-1], dt.shape)
    block = torch.zeros(*lead, N + 1, N + 1, dtype=dtype, device=A.device)
    step = dt[..., None, None].to(dtype)
    block[..., :N, :N] = A * step
    block[..., :N, N] = B * step[..., 0]
    E = torch.linalg.matrix_exp(block)
    return E[..., :N, :N], E[..., :N, N]


def bilinear_dplr(lam: Tensor, P: Tensor, B: Tensor, dt: Tensor) -> tuple[Tensor, Tensor]:
    """Bilinear rule for ``A = diag(lam) − Pᵀ P̄`` (``lam, B [..., N]``, ``P [..., r, N]``) without an N×N solve:

        I − Δ/2 A = diag(d) + (Δ/2) Pᵀ P̄,   d = 1 − Δ/2 λ
        (I − Δ/2 A)⁻¹ = diag(1/d) − (Pᵀ/d) · (Δ/2) (I_r + (Δ/2) P̄ diag(1/d) Pᵀ)⁻¹ · (P̄/d)      (Woodbury)

    Returns the dense ``(Ā [..., N, N], B̄ [..., N])``; only r×r systems are solved (S4's "Woodbury form").
    """
    half = (dt / 2)[..., None].to(lam.dtype)                                  # [..., 1]
    inv_d = 1.0 / (1.0 - half * lam)                                           # [..., N]
    Pt = P.transpose(-1, -2) * inv_d[..., None]                                # Pᵀ/d: [..., N, r]
    Pc = P.conj() * inv_d[..., None, :]                                        # P̄/d: [..., r, N]
    eye_r = torch.eye(P.shape[-2], dtype=P.dtype, device=P.device)
    capacitance = eye_r + half[..., None] * (P.conj() @ Pt)                    # [..., r, r]
    middle = half[..., None] * torch.linalg.inv(capacitance) if P.shape[-2] > 2 else \
        half[..., None] * _small_inverse(capacitance)
    left_inv = torch.diag_embed(inv_d) - Pt @ middle @ Pc                      # (I − Δ/2 A)⁻¹
    A = torch.diag_embed(lam) - P.transpose(-1, -2) @ P.conj()
    eye = torch.eye(lam.shape[-1], dtype=lam.dtype, device=lam.device)
    Abar = left_inv @ (eye + half[..., None] * A)
    Bbar = (left_inv @ ((2 * half) * B)[..., None])[..., 0]
    return Abar, Bbar


def _small_inverse(M: Tensor) -> Tensor:
    """Inverse of 1×1 or 2×2 matrices in closed form."""
    if M.shape[-1] == 1:
        return 1.0 / M
    a, b, c, d = M[..., 0, 0], M[..., 0, 1], M[..., 1, 0], M[..., 1, 1]
    det = a * d - b * c
    return torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2) / det[..., None, None]


def dense(A: Tensor, B: Tensor, dt: Tensor, method: str) -> tuple[Tensor, Tensor]:
    """``(Ā, B̄)`` of a dense system by ``method`` ("bilinear" or "zoh")."""
    return bilinear(A, B, dt) if check_method(method) == "bilinear" else zoh(A, B, dt)


def diagonal(lam: Tensor, B: Tensor, dt: Tensor, method: str) -> tuple[Tensor, Tensor]:
    """Diagonal system ``A = diag(lam)``: ``(log Ā [..., N], B̄ [..., N])`` by ``method``.

    ``dt`` has the leading shape ``[...]`` (it is broadcast over the N modes).
    """
    step = dt[..., None].to(lam.dtype)
    dtA = step * lam
    if check_method(method) == "zoh":
        # B̄ = (exp(Δλ) − 1)/λ · B (needs λ ≠ 0: every diagonal init here has Re λ < 0)
        return dtA, torch.expm1(dtA) / lam * B
    return torch.log((1 + dtA / 2) / (1 - dtA / 2)), step * B / (1 - dtA / 2)


__all__ = ["METHODS", "bilinear", "bilinear_dplr", "check_method", "dense", "diagonal", "zoh"]
