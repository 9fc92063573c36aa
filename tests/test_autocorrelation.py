"""Auto-Correlation and series decomposition (Autoformer, arXiv 2106.13008), each against an explicit computation
written here: the circular correlation sum, periodic signals, the roll-and-weight sum, moving averages."""

from __future__ import annotations

import math

import pytest
import torch

import seqzoo
from seqzoo import SeqzooError
from seqzoo.mixers.attention.autocorrelation import autocorrelation, circular_correlation, num_delays
from seqzoo.mixers.attention.series_decomp import SeriesDecomposition

F64 = torch.float64


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def explicit_correlation(q, k):
    """R(τ) = Σ_t q[(t+τ) mod L] k[t] for 1-D q, k, written as a double loop."""
    L = q.shape[0]
    return torch.tensor([sum(float(q[(t + tau) % L] * k[t]) for t in range(L)) for tau in range(L)], dtype=F64)


@pytest.mark.parametrize("impl", ["fft", "direct"])
@pytest.mark.parametrize("L", [1, 2, 17, 32])
def test_correlation_equals_circular_sum(impl, L):
    q, k = rand(3, L, seed=1), rand(3, L, seed=2)
    got = circular_correlation(q, k, impl)
    for row in range(3):
        assert rel(got[row], explicit_correlation(q[row], k[row])) <= 1e-12
    if L > 2:  # not symmetric in q and k: R_{q,k}(τ) = R_{k,q}(−τ)
        assert rel(got, circular_correlation(k, q, impl)) > 1e-3
        assert rel(got, circular_correlation(k, q, impl).roll(-1, -1).flip(-1)) <= 1e-12


def periodic(L, period, channels, seed):
    """A random pattern of ``period`` steps repeated along time: ``[1, L, 1, channels]``."""
    pattern = rand(period, channels, seed=seed)
    return pattern[torch.arange(L) % period].view(1, L, 1, channels)


