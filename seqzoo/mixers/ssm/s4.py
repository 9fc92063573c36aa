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

* ``"recurrent"`` (the reference): x_t = Ā x_{t−1} + B̄ u_t, y_t = Re(C x_t) + D u_t with the dense discretised
  N×N matrix Ā per channel.
* ``"conv"``: y = K ∗ u + D u by FFT, with the kernel K_l = Re(C Ā^l B̄) computed, for the bilinear rule, by the
  paper's algorithm: the generating function K̂(ω) = C̃ (I − ωĀ)⁻¹ B̄, C̃ = C (I − Ā^L), at the L roots of unity,
  the Woodbury identity to reduce the DPLR resolvent to diagonal (Cauchy) ones, and an inverse FFT
  (:mod:`seqzoo.ops.ssm_kernel`); Ā^L by repeated squaring. The free response Re(C Ā^{t+1} x0) of the incoming
  state and the final state Ā^L x0 + Σ_j Ā^j B̄ u_{L−1−j} come from the same resolvent in closed form, so any
  split of a sequence equals one call. With ``discretization="zoh"`` there is no Cauchy form, and the kernel is the
  Krylov sequence of the dense Ā (as in LSSL).

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
from ...ops.ssm_kernel import ssm_conv, ssm_recurrent
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
        dA, dB, p = self.discrete(u.dtype)
        half = self.d_state // 2
        x0 = conj_pairs(x0)
        if impl == "recurrent":
            y, xL = ssm_recurrent(u, dA, dB, p["C"], x0)
        elif self.discretization == "bilinear":
            y, xL = ssm_conv(u, self.zero_state(x0), kind="dplr", lam=p["lam"], P=p["P"], B=p["B"], C=p["C"],
                             dt=p["dt"], dA_L=torch.linalg.matrix_power(dA, u.shape[1]))
        else:
            y, xL = ssm_conv(u, self.zero_state(x0), kind="dense", dA=dA, dB=dB, C=p["C"])
        return y, xL[..., :half]

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", measure={self.measure!r}, rank={self.rank}, "
                f"discretization={self.discretization!r}")


__all__ = ["S4"]
