"""S4: the structured state space layer with a diagonal-plus-low-rank (DPLR) state matrix.

Paper: "Efficiently Modeling Long Sequences with Structured State Spaces", Gu, Goel, Ré, ICLR 2022,
arXiv 2111.00396.

Per channel h (H = d_model channels), in the unitary basis where HiPPO's A is diagonal plus low rank
(:func:`seqzoo.mixers.ssm.hippo.nplr`; N modes, stored as N/2 conjugate-pair representatives):

    A = diag(Λ) − Pᵀ P̄    (Λ ∈ C^N with Re Λ = −exp(a) < 0, P ∈ C^{r×N}; Hermitian part ≤ Re Λ < 0: stable)
    x' = A x + B u,   y = Re(C x) + D u,     Δ = exp(log Δ_h)  (trainable)
    bilinear (default):  Ā = (I − Δ/2 A)⁻¹ (I + Δ/2 A),   B̄ = (I − Δ/2 A)⁻¹ Δ B
    zoh (option):        Ā = exp(ΔA),   B̄ = ∫_0^Δ exp(sA) ds B

Two modes (``impl``):

* ``"recurrent"`` (the reference): x_t = Ā x_{t−1} + B̄ u_t, y_t = Re(C x_t) + D u_t. For the bilinear rule one
  step costs O(N r) per channel, never a dense N×N product, through the DPLR structure (the paper's "Woodbury
  form" of the recurrence, its Appendix C.2):

      x_t = (I − Δ/2 A)⁻¹ [(I + Δ/2 A) x_{t−1} + Δ B u_t]
      (I + Δ/2 A) x = x + Δ/2 (Λ ⊙ x − Pᵀ (P̄ x))
      (I − Δ/2 A)⁻¹ w = g − (Pᵀ/d) · m (P̄ g),   d = 1 − Δ/2 Λ,  g = w/d,  m = Δ/2 (I_r + Δ/2 P̄ diag(1/d) Pᵀ)⁻¹

  and it runs on the N/2 stored modes only: the full state is conjugate-symmetric (x_{n+N/2} = x̄_n, as are Λ, P,
  B, C), so every sum over the N modes is twice the real part of the sum over the stored half, e.g.
  P̄ x = 2 Re Σ_{n<N/2} P̄_n x_n (real, r numbers) and y = 2 Re Σ_{n<N/2} C_n x_n. With ``discretization="zoh"``
  (exp(ΔA) has no DPLR form) the step is the dense N×N product.
* ``"conv"``: y = K ∗ u + D u by FFT, with the kernel K_l = Re(C Ā^l B̄) computed, for the bilinear rule, by the
  paper's algorithm: the generating function K̂(ω) = C̃ (I − ωĀ)⁻¹ B̄, C̃ = C (I − Ā^L), at the roots of unity,
  the Woodbury identity to reduce the DPLR resolvent to diagonal (Cauchy) ones, and an inverse FFT
  (:class:`seqzoo.ops.ssm_kernel.Resolvent`); Ā^L by repeated squaring. Because the system is real (conjugate
  pairs), K̂ is Hermitian and only the L/2 + 1 nodes of a real FFT are evaluated. The free response
  Re(C Ā^{t+1} x0) of the incoming state and the final state x_{L−1} = Ā^L x0 + Σ_j Ā^j B̄ u_{L−1−j} come from
  the same resolvent in closed form (:mod:`seqzoo.ops.ssm_kernel`), also on the half nodes: with
  Ū_k = Σ_j u_{L−1−j} ω_k^{−j}, the node terms T_k = M(ω_k)⁻¹ΔB Ū_k satisfy T_{L−k} = S T̄_k (S swaps the two
  halves of the conjugate pairs), so Σ_k T_k = Y + S Ȳ with Y the sum over k ≤ L/2 in which k = 0 and k = L/2
  count one half. Any split of a sequence equals one call. With ``discretization="zoh"`` there is no Cauchy form,
  and the kernel is the Krylov sequence of the dense Ā (as in LSSL).

Then GELU and a position-wise linear map to 2H with a GLU (the output of the S4 block in the authors' standalone
code). Parameters: Λ (two real parts), P, B, log Δ (no weight decay, learning rate ``ssm_lr``), C (complex
normal, E|C|² = 1), D ~ N(0, 1). Initialisation ``measure``: HiPPO-LegS (default, rank 1) or LegT (rank 2), the
same (Λ, P, B) in every channel; Δ log-uniform in [dt_min, dt_max] = [1e-3, 1e-1].

The state holds N/2 complex modes per channel (one of each conjugate pair; a real system of size N).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...core.errors import SeqzooError
from ...core.registry import register_mixer
from ...ops.ssm_kernel import Resolvent, fft_causal_conv, roots_of_unity, ssm_conv, ssm_recurrent
from . import discretize
from ._lti_layer import LTILayer, as_complex, complex_param
from .hippo import MEASURES, conj_pairs, dplr_dense, nplr

MIN_DECAY = 1e-4  # −Re Λ is initialised at least this large (LegT's normal part has Re Λ = 0)


@register_mixer("s4", paper="Efficiently Modeling Long Sequences with Structured State Spaces", arxiv="2111.00396")
class S4(LTILayer):
    """S4 (Gu, Goel, Ré, ICLR 2022, arXiv 2111.00396): a DPLR state space model per channel, HiPPO-initialised,
    with a Cauchy/Woodbury convolution kernel and a recurrent step mode; GELU and a GLU output projection.

    Options: ``d_state`` N (even); ``measure`` "legs" or "legt"; ``discretization`` "bilinear" or "zoh"; ``impl``
    "auto" (recurrent for one token, conv otherwise), "recurrent" or "conv"; ``dt_min``, ``dt_max``; ``ssm_lr``.
    """

    def __init__(self, d_model: int, d_state: int = 64, measure: str = "legs", discretization: str = "bilinear",
                 impl: str = "auto", dt_min: float = 1e-3, dt_max: float = 1e-1, ssm_lr: float | None = 1e-3):
        super().__init__(d_model, d_state=d_state, impl=impl, dt_min=dt_min, dt_max=dt_max, ssm_lr=ssm_lr,
                         name="s4")
        if measure not in MEASURES:
            raise SeqzooError(f"unknown S4 measure {measure!r}; valid: {', '.join(MEASURES)}")
        self.measure, self.discretization = measure, discretize.check_method(discretization)
        form = nplr(measure, d_state)
        H = d_model
        self.log_neg_re = self.ssm_param(torch.log((-form.lam.real).clamp_min(MIN_DECAY)).expand(H, -1).clone())
        self.im = self.ssm_param(form.lam.imag.expand(H, -1).clone())
        self.P = self.ssm_param(complex_param(form.P.expand(H, -1, -1)))
        self.B = self.ssm_param(complex_param(form.B.expand(H, -1)))
        self.C = complex_param(torch.randn(H, d_state // 2, dtype=torch.complex128))

    @property
    def rank(self) -> int:
        return self.P.shape[1]

    def dplr(self, dtype: torch.dtype) -> dict[str, Tensor]:
        """The full (conjugate-paired) DPLR parameters in the complex dtype of ``dtype``: ``lam, B, C [H, N]``,
        ``P [H, r, N]``, ``dt [H]`` (real) and the dense ``A [H, N, N]``."""
        lam = conj_pairs(torch.complex(-torch.exp(self.log_neg_re.to(dtype)), self.im.to(dtype)))
        P = conj_pairs(as_complex(self.P, dtype))
        return {"lam": lam, "P": P, "B": conj_pairs(as_complex(self.B, dtype)),
                "C": conj_pairs(as_complex(self.C, dtype)), "dt": self.step_sizes(dtype), "A": dplr_dense(lam, P)}

    def discrete(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """``(Ā [H, N, N], B̄ [H, N], dplr parameters)`` (dense discretisation by the chosen rule)."""
        p = self.dplr(dtype)
        if self.discretization == "bilinear":
            dA, dB = discretize.bilinear_dplr(p["lam"], p["P"], p["B"], p["dt"])
        else:
            dA, dB = discretize.zoh(p["A"], p["B"], p["dt"])
        return dA, dB, p

    def run_ssm(self, u: Tensor, x0: Tensor, impl: str) -> tuple[Tensor, Tensor]:
        half = self.d_state // 2
        if self.discretization == "bilinear" and impl == "recurrent":
            return self.dplr_recurrence(u, x0)
        dA, dB, p = self.discrete(u.dtype)
        x0 = conj_pairs(x0)
        if impl == "recurrent":
            y, xL = ssm_recurrent(u, dA, dB, p["C"], x0)
            return y, xL[..., :half]
        if self.discretization == "bilinear":
            return self.dplr_convolution(u, self.zero_state(x0), p, torch.linalg.matrix_power(dA, u.shape[1]))
        y, xL = ssm_conv(u, self.zero_state(x0), kind="dense", dA=dA, dB=dB, C=p["C"])
        return y, xL[..., :half]

    def dplr_recurrence(self, u: Tensor, x0: Tensor) -> tuple[Tensor, Tensor]:
        """The bilinear recurrence in O(N r) per step and channel on the stored half of the modes (module
        docstring). ``u [B, T, H]`` real, ``x0 [B, H, N/2]`` complex → ``(y [B, T, H], x_{T−1} [B, H, N/2])``."""
        ctype = x0.dtype
        lam = torch.complex(-torch.exp(self.log_neg_re.to(u.dtype)), self.im.to(u.dtype))      # [H, M]
        P, B, C = (as_complex(t, u.dtype) for t in (self.P, self.B, self.C))                    # [H, r, M], [H, M]
        half_dt = (self.step_sizes(u.dtype) / 2)[:, None].to(ctype)                             # [H, 1]
        inv_d = 1.0 / (1.0 - half_dt * lam)                                                       # [H, M]
        # capacitance I_r + Δ/2 P̄ diag(1/d) Pᵀ over all N modes = I_r + Δ/2 · 2 Re(half sum): real r×r
        cross = 2 * torch.einsum("hin,hn,hjn->hij", P.conj(), inv_d, P).real
        eye = torch.eye(self.rank, dtype=u.dtype, device=u.device)
        middle = half_dt.real[..., None] * torch.linalg.inv(eye + half_dt.real[..., None] * cross)  # [H, r, r]
        left = P * inv_d[:, None, :]                                                              # Pᵀ/d: [H, r, M]
        drive = (2 * half_dt) * B                                                                  # Δ B: [H, M]
        x, outputs = x0, []
        for t in range(u.shape[1]):
            q = 2 * torch.einsum("hin,bhn->bhi", P.conj(), x).real                               # P̄ x (real)
            w = x + half_dt * (lam * x - torch.einsum("hin,bhi->bhn", P, q.to(ctype)))           # (I + Δ/2 A) x
            g = (w + drive * u[:, t, :, None].to(ctype)) * inv_d
            s = 2 * torch.einsum("hin,bhn->bhi", P.conj(), g).real                               # P̄ g (real)
            x = g - torch.einsum("hin,bhi->bhn", left, torch.einsum("hij,bhj->bhi", middle, s).to(ctype))
            outputs.append(2 * (x * C).sum(-1).real)
        if not outputs:
            return u.new_zeros(u.shape), x
        return torch.stack(outputs, dim=1), x

    def dplr_convolution(self, u: Tensor, x0: Tensor | None, p: dict[str, Tensor],
                         dA_L: Tensor) -> tuple[Tensor, Tensor]:
        """The convolution mode for the bilinear rule on the L/2 + 1 real-FFT nodes (module docstring).
        ``x0`` is the full conjugate-paired state ``[B, H, N]`` or None; returns ``(y, x_{L−1} [B, H, N/2])``."""
        L, half = u.shape[1], self.d_state // 2
        lam, P, B, C, dt = p["lam"], p["P"], p["B"], p["C"], p["dt"]
        res = Resolvent(lam, P, dt, roots_of_unity(L, lam.dtype, lam.device, half=True))
        C_tilde = C - (C[:, None, :] @ dA_L)[:, 0]
        dtB = dt.to(B.dtype)[:, None] * B
        y = fft_causal_conv(u, torch.fft.irfft(res.bilinear_form(C_tilde, dtB[..., None])[..., 0], n=L))
        # Σ_j Ā^j B̄ u_{L−1−j} = (I − Ā^L) (1/L) Σ_k M(ω_k)⁻¹ΔB Ū_k = (I − Ā^L)(Y + S Ȳ)/L over k ≤ L/2
        weights = torch.ones(L // 2 + 1, dtype=u.dtype, device=u.device)
        weights[0] = 0.5
        if L % 2 == 0:
            weights[-1] = 0.5
        u_hat = torch.fft.rfft(u.flip(1), dim=1).conj() * weights[:, None]                     # Ū_k: [B, W, H]
        Y = res.solve_weighted_sum(dtB, u_hat.permute(2, 1, 0)) / L                              # [H, N, B]
        z = Y + torch.cat([Y[:, half:], Y[:, :half]], dim=1).conj()
        eye = torch.eye(self.d_state, dtype=lam.dtype, device=lam.device)
        xL = ((eye - dA_L)[:, :half] @ z).permute(2, 0, 1)
        if x0 is not None:
            # Σ_t ω^t C Ā^{t+1} x0 = C̃ M(ω)⁻¹ (I + Δ/2 A) x0: a Hermitian spectrum for a conjugate-paired x0
            xt = x0.permute(1, 2, 0)                                                             # [H, N, B]
            Ax = lam[..., None] * xt - P.transpose(1, 2) @ (P.conj() @ xt)
            free = torch.fft.irfft(res.bilinear_form(C_tilde, xt + (dt[:, None, None] / 2) * Ax), n=L, dim=1)
            y = y + free.permute(2, 1, 0)
            xL = xL + torch.einsum("hnm,bhm->bhn", dA_L[:, :half], x0)
        return y, xL

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", measure={self.measure!r}, rank={self.rank}, "
                f"discretization={self.discretization!r}")


__all__ = ["S4"]