@pytest.mark.parametrize("L,period", [(96, 12), (70, 7), (64, 16)])
def test_periodic_signal_picks_multiples_of_the_period_and_reproduces_itself(L, period):
    x = 0.1 * periodic(L, period, 5, seed=L)  # small values: the softmax spreads over the delays
    reproduced = 0
    for factor in (1.0, 2.0):
        o, info = autocorrelation(x, x, x, factor=factor)
        k = num_delays(L, factor)
        assert info.delays.shape[-1] == k == int(factor * math.log(L))
        # R(τ) is largest exactly at the L/period multiples of the period, so they come first
        first = info.delays[0, 0, :min(k, L // period)].tolist()
        assert all(d % period == 0 for d in first), info.delays
        if k <= L // period:  # every delay a whole number of periods: the aggregation returns the signal
            assert rel(o, x) <= 1e-12
            assert info.weights.max() < 0.9  # several delays really take part
            reproduced += 1
    assert reproduced >= 1
    # a non-periodic input with the same values is not reproduced (the check above is not vacuous)
    shuffled = x[:, torch.randperm(L, generator=torch.Generator().manual_seed(0))]
    o, _ = autocorrelation(shuffled, shuffled, shuffled)
    assert rel(o, shuffled) > 1e-2


@pytest.mark.parametrize("per_head", [False, True])
def test_aggregation_is_the_roll_and_weight_sum(per_head):
    B, L, H, E = 2, 29, 3, 4
    q, k, v = rand(B, L, H, E, seed=3), rand(B, L, H, E, seed=4), rand(B, L, H, 6, seed=5)
    o, info = autocorrelation(q, k, v, factor=2.0, per_head=per_head)
    n = int(2.0 * math.log(L))
    assert info.delays.shape == (B, H, n)
    for b in range(B):
        # the correlation averaged over channels (and heads unless per head), by the explicit sum
        corr = torch.stack([torch.stack([explicit_correlation(q[b, :, h, e], k[b, :, h, e]) for e in range(E)])
                            .mean(0) for h in range(H)])                          # [H, L]
        if not per_head:
            corr = corr.mean(0, keepdim=True).expand(H, L)
        for h in range(H):
            top = corr[h].topk(n)
            assert info.delays[b, h].tolist() == top.indices.tolist()
            weights = torch.softmax(top.values, 0)
            assert rel(info.weights[b, h], weights) <= 1e-12
            want = sum(w * torch.roll(v[b, :, h], -int(tau), dims=0) for w, tau in zip(weights, top.indices))
            assert rel(o[b, :, h], want) <= 1e-12
    if per_head:
        assert not torch.equal(info.delays[:, 0], info.delays[:, 1])
    else:
        assert torch.equal(info.delays[:, 0], info.delays[:, 2])


def test_batch_delays_are_shared_and_chosen_from_the_batch_mean():
    q, k, v = rand(3, 40, 2, 4, seed=6), rand(3, 40, 2, 4, seed=7), rand(3, 40, 2, 4, seed=8)
    _, own = autocorrelation(q, k, v)
    o, shared = autocorrelation(q, k, v, batch_delays=True)
    assert (shared.delays == shared.delays[:1]).all()
    assert not (own.delays == own.delays[:1]).all()
    assert shared.delays[0, 0].tolist() == own.correlation.mean(0)[0].topk(3).indices.tolist()
    assert rel(shared.weights, torch.softmax(own.correlation.gather(-1, shared.delays), -1)) <= 1e-12
    mixer = seqzoo.build_mixer("autocorrelation", 64, batch_delays=True).double()
    x = rand(3, 40, 64, seed=9)
    mixer.train()(x)
    assert (mixer.last_info.delays == mixer.last_info.delays[:1]).all()
    mixer.eval()(x)  # per sequence at inference, as in the reference
    assert not (mixer.last_info.delays == mixer.last_info.delays[:1]).all()


def test_keys_of_another_length_are_padded_or_cut():
    q = rand(1, 20, 2, 4, seed=10)
    k, v = rand(1, 12, 2, 4, seed=11), rand(1, 12, 2, 3, seed=12)
    zeros = torch.zeros(1, 8, 2, 4, dtype=F64)
    o_short, _ = autocorrelation(q, k, v)
    o_padded, _ = autocorrelation(q, torch.cat([k, zeros], 1), torch.cat([v, zeros[..., :3]], 1))
    assert torch.equal(o_short, o_padded)
    k_long, v_long = rand(1, 30, 2, 4, seed=13), rand(1, 30, 2, 3, seed=14)
    o_long, _ = autocorrelation(q, k_long, v_long)
    assert torch.equal(o_long, autocorrelation(q, k_long[:, :20], v_long[:, :20])[0])


def test_mixer_composes_projections_and_op():
    mixer = seqzoo.build_mixer("autocorrelation", 64).double().eval()
    assert type(mixer).causal is False
    x = rand(2, 33, 64, seed=15)
    y, state = mixer(x)
    q, k, v = (p(x).view(2, 33, 4, 16) for p in (mixer.q_proj, mixer.k_proj, mixer.v_proj))
    o, _ = autocorrelation(q, k, v)
    assert rel(y, mixer.o_proj(o.reshape(2, 33, 64))) <= 1e-12
    assert state["pos"].tolist() == [33, 33]
    # non-causal: the first output depends on the last input
    x2 = x.clone()
    x2[:, -1] += 1.0
    assert rel(mixer(x2)[0][:, 0], y[:, 0]) > 1e-6


def test_bad_options_are_one_line_errors():
    for kwargs, pattern in (({"factor": -1}, "factor must be a positive number"),
                            ({"per_head": "yes"}, "per_head must be True or False"),
                            ({"impl": "conv"}, "valid: auto, direct, fft")):
        with pytest.raises(SeqzooError, match=pattern):
            seqzoo.build_mixer("autocorrelation", 64, **kwargs)
    with pytest.raises(SeqzooError, match="k must have shape"):
        autocorrelation(rand(1, 5, 2, 4), rand(1, 5, 2, 3), rand(1, 5, 2, 3))


# -- series decomposition ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kernel_size", [1, 4, 25])
def test_decomposition_sums_to_input_and_constant_is_its_own_trend(kernel_size):
    decomp = SeriesDecomposition(kernel_size)
    x = rand(2, 50, 3, seed=16)
    seasonal, trend = decomp(x)
    assert seasonal.shape == trend.shape == x.shape
    assert rel(seasonal + trend, x) <= 1e-15
    const = torch.full((1, 30, 2), 3.7, dtype=F64)
    s_const, t_const = decomp(const)
    assert torch.allclose(t_const, const, rtol=0, atol=1e-14) and s_const.abs().max() <= 1e-14
    if kernel_size == 1:
        assert torch.equal(trend, x)


def test_moving_average_trend_values():
    decomp = SeriesDecomposition(5)
    x = rand(1, 40, 2, seed=17)
    _, trend = decomp(x)
    padded = torch.cat([x[:, :1].expand(-1, 2, -1), x, x[:, -1:].expand(-1, 2, -1)], 1)
    want = torch.stack([padded[:, t:t + 5].mean(1) for t in range(40)], 1)
    assert rel(trend, want) <= 1e-14
    assert trend[0, 0, 0] == pytest.approx((3 * x[0, 0, 0] + x[0, 1, 0] + x[0, 2, 0]).item() / 5)


def test_seasonal_of_a_ramp_vanishes_away_from_the_edges():
    decomp = SeriesDecomposition(25)
    ramp = (torch.arange(100, dtype=F64) * 0.3 - 4.0).view(1, 100, 1).expand(2, 100, 2)
    seasonal, trend = decomp(ramp)
    assert seasonal[:, 12:-12].abs().max() <= 1e-12  # a centred average of a line is the line
    assert seasonal[:, :12].abs().max() > 0.1  # edge padding bends the trend at the ends
    # a seasonal wave on top of the ramp is what the seasonal part keeps (period 25 = the window)
    wave = torch.sin(2 * math.pi * torch.arange(100, dtype=F64) / 25).view(1, 100, 1)
    seasonal, _ = decomp(ramp[:1, :, :1] + wave)
    assert rel(seasonal[:, 12:-12], wave[:, 12:-12]) <= 1e-12


def test_decomposition_rejects_bad_input():
    with pytest.raises(SeqzooError, match="kernel_size must be a positive int"):
        SeriesDecomposition(0)
    with pytest.raises(SeqzooError, match=r"expects a float tensor \[B, T, C\]"):
        SeriesDecomposition(3)(torch.zeros(4, 5))
