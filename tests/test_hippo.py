"""HiPPO matrices and their NPLR/DPLR decomposition (seqzoo/mixers/ssm/hippo.py).

Verification (reference notes, S4 §20 and LSSL §17): the DPLR form reconstructs A and B exactly; A + PᵀP is
normal; the LegS/LegT states memorise a smooth input so that its history can be read back by Legendre projection
(R² > 0.99), better with more state, which a random stable A does not do.
"""

import math

import pytest
import torch

from seqzoo.core.errors import SeqzooError
from seqzoo.mixers.ssm import hippo


def test_legs_and_legt_entries():
    A, B = hippo.legs(4)
    r = [math.sqrt(2 * n + 1) for n in range(4)]
    assert A[2, 0] == pytest.approx(-r[2] * r[0]) and A[3, 1] == pytest.approx(-r[3] * r[1])
    assert A[1, 1] == -2.0 and A[3, 3] == -4.0 and A[0, 2] == 0.0
    assert torch.allclose(B, torch.tensor(r, dtype=torch.float64))
    A, B = hippo.legt(4, theta=2.0)
    assert A[2, 0] == pytest.approx(-r[2] * r[0] / 2) and A[0, 1] == pytest.approx(r[0] * r[1] / 2)
    assert A[0, 2] == pytest.approx(-r[0] * r[2] / 2) and A[1, 1] == pytest.approx(-3 / 2)
    assert torch.allclose(B, torch.tensor(r, dtype=torch.float64) / 2)
    # LegS is lower triangular with eigenvalues −(n+1)
    assert torch.equal(torch.triu(hippo.legs(6)[0], 1), torch.zeros(6, 6, dtype=torch.float64))


@pytest.mark.parametrize("measure", ["legs", "legt"])
def test_low_rank_correction_makes_a_normal_matrix(measure):
    A, _ = hippo.transition(measure, 12)
    P = hippo.low_rank_correction(measure, 12)
    assert P.shape[0] == (1 if measure == "legs" else 2)
    S = A + P.T @ P
    assert torch.allclose(S @ S.T, S.T @ S, atol=1e-9)
    off = S - torch.diag(torch.diagonal(S))
    assert torch.allclose(off, -off.T)  # constant diagonal + skew-symmetric
    assert torch.allclose(torch.diagonal(S), torch.full((12,), -0.5 if measure == "legs" else 0.0,
                                                       dtype=torch.float64))
    # without the correction A is far from normal
    assert (A @ A.T - A.T @ A).abs().max() > 1.0


@pytest.mark.parametrize("N", [2, 8, 64])
@pytest.mark.parametrize("measure", ["legs", "legt"])
def test_nplr_reconstructs_the_hippo_matrix(measure, N):
    A, B = hippo.transition(measure, N)
    form = hippo.nplr(measure, N)
    V = hippo.conj_pairs(form.V)
    lam, P, Bm = hippo.conj_pairs(form.lam), hippo.conj_pairs(form.P), hippo.conj_pairs(form.B)
    eye = torch.eye(N, dtype=torch.complex128)
    assert torch.allclose(V.conj().T @ V, eye, atol=1e-10)                           # V is unitary
    A_rec = V @ hippo.dplr_dense(lam, P) @ V.conj().T
    scale = A.abs().max()
    assert (A_rec - A).abs().max() / scale < 1e-12
    assert (V @ Bm - B).abs().max() / B.abs().max() < 1e-12
    assert (form.lam.imag > 0).all()
    # the low-rank term is needed: the diagonal alone does not give A
    assert (V @ torch.diag(lam) @ V.conj().T - A).abs().max() / scale > 1e-2


def test_nplr_rejects_odd_sizes_and_unknown_measures():
    with pytest.raises(SeqzooError, match="even"):
        hippo.nplr("legs", 7)
    with pytest.raises(SeqzooError, match="valid: legs, legt"):
        hippo.transition("fourier", 8)


def _signal(t):
    return torch.sin(3 * t) + 0.5 * torch.cos(7 * t) + t


def _exact_step(A, B, h):
    """ZOH step of x' = A x + B u over h (block matrix exponential)."""
    N = A.shape[0]
    M = torch.zeros(N + 1, N + 1, dtype=torch.float64)
    M[:N, :N], M[:N, N] = A * h, B * h
    E = torch.linalg.matrix_exp(M)
    return E[:N, :N], E[:N, N]


def _legs_memory(A, B, steps=1500):
    """Run c' = (1/t)(A c + B u) over t ∈ (0, 1] (time-invariant in log t) and read the history back."""
    taus = torch.linspace(math.log(1e-4), 0.0, steps + 1, dtype=torch.float64)
    Ad, Bd = _exact_step(A, B, (taus[1] - taus[0]).item())
    c = torch.zeros(A.shape[0], dtype=torch.float64)
    c[0] = _signal(torch.tensor(0.0))
    for i in range(steps):
        c = Ad @ c + Bd * _signal(torch.exp((taus[i] + taus[i + 1]) / 2))
    s = torch.linspace(0, 1, 200, dtype=torch.float64)
    recon, truth = hippo.legendre_reconstruct(c, s), _signal(s)
    return 1 - ((recon - truth) ** 2).sum().item() / ((truth - truth.mean()) ** 2).sum().item()


def test_legs_state_memorises_the_input_history():
    r2 = {N: _legs_memory(*hippo.legs(N)) for N in (4, 8, 16)}
    assert r2[16] > 0.999 and r2[8] > 0.99
    assert 1 - r2[4] > 10 * (1 - r2[8]) and 1 - r2[8] > 10 * (1 - r2[16])   # more state, better memory
    gen = torch.Generator().manual_seed(0)
    Q = torch.randn(16, 16, generator=gen, dtype=torch.float64)
    random_A = -Q @ Q.T / 16 - torch.eye(16, dtype=torch.float64)                  # a random stable matrix
    assert _legs_memory(random_A, torch.randn(16, generator=gen, dtype=torch.float64)) < 0.5


def test_legt_state_memorises_the_last_window():
    errors = {}
    for N in (6, 12):
        A, B = hippo.legt(N, theta=1.0)
        dt = 2e-3
        Ad, Bd = _exact_step(A, B, dt)
        c = torch.zeros(N, dtype=torch.float64)
        times = torch.arange(0, 1500, dtype=torch.float64) * dt
        for t in times:
            c = Ad @ c + Bd * _signal(t + dt / 2)
        end = times[-1] + dt
        s = torch.linspace(0, 1, 100, dtype=torch.float64)
        errors[N] = ((hippo.legendre_reconstruct(c, s) - _signal(end - 1 + s)) ** 2).mean().item()
    assert errors[12] < 1e-6 and errors[6] > 10 * errors[12]


def test_legendre_polynomials():
    x = torch.linspace(-1, 1, 7, dtype=torch.float64)
    P = hippo.legendre(4, x)
    assert torch.allclose(P[2], (3 * x ** 2 - 1) / 2) and torch.allclose(P[3], (5 * x ** 3 - 3 * x) / 2)
