"""S4 (seqzoo/mixers/ssm/s4.py) and its DPLR kernel (seqzoo/ops/ssm_kernel.py).

Verification (reference notes, S4 §20): the Cauchy/Woodbury generating-function kernel equals the naive
C Ā^l B̄ from the dense Ā (a kernel that skips the (I − Ā^L) correction fails); the FFT convolution mode equals
the recurrent step mode to 1e-10 in float64, with a carried state; the repro's quick mode runs.
"""

import pytest
import torch
import torch.nn.functional as F

import seqzoo
from seqzoo.core import get_optim
from seqzoo.core.errors import SeqzooError
from seqzoo.mixers.ssm import discretize, hippo
from seqzoo.ops.ssm_kernel import Resolvent, dplr_kernel, fft_causal_conv, power_rows, roots_of_unity, small_solve


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def random_dplr(H=3, N=8, r=1, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def cn(*shape):
        return torch.complex(torch.randn(*shape, generator=gen, dtype=torch.float64),
                             torch.randn(*shape, generator=gen, dtype=torch.float64))

    lam = torch.complex(-torch.rand(H, N, generator=gen, dtype=torch.float64) - 0.1,
                        5 * torch.randn(H, N, generator=gen, dtype=torch.float64))
    dt = torch.exp(torch.empty(H, dtype=torch.float64).uniform_(-4, -1, generator=gen))
    return lam, 0.5 * cn(H, r, N), cn(H, N), cn(H, N), dt


def naive_kernel(dA, dB, C, L):
    out, v = [], dB
    for _ in range(L):
        out.append((C * v).sum(-1).real)
        v = (dA @ v[..., None])[..., 0]
    return torch.stack(out, -1)


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("L", [1, 16, 37])
def test_cauchy_woodbury_kernel_equals_powers_of_the_discrete_matrix(rank, L):
    lam, P, B, C, dt = random_dplr(r=rank, seed=rank)
    A = hippo.dplr_dense(lam, P)
    dA, dB = discretize.bilinear(A, B, dt)
    dA_L = torch.linalg.matrix_power(dA, L)
    K = dplr_kernel(lam, P, B, C, dt, L, dA_L)
    assert rel(K, naive_kernel(dA, dB, C, L)) < 1e-10
    # a real system (conjugate pairs) may use the real-FFT nodes only
    pairs = [hippo.conj_pairs(t[..., : t.shape[-1] // 2]) for t in (lam, P, B, C)]
    dA2, dB2 = discretize.bilinear(hippo.dplr_dense(pairs[0], pairs[1]), pairs[2], dt)
    K2 = dplr_kernel(*pairs, dt, L, torch.linalg.matrix_power(dA2, L), conjugate_pairs=True)
    assert rel(K2, naive_kernel(dA2, dB2, pairs[3], L)) < 1e-10
    if L > 1:  # the (I − Ā^L) correction of C is needed: a stub without it is far off
        stub = dplr_kernel(lam, P, B, C, dt, L, torch.zeros_like(dA_L))
        assert rel(stub, naive_kernel(dA, dB, C, L)) > 1e-3


def test_resolvent_solves_match_dense_inverses():
    lam, P, B, C, dt = random_dplr(r=2, seed=5)
    omega = roots_of_unity(6, torch.complex128)
    res = Resolvent(lam, P, dt, omega)
    A = hippo.dplr_dense(lam, P)
    eye = torch.eye(A.shape[-1], dtype=A.dtype)
    cols = torch.stack([B, C.conj(), B * 2j], -1)                                         # [H, N, 3]
    weights = torch.randn(3, 6, 4, dtype=torch.complex128)
    form, summed = res.bilinear_form(C, cols), res.solve_weighted_sum(B, weights)
    expect_sum = torch.zeros_like(summed)
    for w in range(6):
        M = (1 - omega[w]) * eye - (1 + omega[w]) * (dt / 2)[:, None, None] * A
        assert rel(form[:, w], (C[:, None, :] @ torch.linalg.solve(M, cols))[:, 0]) < 1e-12
        expect_sum += torch.linalg.solve(M, B[..., None]) * weights[:, w, None, :]
    assert rel(summed, expect_sum) < 1e-12


def test_woodbury_bilinear_discretisation_equals_the_dense_rule():
    for rank in (1, 2, 3):
        lam, P, B, _, dt = random_dplr(r=rank, seed=10 + rank)
        dA, dB = discretize.bilinear_dplr(lam, P, B, dt)
        dA_ref, dB_ref = discretize.bilinear(hippo.dplr_dense(lam, P), B, dt)
        assert rel(dA, dA_ref) < 1e-12 and rel(dB, dB_ref) < 1e-12


def test_helpers_power_rows_fft_conv_and_small_solve():
    gen = torch.Generator().manual_seed(3)
    M = torch.randn(2, 4, 4, generator=gen, dtype=torch.float64) / 2
    v = torch.randn(2, 4, generator=gen, dtype=torch.float64)
    rows = power_rows(v, M, 11)
    for j in (0, 1, 5, 10):
        assert torch.allclose(rows[:, j], (v[:, None, :] @ torch.linalg.matrix_power(M, j))[:, 0])
    u = torch.randn(3, 9, 2, generator=gen, dtype=torch.float64)
    K = torch.randn(2, 9, generator=gen, dtype=torch.float64)
    direct = torch.stack([sum(K[:, t - s] * u[:, s] for s in range(t + 1)) for t in range(9)], 1)
    assert torch.allclose(fft_causal_conv(u, K), direct)
    for r in (1, 2, 3):
        Ar = torch.randn(5, r, r, generator=gen, dtype=torch.float64) + 3 * torch.eye(r, dtype=torch.float64)
        b = torch.randn(5, r, generator=gen, dtype=torch.float64)
        assert torch.allclose(small_solve(Ar.to(torch.complex128), b.to(torch.complex128)).real,
                              torch.linalg.solve(Ar, b))


@pytest.mark.parametrize("options", [{}, {"measure": "legt"}, {"discretization": "zoh"}])
def test_convolution_mode_equals_step_mode_float64(options):
    torch.manual_seed(0)
    step = seqzoo.build_mixer("s4", 8, d_state=16, impl="recurrent", dt_min=0.01, dt_max=0.3, **options).double()
    conv = seqzoo.build_mixer("s4", 8, d_state=16, impl="conv", **options).double()
    conv.load_state_dict(step.state_dict())
    x = torch.randn(2, 150, 8, dtype=torch.float64)
    with torch.no_grad():
        y_step, s_step = step(x[:, :60])
        y_conv, s_conv = conv(x[:, :60])
        assert rel(y_conv, y_step) < 1e-10 and rel(s_conv["x"], s_step["x"]) < 1e-10
        # continue from a non-zero state: free response and final state in closed form
        y2_step, s2_step = step(x[:, 60:], s_step)
        y2_conv, s2_conv = conv(x[:, 60:], s_step)
    assert rel(y2_conv, y2_step) < 1e-10 and rel(s2_conv["x"], s2_step["x"]) < 1e-10
    assert s2_step["x"].abs().max() > 1e-3  # the state is live


def test_init_is_hippo_legs_in_the_unitary_basis():
    torch.manual_seed(0)
    mixer = seqzoo.build_mixer("s4", 4, d_state=8).double()
    p = mixer.dplr(torch.float64)
    V = hippo.conj_pairs(hippo.nplr("legs", 8).V)
    A, B = hippo.legs(8)
    for h in range(4):  # (parameters are stored in float32)
        assert rel(V @ p["A"][h] @ V.conj().T, A) < 1e-6
        assert rel(V @ p["B"][h], B) < 1e-6
    assert mixer.rank == 1 and seqzoo.build_mixer("s4", 4, d_state=8, measure="legt").rank == 2


def test_ssm_parameters_have_no_weight_decay_and_their_own_lr():
    mixer = seqzoo.build_mixer("s4", 16, ssm_lr=2e-3)
    for name in ("log_neg_re", "im", "P", "B", "log_dt"):
        assert get_optim(getattr(mixer, name)) == {"weight_decay": 0.0, "lr": 2e-3}, name
    assert get_optim(mixer.C) == {} and get_optim(mixer.D) == {}


def test_state_is_real_float32_for_bf16_inputs_and_errors_are_one_line():
    mixer = seqzoo.build_mixer("s4", 16, d_state=8).to(torch.bfloat16)
    y, state = mixer(torch.randn(2, 5, 16, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and state["x"].dtype == torch.float32 and state["x"].shape == (2, 16, 4, 2)
    with pytest.raises(SeqzooError, match="even"):
        seqzoo.build_mixer("s4", 16, d_state=7)
    with pytest.raises(SeqzooError, match="valid: legs, legt"):
        seqzoo.build_mixer("s4", 16, measure="fourier")
    with pytest.raises(SeqzooError, match="valid: auto, recurrent, conv"):
        seqzoo.build_mixer("s4", 16, impl="chunk")
    with pytest.raises(SeqzooError, match="shape"):
        mixer(torch.randn(2, 5, 16, dtype=torch.bfloat16), {"x": torch.zeros(2, 16, 3, 2)})


def test_repro_quick_mode_runs():
    from seqzoo.repro import get_repro

    result = get_repro("s4").run(True)
    assert result.paper_id == "s4" and result.checks
    names = [c.name for c in result.checks]
    assert any("accuracy" in n for n in names)


@pytest.mark.parametrize("lengths", [(37, 1), (1, 16), (64, 31)])
def test_half_node_convolution_matches_full_node_reference_and_steps(lengths):
    """The conv mode evaluates the resolvent at the L/2 + 1 real-FFT nodes only (odd L, L = 1 and a carried state
    included); it must equal the all-nodes reference of ``ssm_conv(kind="dplr")`` and the O(N r) recurrence."""
    from seqzoo.ops.ssm_kernel import ssm_conv

    torch.manual_seed(1)
    conv = seqzoo.build_mixer("s4", 4, d_state=8, impl="conv", dt_min=0.01, dt_max=0.3).double()
    step = seqzoo.build_mixer("s4", 4, d_state=8, impl="recurrent").double()
    step.load_state_dict(conv.state_dict())
    x = torch.randn(2, sum(lengths), 4, dtype=torch.float64)
    state_c = state_s = None
    start = 0
    with torch.no_grad():
        for L in lengths:
            chunk = x[:, start:start + L]
            y_c, state_c = conv(chunk, state_c)
            y_s, state_s = step(chunk, state_s)
            assert rel(y_c, y_s) < 1e-10 and rel(state_c["x"], state_s["x"]) < 1e-10
            start += L
        # the all-nodes reference in ops, on the SSM part alone
        u = torch.randn(3, 21, 4, dtype=torch.float64)
        x0 = torch.complex(torch.randn(3, 4, 4, dtype=torch.float64), torch.randn(3, 4, 4, dtype=torch.float64))
        dA, _, p = conv.discrete(torch.float64)
        dA_L = torch.linalg.matrix_power(dA, 21)
        full = hippo.conj_pairs(x0)
        y_ref, x_ref = ssm_conv(u, full, kind="dplr", lam=p["lam"], P=p["P"], B=p["B"], C=p["C"], dt=p["dt"],
                                dA_L=dA_L)
        y_half, x_half = conv.dplr_convolution(u, full, p, dA_L)
    assert rel(y_half, y_ref) < 1e-10 and rel(x_half, x_ref[..., :4]) < 1e-10


def test_recurrent_step_uses_the_dplr_structure_not_a_dense_matrix(monkeypatch):
    """Decoding (one token, impl auto) must run the O(N r) Woodbury recurrence on the stored half of the modes:
    building the dense N×N discretised matrix is forbidden here, and the step matches the dense recurrence."""
    from seqzoo.mixers.ssm import s4 as s4_module

    torch.manual_seed(2)
    mixer = seqzoo.build_mixer("s4", 4, d_state=16, measure="legt").double()     # rank 2: the r×r solve is used
    x = torch.randn(2, 12, 4, dtype=torch.float64)
    with torch.no_grad():
        y_conv, state = mixer(x[:, :11])
        dA, dB, p = mixer.discrete(torch.float64)
        dense_y, _ = s4_module.ssm_recurrent(x[:, 11:], dA, dB, p["C"],
                                             hippo.conj_pairs(torch.view_as_complex(state["x"])))
        expect_y = dense_y + mixer.D * x[:, 11:]

        def forbidden(*args, **kwargs):
            raise AssertionError("the recurrent step built a dense discretisation")

        monkeypatch.setattr(s4_module.discretize, "bilinear_dplr", forbidden)
        monkeypatch.setattr(s4_module, "ssm_recurrent", forbidden)
        monkeypatch.setattr(torch.linalg, "matrix_power", forbidden)
        y_step, _ = mixer(x[:, 11:], state)
    # the mixer output is GLU(W GELU(y_ssm + D u)); compare through the same output map
    expect = F.glu(mixer.out_proj(F.gelu(expect_y)), dim=-1)
    assert rel(y_step, expect) < 1e-10
