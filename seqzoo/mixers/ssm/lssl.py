"""LSSL: the linear state-space layer, one dense HiPPO state space model seen three ways.

Paper: "Combining Recurrent, Convolutional, and Continuous-time Models with Linear State-Space Layers", Gu et al.,
NeurIPS 2021, arXiv 2110.13985.

Per SSM channel c (each of the H = d_model input channels feeds ``copies`` SSMs with their own step sizes, so
C = H · copies SSM channels), a real state x ∈ R^N and the HiPPO matrix (``measure`` LegS by default; A and B are
shared by all channels and fixed unless ``train_A``):

    continuous:   x'(t) = A x(t) + B u(t),   y(t) = C_c x(t) + D_c u(t)
                  impulse response (the continuous kernel)  k_c(t) = C_c e^{tA} B        (:meth:`continuous_kernel`)
    recurrent:    Ā_c = (I − Δ_c/2 A)⁻¹ (I + Δ_c/2 A),  B̄_c = (I − Δ_c/2 A)⁻¹ Δ_c B          (bilinear)
                  x_t = Ā_c x_{t−1} + B̄_c u_t,   y_t = C_c x_t + D_c u_t
    convolutional: y = K_c ∗ u + D_c u,   K_c = (C_c B̄_c, C_c Ā_c B̄_c, …, C_c Ā_c^{L−1} B̄_c)
                  (the Krylov sequence, built by repeated squaring of Ā: log₂ L matrix products)

The convolution mode also adds the free response C Ā^{t+1} x0 of the incoming state and returns the final state
Ā^L x0 + Σ_j Ā^j B̄ u_{L−1−j}, both from the same Krylov powers (:mod:`seqzoo.ops.ssm_kernel`), so any split of a
sequence equals one call. As Δ → 0, K_l / Δ = k((l + ½)Δ) + O(Δ²): the discrete views sample the continuous one
(B̄ ≈ e^{ΔA/2} Δ B centres each step).

Layer output: GELU, then a position-wise linear map from the C SSM outputs to H (the paper's "linear mixing" of
the copies). Parameters: log Δ [C] (log-uniform in [dt_min, dt_max]; no weight decay, rate ``ssm_lr``), C ~ N(0, 1)
[C, N], D ~ N(0, 1) [C]; A, B trainable (no weight decay, rate ``ssm_lr``) only with ``train_A=True``
("LSSL" vs "LSSL-fixed" in the paper).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...core.errors import SeqzooError
from ...core.registry import register_mixer
from ...ops.ssm_kernel import dense_kernel, ssm_conv, ssm_recurrent
from . import discretize
from ._lti_layer import LTILayer
from .hippo import MEASURES, transition


@register_mixer("lssl", paper="Combining Recurrent, Convolutional, and Continuous-time Models with Linear "
                "State-Space Layers", arxiv="2110.13985")
class LSSL(LTILayer):
    """LSSL (Gu et al., NeurIPS 2021, arXiv 2110.13985): a dense HiPPO SSM per channel with trainable Δ, as a
    recurrence (bilinear Ā), a convolution (Krylov kernel) or a continuous-time system; GELU and linear mixing.

    Options: ``d_state`` N; ``copies`` SSMs (different Δ) per channel; ``measure`` "legs" or "legt"; ``train_A``;
    ``impl`` "auto" (recurrent for one token, conv otherwise), "recurrent" or "conv"; ``dt_min``, ``dt_max``;
    ``ssm_lr``.
    """

    complex_state = False
    output_glu = False

    def __init__(self, d_model: int, d_state: int = 32, copies: int = 1, measure: str = "legs",
                 train_A: bool = False, impl: str = "auto", dt_min: float = 1e-3, dt_max: float = 1e-1,
                 ssm_lr: float | None = 1e-3):
        super().__init__(d_model, d_state=d_state, copies=copies, impl=impl, dt_min=dt_min, dt_max=dt_max,
                         ssm_lr=ssm_lr, name="lssl")
        if measure not in MEASURES:
            raise SeqzooError(f"unknown LSSL measure {measure!r}; valid: {', '.join(MEASURES)}")
        if not isinstance(train_A, bool):
            raise SeqzooError(f"train_A must be True or False, got {train_A!r}")
        self.measure, self.train_A = measure, train_A
        A, B = transition(measure, d_state, dtype=torch.get_default_dtype())
        if train_A:
            self.A, self.B = self.ssm_param(A), self.ssm_param(B)
        else:
            self.register_buffer("A", A)
            self.register_buffer("B", B)
        self.C = torch.nn.Parameter(torch.randn(self.channels, d_state))

    def discrete(self, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """Bilinear ``(Ā [C, N, N], B̄ [C, N])`` per SSM channel."""
        return discretize.bilinear(self.A.to(dtype), self.B.to(dtype), self.step_sizes(dtype))

    def run_ssm(self, u: Tensor, x0: Tensor, impl: str) -> tuple[Tensor, Tensor]:
        dA, dB = self.discrete(u.dtype)
        C = self.C.to(u.dtype)
        if impl == "recurrent":
            return ssm_recurrent(u, dA, dB, C, x0)
        return ssm_conv(u, self.zero_state(x0), kind="dense", dA=dA, dB=dB, C=C)

    def conv_kernel(self, length: int, dtype: torch.dtype = torch.float64) -> Tensor:
        """The discrete kernel ``K_l = C Ā^l B̄`` for ``l < length`` (``[C, length]``)."""
        dA, dB = self.discrete(dtype)
        return dense_kernel(dA, dB, self.C.to(dtype), length)

    def continuous_kernel(self, t: Tensor) -> Tensor:
        """The continuous impulse response ``k_c(t) = C_c e^{tA} B`` at times ``t [S]`` (``[C, S]``), computed with
        ``torch.linalg.matrix_exp`` in the dtype of ``t``."""
        dtype = t.dtype
        expm = torch.linalg.matrix_exp(t[:, None, None] * self.A.to(dtype))        # [S, N, N]
        return self.C.to(dtype) @ (expm @ self.B.to(dtype)).T                       # [C, S]

    def extra_repr(self) -> str:
        return super().extra_repr() + f", measure={self.measure!r}, train_A={self.train_A}"


__all__ = ["LSSL"]
