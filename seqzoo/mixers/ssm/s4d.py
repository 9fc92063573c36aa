"""S4D: the diagonal state space layer.

Paper: "On the Parameterization and Initialization of Diagonal State Space Models", Gu, Gupta, Goel, Ré,
NeurIPS 2022, arXiv 2206.11893.

Per channel h (H = d_model channels), a diagonal complex SSM with N/2 modes, one member of each conjugate pair of
a real N-dimensional system (so the output is 2 Re(·)):

    A = diag(λ),  λ_n = −exp(a_n) + i b_n  (Re λ < 0 by construction),    B, C ∈ C^{N/2},    Δ = exp(log Δ_h)
    zero-order hold (default):  Ā_n = exp(Δ λ_n),   B̄_n = (exp(Δ λ_n) − 1)/λ_n · B_n
    bilinear (option):          Ā_n = (1 + Δλ_n/2)/(1 − Δλ_n/2),   B̄_n = Δ B_n / (1 − Δλ_n/2)
    recurrent:     x_t = Ā ⊙ x_{t−1} + B̄ u_t,       y_t = 2 Re(Σ_n C_n x_{t,n}) + D u_t
    convolution:   y = K ∗ u + D u,   K_l = 2 Re Σ_n C_n B̄_n Ā_n^l        (a Vandermonde product, FFT convolution)

plus, in the convolution mode, the free response 2 Re Σ_n C_n Ā_n^{t+1} x0_n of the incoming state and the final
state Ā^L x0 + Σ_j Ā^j B̄ u_{L−1−j} in closed form (:mod:`seqzoo.ops.ssm_kernel`), so any split of a sequence
equals one call. Then GELU and a position-wise linear map to 2H with a GLU (the paper's S4D block).

Initialisations (``init``; from the paper, checked against state-spaces/s4 ``dplr(...)``), n = 0 … N/2−1:

    "lin" (S4D-Lin, default):  λ_n = −½ + iπn
    "inv" (S4D-Inv):           λ_n = −½ + i (N/π)(N/(2n+1) − 1)
    "legs" (S4D-LegS):         λ_n = the eigenvalues of the normal part of HiPPO-LegS (hippo.nplr), B = its B̃
    "real" (S4D-Real):         λ_n = −(n + 1)

B = 1 for lin/inv/real; C ~ complex normal (E|C|² = 1); D ~ N(0, 1); Δ log-uniform in [dt_min, dt_max].
A (its two real parts), B and log Δ get no weight decay and the learning rate ``ssm_lr``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ...core.errors import SeqzooError
from ...core.registry import register_mixer
from ...ops.ssm_kernel import ssm_conv, ssm_recurrent
from . import discretize
from ._lti_layer import LTILayer, as_complex, complex_param
from .hippo import nplr

INITS = ("lin", "inv", "legs", "real")


def s4d_init(init: str, N: int) -> tuple[Tensor, Tensor]:
    """``(λ [N/2] complex128, B [N/2] complex128)`` of the S4D initialisation ``init`` for state size N."""
    n = torch.arange(N // 2, dtype=torch.float64)
    ones = torch.ones(N // 2, dtype=torch.complex128)
    if init == "lin":
        return torch.complex(-0.5 * torch.ones_like(n), math.pi * n), ones
    if init == "inv":
        return torch.complex(-0.5 * torch.ones_like(n), (N / math.pi) * (N / (2 * n + 1) - 1)), ones
    if init == "legs":
        form = nplr("legs", N)
        return form.lam, form.B
    if init == "real":
        return torch.complex(-(n + 1), torch.zeros_like(n)), ones
    raise SeqzooError(f"unknown S4D init {init!r}; valid: {', '.join(INITS)}")


@register_mixer("s4d", paper="On the Parameterization and Initialization of Diagonal State Space Models",
                arxiv="2206.11893")
class S4D(LTILayer):
    """S4D (Gu et al. 2022, arXiv 2206.11893): a diagonal SSM per channel with a Vandermonde convolution kernel
    and a recurrent step mode, GELU and a GLU output projection.

    Options: ``d_state`` N (even; N/2 complex modes); ``init`` in lin, inv, legs, real; ``discretization`` "zoh"
    or "bilinear"; ``impl`` "auto" (recurrent for one token, conv otherwise), "recurrent" or "conv"; ``dt_min``,
    ``dt_max``; ``ssm_lr`` (learning rate of A, B, Δ; None = global).
    """

    def __init__(self, d_model: int, d_state: int = 64, init: str = "lin", discretization: str = "zoh",
                 impl: str = "auto", dt_min: float = 1e-3, dt_max: float = 1e-1, ssm_lr: float | None = 1e-3):
        super().__init__(d_model, d_state=d_state, impl=impl, dt_min=dt_min, dt_max=dt_max, ssm_lr=ssm_lr,
                         name="s4d")
        self.init, self.discretization = init, discretize.check_method(discretization)
        lam, B = s4d_init(init, d_state)
        H = d_model
        self.log_neg_re = self.ssm_param(torch.log(-lam.real).expand(H, -1).clone())
        self.im = self.ssm_param(lam.imag.expand(H, -1).clone())
        self.B = self.ssm_param(complex_param(B.expand(H, -1)))
        self.C = complex_param(torch.randn(H, d_state // 2, dtype=torch.complex128))

    def eigenvalues(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """λ per channel and mode (``[H, N/2]`` complex)."""
        return torch.complex(-torch.exp(self.log_neg_re.to(dtype)), self.im.to(dtype))

    def discrete(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        """``(log Ā, B̄, 2C)`` per channel (``[H, N/2]`` complex of the real ``dtype``)."""
        lam = self.eigenvalues(dtype)
        log_dA, dB = discretize.diagonal(lam, as_complex(self.B, dtype), self.step_sizes(dtype),
                                         self.discretization)
        return log_dA, dB, 2 * as_complex(self.C, dtype)

    def run_ssm(self, u: Tensor, x0: Tensor, impl: str) -> tuple[Tensor, Tensor]:
        log_dA, dB, C = self.discrete(u.dtype)
        if impl == "recurrent":
            return ssm_recurrent(u, torch.exp(log_dA), dB, C, x0)
        return ssm_conv(u, self.zero_state(x0), kind="diagonal", log_dA=log_dA, dB=dB, C=C)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", init={self.init!r}, discretization={self.discretization!r}"


__all__ = ["INITS", "S4D", "s4d_init"]
