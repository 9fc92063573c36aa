"""Tests of softmax_attention: SDPA vs the math reference vs a hand-built masked softmax, KV caches of every
split, sliding windows, grouped-query heads and causality across a cache.

Papers: "Attention Is All You Need" (arXiv 1706.03762), softmax(q·k / √D) v under a causal mask; GQA
(arXiv 2305.13245), query head h reads kv head h // (H / Hkv); Longformer (arXiv 2004.05150), a key is visible
when 0 ≤ i − p_j < window.
"""

from __future__ import annotations

import math
import random

import pytest
import torch

from seqzoo.core.errors import SeqzooError
from seqzoo.ops import softmax_attention

B, H, HKV, D = 2, 4, 2, 8


def make_qkv(T: int, heads: int = H, kv_heads: int = HKV, dtype=torch.float64, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, heads, D, generator=gen, dtype=torch.float64)
    k = torch.randn(B, T, kv_heads, D, generator=gen, dtype=torch.float64)
    v = torch.randn(B, T, kv_heads, D, generator=gen, dtype=torch.float64)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def hand_attention(q, k, v, window=None):
    """Explicit loops: query i sees keys j ≤ i (and i − j < window); query head h uses kv head h // groups."""
    Bq, T, Hq, Dq = q.shape
    groups = Hq // k.shape[2]
    out = torch.zeros(Bq, T, Hq, v.shape[-1], dtype=torch.float64)
    for b in range(Bq):
        for h in range(Hq):
            for i in range(T):
                keys = [j for j in range(i + 1) if window is None or i - j < window]
                logits = torch.stack([q[b, i, h] @ k[b, j, h // groups] for j in keys]).double() / math.sqrt(Dq)
                weights = torch.softmax(logits, dim=0)
                out[b, i, h] = sum(w * v[b, j, h // groups].double() for w, j in zip(weights, keys))
    return out


@pytest.mark.parametrize("window", (None, 1, 3, 100))
@pytest.mark.parametrize("kv_heads", (1, 2, 4))
def test_sdpa_math_and_hand_built_agree(window, kv_heads):
    q, k, v = make_qkv(9, kv_heads=kv_heads)
    expected = hand_attention(q, k, v, window)
    for impl in ("sdpa", "math", "auto"):
        o, _ = softmax_attention(q, k, v, window=window, impl=impl)
        assert o.shape == (B, 9, H, D) and o.dtype == torch.float64
        assert torch.allclose(o, expected, atol=1e-12), impl


def _run_in_pieces(q, k, v, sizes, window, impl, cache=None):
    outputs, start = [], 0
    for size in sizes:
        o, cache = softmax_attention(q[:, start:start + size], k[:, start:start + size], v[:, start:start + size],
                                     cache=cache, window=window, impl=impl)
        outputs.append(o)
        start += size
        if window is not None:
            assert cache["k"].shape[1] <= window
    return torch.cat(outputs, dim=1), cache


@pytest.mark.parametrize("window", (None, 1, 4, 11))
@pytest.mark.parametrize("impl", ("sdpa", "math"))
@pytest.mark.parametrize("seed", (0, 1, 2))
def test_cache_any_split_equals_one_call(window, impl, seed):
    T = 23
    q, k, v = make_qkv(T, seed=seed)
    full, full_cache = softmax_attention(q, k, v, window=window, impl=impl)
    rng = random.Random(seed)
    sizes, left = [], T - 6
    while left > 0:                              # a prefill in chunks of random sizes …
        sizes.append(min(left, rng.randint(1, 7)))
        left -= sizes[-1]
    sizes += [1] * 6                             # … then one token at a time
    pieces, cache = _run_in_pieces(q, k, v, sizes, window, impl)
    assert torch.allclose(pieces, full, atol=1e-12)
    assert torch.equal(cache["k"], full_cache["k"]) and torch.equal(cache["v"], full_cache["v"])


def test_new_cache_contents_and_window_trim():
    q, k, v = make_qkv(10)
    _, cache = softmax_attention(q, k, v)
    assert torch.equal(cache["k"], k) and torch.equal(cache["v"], v)
    _, cache = softmax_attention(q, k, v, window=4)
    assert torch.equal(cache["k"], k[:, -4:]) and torch.equal(cache["v"], v[:, -4:])
    assert cache["k"].is_contiguous()


@pytest.mark.parametrize("impl", ("sdpa", "math"))
def test_empty_cache_and_single_token(impl):
    q, k, v = make_qkv(5)
    empty = {"k": k[:, :0], "v": v[:, :0]}
    o, cache = softmax_attention(q, k, v, cache=empty, impl=impl)
    o_ref, _ = softmax_attention(q, k, v, impl="math")
    assert torch.allclose(o, o_ref, atol=1e-12) and cache["k"].shape[1] == 5
    o1, cache1 = softmax_attention(q[:, :1], k[:, :1], v[:, :1], cache=empty, impl=impl)
    assert torch.allclose(o1, o_ref[:, :1], atol=1e-12) and cache1["k"].shape[1] == 1


@pytest.mark.parametrize("impl", ("sdpa", "math"))
@pytest.mark.parametrize("window", (None, 3))
def test_queries_after_a_cache_do_not_see_future_keys(impl, window):
    q, k, v = make_qkv(12)
    _, cache = softmax_attention(q[:, :5], k[:, :5], v[:, :5], window=window, impl=impl)
    o, _ = softmax_attention(q[:, 5:], k[:, 5:], v[:, 5:], cache=cache, window=window, impl=impl)
    k2, v2 = k.clone(), v.clone()
    k2[:, 9:] += 10.0                           # change the keys/values of positions 9 … 11
    v2[:, 9:] -= 5.0
    o2, _ = softmax_attention(q[:, 5:], k2[:, 5:], v2[:, 5:], cache=cache, window=window, impl=impl)
    assert torch.equal(o[:, :4], o2[:, :4])     # queries 5 … 8 never read them
    assert not torch.allclose(o[:, 4:], o2[:, 4:])


@pytest.mark.parametrize("window", (None, 4))
def test_float32_close_to_float64(window):
    q, k, v = make_qkv(19)
    o_ref, _ = softmax_attention(q, k, v, window=window, impl="math")
    for impl in ("sdpa", "math"):
        o, _ = softmax_attention(q.float(), k.float(), v.float(), window=window, impl=impl)
        assert o.dtype == torch.float32
        assert ((o.double() - o_ref).norm() / o_ref.norm()).item() <= 1e-5


def test_bfloat16_runs_and_is_close():
    q, k, v = make_qkv(16, dtype=torch.bfloat16)
    o_ref, _ = softmax_attention(q.double(), k.double(), v.double(), impl="math")
    for impl in ("sdpa", "math"):
        o, cache = softmax_attention(q, k, v, window=5, impl=impl)
        assert o.dtype == torch.bfloat16 and cache["k"].dtype == torch.bfloat16
    o, _ = softmax_attention(q, k, v, impl="sdpa")
    assert ((o.double() - o_ref).norm() / o_ref.norm()).item() <= 2e-2


def test_gradients_sdpa_match_math():
    q, k, v = make_qkv(7)
    cache = {"k": torch.randn(B, 3, HKV, D, dtype=torch.float64), "v": torch.randn(B, 3, HKV, D, dtype=torch.float64)}

    def grads(impl):
        leaves = [t.clone().requires_grad_() for t in (q, k, v, cache["k"], cache["v"])]
        o, _ = softmax_attention(*leaves[:3], cache={"k": leaves[3], "v": leaves[4]}, window=5, impl=impl)
        return torch.autograd.grad((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o)).sum(), leaves)

    for g, g_ref in zip(grads("sdpa"), grads("math")):
        assert torch.allclose(g, g_ref, atol=1e-10)


def test_bad_inputs_raise_seqzoo_error():
    q, k, v = make_qkv(5)
    with pytest.raises(SeqzooError, match="impl 'foo' is not valid for softmax_attention; valid: auto, sdpa, math"):
        softmax_attention(q, k, v, impl="foo")
    with pytest.raises(SeqzooError, match="multiple of the key/value heads"):
        softmax_attention(q, *make_qkv(5, kv_heads=3)[1:])
    with pytest.raises(SeqzooError, match="q must have 4 dims"):
        softmax_attention(q[0], k, v)
    with pytest.raises(SeqzooError, match="Tk == Tq"):
        softmax_attention(q, k[:, :4], v[:, :4])
    with pytest.raises(SeqzooError, match="v must have shape"):
        softmax_attention(q, k, v[:, :, :1])
    with pytest.raises(SeqzooError, match="window must be a positive int"):
        softmax_attention(q, k, v, window=0)
    with pytest.raises(SeqzooError, match="cache must be None or a dict"):
        softmax_attention(q, k, v, cache={"k": k})
    with pytest.raises(SeqzooError, match=r"cache\['k'\] must have shape"):
        softmax_attention(q, k, v, cache={"k": k[..., :4], "v": v})
