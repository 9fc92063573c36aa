"""The shared short causal depthwise convolution: explicit formula, streaming state, causality."""

import pytest
import torch

from seqzoo.core.errors import SeqzooError
from seqzoo.mixers.short_conv import ShortConv


def test_matches_explicit_sum_and_streams():
    torch.manual_seed(0)
    conv = ShortConv(5, 4).double()
    x = torch.randn(2, 11, 5, dtype=torch.double)
    y, state = conv(x)
    w, b = conv.weight, conv.bias
    ref = torch.stack([sum(w[:, i] * x[:, t - 3 + i] for i in range(4) if t - 3 + i >= 0) + b for t in range(11)], 1)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    parts, s = [], None
    for piece in (x[:, :1], x[:, 1:3], x[:, 3:4], x[:, 4:]):
        out, s = conv(piece, s)
        parts.append(out)
    torch.testing.assert_close(torch.cat(parts, 1), y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s, state)
    torch.testing.assert_close(state, x[:, -3:])


def test_is_causal_and_validates():
    conv = ShortConv(3, 3, activation="silu").double()
    x = torch.randn(1, 8, 3, dtype=torch.double)
    x2 = x.clone()
    x2[:, 5:] += 1
    assert torch.equal(conv(x)[0][:, :5], conv(x2)[0][:, :5])
    with pytest.raises(SeqzooError, match="valid: None, 'silu'"):
        ShortConv(3, 3, activation="relu")
