"""Property tests of the Legendre Memory Unit (seqzoo/mixers/rnn/lmu.py).

The contract (chunk invariance, causality, impls agree, gradients) is covered by tests/test_mixer_contract.py;
here: the LegT system itself, ZOH, the FFT memory against the recurrence with an incoming state, and the delay
property that makes it a memory (which a random stable matrix does not have).
"""

import math

import pytest
import torch

import seqzoo
from seqzoo.core.errors import SeqzooError
from seqzoo.mixers.rnn.lmu import (LMU, delay_decoder, legt_matrices, power_sequence, shifted_legendre,
                                   zoh_discretize)


def band_limited(length: int, theta: float, seed: int = 0, batch: int = 1) -> torch.Tensor:
    """A sum of sinusoids with periods longer than θ/2 (well inside what an order-32 memory can hold)."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(length, dtype=torch.float64)
    out = torch.zeros(batch, length, dtype=torch.float64)
    for cycles in (0.3, 0.7, 1.1, 1.6):  # cycles per window θ
        amp = torch.randn(batch, 1, generator=gen, dtype=torch.float64)
        phase = 2 * math.pi * torch.rand(batch, 1, generator=gen, dtype=torch.float64)
        out += amp * torch.sin(2 * math.pi * cycles * t / theta + phase)
    return out


def r_squared(estimate: torch.Tensor, target: torch.Tensor) -> float:
    return float(1 - ((estimate - target) ** 2).mean() / target.var())


def test_legt_matrices_match_the_paper_formula():
    a, b = legt_matrices(4, 2.0)
    for i in range(4):
        assert b[i] == (2 * i + 1) / 2.0 * (-1) ** i
        for j in range(4):
            sign = -1.0 if i < j else (-1.0) ** (i - j + 1)
            assert a[i, j] == (2 * i + 1) / 2.0 * sign
    with pytest.raises(SeqzooError, match="order"):
        legt_matrices(0, 1.0)
    with pytest.raises(SeqzooError, match="theta"):
        legt_matrices(4, 0.0)


def test_legt_is_similar_to_hippo_legt():
    """The LMU's LegT and HiPPO's (normalised) LegT are the same system up to a diagonal change of basis."""
    hippo = pytest.importorskip("seqzoo.mixers.ssm.hippo")
    a, _ = legt_matrices(12, 5.0)
    a_h, _ = hippo.legt(12, 5.0)
    ev = torch.sort(torch.linalg.eigvals(a).real).values
    ev_h = torch.sort(torch.linalg.eigvals(a_h).real).values
    torch.testing.assert_close(ev, ev_h, rtol=1e-8, atol=1e-8)


def test_zoh_discretisation():
    a, b = legt_matrices(6, 3.0)
    a_bar, b_bar = zoh_discretize(a, b)
    torch.testing.assert_close(a_bar, torch.linalg.matrix_exp(a), rtol=1e-12, atol=1e-12)
    expected = torch.linalg.solve(a, (a_bar - torch.eye(6, dtype=torch.float64)) @ b)
    torch.testing.assert_close(b_bar, expected, rtol=1e-9, atol=1e-10)
    signal = pytest.importorskip("scipy.signal")
    ad, bd, *_ = signal.cont2discrete((a.numpy(), b[:, None].numpy(), torch.ones(1, 6).numpy(), [[0.0]]), 1.0,
                                      method="zoh")
    torch.testing.assert_close(a_bar, torch.from_numpy(ad), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(b_bar, torch.from_numpy(bd[:, 0]), rtol=1e-10, atol=1e-12)


def test_power_sequence_equals_explicit_powers():
    gen = torch.Generator().manual_seed(0)
    a = 0.3 * torch.randn(5, 5, generator=gen, dtype=torch.float64)
    v = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    for length in (1, 2, 7, 16):
        seq = power_sequence(a, v, length)
        assert seq.shape == (3, length, 5)
        for k in range(length):
            torch.testing.assert_close(seq[:, k], v @ torch.linalg.matrix_power(a, k).T, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("per_channel", [False, True])
def test_fft_memory_equals_recurrence_with_incoming_state(per_channel):
    mixer = seqzoo.build_mixer("lmu", 8, order=12, theta=20.0, memory_inputs=3, per_channel=per_channel).double()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 37, 8, generator=gen, dtype=torch.float64)
    u = mixer.encode(x)
    m0 = torch.randn(2, mixer.memory_inputs, 12, generator=gen, dtype=torch.float64)
    m_fft, last_fft = mixer.memory(u, m0, impl="fft")
    m_rec, last_rec = mixer.memory(u, m0, impl="recurrent")
    scale = m_rec.abs().max()
    assert (m_fft - m_rec).abs().max() / scale < 1e-10
    assert (last_fft - last_rec).abs().max() / scale < 1e-10
    # and the recurrence really is m_t = Ā m_{t-1} + B̄ u_t
    a_bar, b_bar = mixer.system(torch.float64)
    torch.testing.assert_close(m_rec[:, 0], m0 @ a_bar.T + u[:, 0, :, None] * b_bar)
    torch.testing.assert_close(m_rec[:, 5], m_rec[:, 4] @ a_bar.T + u[:, 5, :, None] * b_bar)


def test_shifted_legendre_values():
    r = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    p = shifted_legendre(4, r)
    x = 2 * r - 1
    torch.testing.assert_close(p[:, 2], 1.5 * x ** 2 - 0.5)
    torch.testing.assert_close(p[:, 3], 2.5 * x ** 3 - 1.5 * x)
    torch.testing.assert_close(p[0], torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64))  # P̃_i(0) = (−1)^i


def delay_r2(mixer: LMU, fraction: float, seed: int = 0) -> float:
    """R² of decoding u(t − fraction·θ) from m_t with the shifted Legendre polynomials."""
    theta = int(mixer.theta)
    length = 6 * theta
    u = band_limited(length, mixer.theta, seed=seed)[:, :, None]  # [1, T, 1]
    m, _ = mixer.memory(u, torch.zeros(1, 1, mixer.order, dtype=torch.float64))
    decoded = m[0, :, 0] @ delay_decoder(mixer.order, fraction)
    delay = int(round(fraction * theta))
    start = theta  # skip the first window (the memory starts empty)
    return r_squared(decoded[start:], u[0, start - delay:length - delay, 0])


@pytest.mark.parametrize("fraction", [0.0, 0.5, 1.0])
def test_memory_reconstructs_a_delayed_input(fraction):
    mixer = seqzoo.build_mixer("lmu", 4, order=32, theta=64.0)
    assert delay_r2(mixer, fraction) > 0.95


def test_a_random_stable_memory_fails_the_delay_property():
    """The delay test discriminates: the same decoder applied to a random stable system of the same size fails."""
    mixer = seqzoo.build_mixer("lmu", 4, order=32, theta=64.0)
    gen = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(32, 32, generator=gen, dtype=torch.float64))
    mixer._a_bar = 0.97 * q  # stable, norm-preserving-ish, but not the LegT
    mixer._b_bar = torch.randn(32, generator=gen, dtype=torch.float64) / 32
    mixer._cache.clear()
    assert delay_r2(mixer, 0.5) < 0.5


def test_state_and_options():
    mixer = seqzoo.build_mixer("lmu", 16, order=6, memory_inputs=2)
    state = mixer.init_state(3, dtype=torch.bfloat16)
    assert state["m"].shape == (3, 2, 6) and state["m"].dtype == torch.float32
    assert mixer.state_size(100) == 12
    assert seqzoo.build_mixer("lmu", 16, order=6, per_channel=True).init_state(1)["m"].shape == (1, 16, 6)
    assert seqzoo.build_mixer("lmu", 16).order == 16  # LMUFormer: memory order = width
    with pytest.raises(SeqzooError, match="impl 'chunk' is not valid for lmu"):
        seqzoo.build_mixer("lmu", 16, impl="chunk")
    with pytest.raises(SeqzooError, match="activation 'swish' is not valid"):
        seqzoo.build_mixer("lmu", 16, activation="swish")
    with pytest.raises(SeqzooError, match="state lacks 'm'"):
        mixer(torch.randn(1, 3, 16), {})
