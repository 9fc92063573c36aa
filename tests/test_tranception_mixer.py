"""Tranception attention (seqzoo/mixers/attention/tranception.py): property tests from the reference notes
(systems-part1.md entry 2): causality through the convolution path (a symmetric-padding convolution fails the same
probe), reduction to standard ALiBi attention with delta kernels, grouped ALiBi slopes, decoding with the state."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import seqzoo
from seqzoo.core.errors import SeqzooError
from seqzoo.mixers.attention.tranception import TranceptionAttention, alibi_slopes


def make(**kw) -> TranceptionAttention:
    torch.manual_seed(0)
    m = seqzoo.build_mixer("tranception", 32, **kw).double().eval()
    with torch.no_grad():  # non-trivial kernels, so the convolution path matters
        for p in m.conv_weights.values():
            p.normal_(0, 0.7)
    return m


def standard_alibi_attention(m: TranceptionAttention, x: torch.Tensor) -> torch.Tensor:
    """Reference: plain causal multi-head attention with standard ALiBi (slopes over all heads), no convolution."""
    B, T, D = x.shape
    H, d = m.n_heads, m.head_dim
    q = m.q_proj(x).view(B, T, H, d).transpose(1, 2)
    k = m.k_proj(x).view(B, T, H, d).transpose(1, 2)
    v = m.v_proj(x).view(B, T, H, d).transpose(1, 2)
    slopes = torch.tensor(alibi_slopes(H), dtype=x.dtype)
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    bias = -slopes[:, None, None] * (i - j)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d) + bias
    scores = scores.masked_fill(j > i, float("-inf"))
    o = torch.softmax(scores, -1) @ v
    return m.o_proj(o.transpose(1, 2).reshape(B, T, D))


def test_alibi_slopes_values():
    assert alibi_slopes(8) == pytest.approx([2 ** (-h) for h in range(1, 9)])
    assert alibi_slopes(4) == pytest.approx([2 ** (-2 * h) for h in range(1, 5)])
    six = alibi_slopes(6)  # 4 slopes of n=4, then every other slope of n=8
    assert six == pytest.approx(alibi_slopes(4) + alibi_slopes(8)[0::2][:2])


def test_grouped_alibi_repeats_slopes_per_group():
    m = seqzoo.build_mixer("tranception", 64, n_heads=8)
    assert m.slopes.tolist() == pytest.approx(alibi_slopes(2) * 4)
    m2 = seqzoo.build_mixer("tranception", 64, n_heads=8, grouped_alibi=False)
    assert m2.slopes.tolist() == pytest.approx(alibi_slopes(8))


@pytest.mark.parametrize("impl", ["math", "sdpa"])
def test_reduction_to_standard_alibi(impl):
    """Delta kernels + standard ALiBi = plain ALiBi attention (float64, 1e-10); random kernels differ."""
    m = make(n_heads=8, grouped_alibi=False, impl=impl)
    x = torch.randn(2, 17, 32, dtype=torch.float64)
    with torch.no_grad():
        ref = standard_alibi_attention(m, x)
        y_conv, _ = m(x)
        assert (y_conv - ref).abs().max() > 1e-3  # the convolutions are live
        for name, p in m.conv_weights.items():
            p.zero_()
            p[..., -1] = 1.0
        y, _ = m(x)
    assert (y - ref).abs().max() <= 1e-10 * ref.abs().max()


def test_grouped_alibi_differs_from_standard():
    m = make(n_heads=8)
    x = torch.randn(1, 12, 32, dtype=torch.float64)
    with torch.no_grad():
        for p in m.conv_weights.values():
            p.zero_()
            p[..., -1] = 1.0
        y, _ = m(x)
        assert (y - standard_alibi_attention(m, x)).abs().max() > 1e-6


def causality_violation(m, x) -> float:
    """Largest change of y[:, :t] when x[:, t:] changes, over a few t."""
    worst = 0.0
    with torch.no_grad():
        y, _ = m(x)
        for t in (1, 5, 11):
            x2 = x.clone()
            x2[:, t:] += torch.randn_like(x2[:, t:])
            y2, _ = m(x2)
            worst = max(worst, float((y2[:, :t] - y[:, :t]).abs().max()))
    return worst


class SymmetricConvTranception(TranceptionAttention):
    """A broken variant: 'same' (symmetric) padding, so position t reads t + κ//2 (must fail the probe)."""

    def convolve(self, window, length):
        seq = window[:, window.shape[1] - length:]  # the new positions only
        kernel = self.combined_kernel(seq.dtype)
        pad = self.max_kernel // 2
        out = F.conv1d(seq.transpose(1, 2), kernel, padding=pad, groups=3 * self.d_model)
        out = out.transpose(1, 2).reshape(seq.shape[0], length, 3, self.n_heads, self.head_dim)
        return out[:, :, 0], out[:, :, 1], out[:, :, 2]


def test_causality_probe_through_the_conv_path():
    m = make(n_heads=8)
    x = torch.randn(2, 16, 32, dtype=torch.float64)
    assert causality_violation(m, x) == 0.0
    broken = SymmetricConvTranception(32, n_heads=8).double().eval()
    broken.load_state_dict(m.state_dict())
    assert causality_violation(broken, x) > 1e-3


def test_decoding_token_by_token_equals_full():
    m = make(n_heads=8)
    x = torch.randn(2, 15, 32, dtype=torch.float64)
    with torch.no_grad():
        y_full, _ = m(x)
        state, ys = None, []
        for t in range(15):
            y, state = m(x[:, t:t + 1], state)
            ys.append(y)
    assert torch.allclose(torch.cat(ys, 1), y_full, atol=1e-12, rtol=0)
    assert state["tail"].shape == (2, 6, 96)  # κ_max − 1 = 6 raw q|k|v projections
    assert state["k"].shape[1] == 15


def test_bad_options_are_one_line_errors():
    with pytest.raises(SeqzooError, match="multiple of the number of head groups"):
        seqzoo.build_mixer("tranception", 48, n_heads=6)
    with pytest.raises(SeqzooError, match="kernel_sizes"):
        seqzoo.build_mixer("tranception", 64, kernel_sizes=(1, 0, 5, 7))
    with pytest.raises(SeqzooError, match="unknown impl"):
        seqzoo.build_mixer("tranception", 64, impl="flash")
    m = seqzoo.build_mixer("tranception", 64)
    with pytest.raises(SeqzooError, match="state lacks"):
        m(torch.randn(1, 3, 64), {"k": torch.zeros(1, 0, 4, 16)})
