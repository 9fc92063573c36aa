"""S4D (seqzoo/mixers/ssm/s4d.py), its Vandermonde kernel and the zero-order-hold discretisation.

Verification: the Vandermonde kernel equals explicit powers of Ā (and the 2·Re half-mode form equals the full
conjugate-paired real system); the S4D-Lin/Inv/Real/LegS inits match their formulas; ZOH matches the matrix
exponential; the convolution and step modes agree to 1e-10 in float64 with a carried state.
"""

import math

import pytest
import torch

import seqzoo
from seqzoo.core import get_optim
from seqzoo.core.errors import SeqzooError
from seqzoo.mixers.ssm import discretize, hippo
from seqzoo.ops.ssm_kernel import dense_kernel, diagonal_kernel, vandermonde


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def test_vandermonde_kernel_equals_explicit_powers():
    gen = torch.Generator().manual_seed(0)
    lam = torch.complex(-torch.rand(3, 5, generator=gen, dtype=torch.float64), torch.randn(3, 5, generator=gen,
                                                                                          dtype=torch.float64))
    B = torch.randn(3, 5, generator=gen, dtype=torch.complex128)
    C = torch.randn(3, 5, generator=gen, dtype=torch.complex128)
    dt = torch.tensor([0.01, 0.1, 0.5], dtype=torch.float64)
    log_dA, dB = discretize.diagonal(lam, B, dt, "zoh")
    dA = torch.exp(log_dA)
    L = 23
    V = vandermonde(log_dA, L)
    for l in (0, 1, 7, 22):
        assert torch.allclose(V[..., l], dA ** l, rtol=1e-12, atol=0)
    explicit = torch.stack([(C * dB * dA ** l).sum(-1).real for l in range(L)], -1)
    assert rel(diagonal_kernel(log_dA, dB, C, L), explicit) < 1e-12
    # one member per conjugate pair with 2C == the full real system of 2N modes
    full = dense_kernel(torch.diag_embed(hippo.conj_pairs(dA)), hippo.conj_pairs(dB), hippo.conj_pairs(C), L)
    assert rel(diagonal_kernel(log_dA, dB, 2 * C, L), full) < 1e-12


def test_zoh_matches_the_matrix_exponential():
    gen = torch.Generator().manual_seed(1)
    lam = torch.complex(-torch.rand(2, 4, generator=gen, dtype=torch.float64) - 0.1,
                        3 * torch.randn(2, 4, generator=gen, dtype=torch.float64))
    B = torch.randn(2, 4, generator=gen, dtype=torch.complex128)
    dt = torch.tensor([0.05, 0.4], dtype=torch.float64)
    log_dA, dB = discretize.diagonal(lam, B, dt, "zoh")
    dA_dense, dB_dense = discretize.zoh(torch.diag_embed(lam), B, dt)
    assert rel(torch.diag_embed(torch.exp(log_dA)), dA_dense) < 1e-12
    assert rel(dB, dB_dense) < 1e-12
    assert torch.allclose(log_dA, dt[:, None] * lam)
    # exact for a constant input: x(Δ) = ∫_0^Δ e^{sλ} ds B = (e^{Δλ} − 1)/λ B
    assert rel(dB, (torch.exp(dt[:, None] * lam) - 1) / lam * B) < 1e-12
    # bilinear diagonal rule == dense bilinear rule
    log_dA, dB = discretize.diagonal(lam, B, dt, "bilinear")
    dA_dense, dB_dense = discretize.bilinear(torch.diag_embed(lam), B, dt)
    assert rel(torch.diag_embed(torch.exp(log_dA)), dA_dense) < 1e-12 and rel(dB, dB_dense) < 1e-12


@pytest.mark.parametrize("init", ["lin", "inv", "real", "legs"])
def test_inits_match_their_formulas(init):
    N = 16
    mixer = seqzoo.build_mixer("s4d", 4, d_state=N, init=init).double()
    lam = mixer.eigenvalues()
    n = torch.arange(N // 2, dtype=torch.float64)
    if init == "lin":
        expect = torch.complex(-0.5 * torch.ones_like(n), math.pi * n)
    elif init == "inv":
        expect = torch.complex(-0.5 * torch.ones_like(n), N / math.pi * (N / (2 * n + 1) - 1))
    elif init == "real":
        expect = torch.complex(-(n + 1), torch.zeros_like(n))
    else:
        expect = hippo.nplr("legs", N).lam
    for h in range(4):
        assert rel(lam[h], expect) < 1e-6, h                     # (stored in float32)
    B = torch.view_as_complex(mixer.B.contiguous())
    if init != "legs":
        assert torch.equal(B, torch.ones_like(B))


def test_inv_init_differs_from_lin():
    lin = seqzoo.build_mixer("s4d", 4, d_state=8, init="lin").eigenvalues()
    inv = seqzoo.build_mixer("s4d", 4, d_state=8, init="inv").eigenvalues()
    assert (lin.imag - inv.imag).abs().max() > 1.0


@pytest.mark.parametrize("options", [{}, {"init": "inv", "discretization": "bilinear"}])
def test_convolution_mode_equals_step_mode_float64(options):
    torch.manual_seed(0)
    step = seqzoo.build_mixer("s4d", 8, d_state=16, impl="recurrent", dt_min=0.01, dt_max=0.3, **options).double()
    conv = seqzoo.build_mixer("s4d", 8, d_state=16, impl="conv", **options).double()
    conv.load_state_dict(step.state_dict())
    x = torch.randn(2, 200, 8, dtype=torch.float64)
    with torch.no_grad():
        y_step, s_step = step(x[:, :90])
        y_conv, s_conv = conv(x[:, :90])
        y2_step, s2_step = step(x[:, 90:], s_step)
        y2_conv, s2_conv = conv(x[:, 90:], s_step)
    assert rel(y_conv, y_step) < 1e-10 and rel(s_conv["x"], s_step["x"]) < 1e-10
    assert rel(y2_conv, y2_step) < 1e-10 and rel(s2_conv["x"], s2_step["x"]) < 1e-10


def test_options_and_errors():
    mixer = seqzoo.build_mixer("s4d", 16)
    for name in ("log_neg_re", "im", "B", "log_dt"):
        assert get_optim(getattr(mixer, name))["weight_decay"] == 0.0, name
    assert mixer.state_size(10) == 16 * 64
    with pytest.raises(SeqzooError, match="valid: lin, inv, legs, real"):
        seqzoo.build_mixer("s4d", 16, init="random")
    with pytest.raises(SeqzooError, match="valid: bilinear, zoh"):
        seqzoo.build_mixer("s4d", 16, discretization="euler")
    with pytest.raises(SeqzooError, match="dt_min"):
        seqzoo.build_mixer("s4d", 16, dt_min=0.5, dt_max=0.1)
