"""Mechanism property tests for softmax attention (+ RoPE, GQA, sliding window), linear attention and retention.

Each test compares against an explicit computation written here, independently of ``seqzoo.ops``, or checks a
property an obvious stub lacks (no RoPE, no window, wrong decays, uniform weights, class token at the start).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import seqzoo
from seqzoo import SeqzooError
from seqzoo.mixers.attention.rope import Rotary, apply_rope, rope_cos_sin, rope_frequencies, rope_positions
from seqzoo.mixers.linear.linear_attention import FEATURE_MAPS

D = 64
F64 = torch.float64


def rand(*shape, seed=0, dtype=F64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64).to(dtype)


def rel_err(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def build(name, seed=0, **kwargs):
    torch.manual_seed(seed)
    return seqzoo.build_mixer(name, D, **kwargs).double().eval()


def heads(t, n):
    """[B, T, n·d] → [B, n, T, d]."""
    b, length, width = t.shape
    return t.view(b, length, n, width // n).transpose(1, 2)


def explicit_rope(t, base=10000.0, offset=0):
    """RoPE written out plane by plane: dims (i, i + d/2) rotated by (offset + n)·base^(−2i/d). t: [B, H, T, d]."""
    d = t.shape[-1]
    out = t.clone()
    pos = torch.arange(t.shape[2], dtype=F64) + offset
    for i in range(d // 2):
        angle = pos * base ** (-2.0 * i / d)
        a, b = t[..., i], t[..., i + d // 2]
        out[..., i] = a * torch.cos(angle) - b * torch.sin(angle)
        out[..., i + d // 2] = a * torch.sin(angle) + b * torch.cos(angle)
    return out


def explicit_attention(m, x, window=None):
    """softmax(q kᵀ/√d + causal/window mask) v, written out, with the mixer's weights."""
    h, hk = m.n_heads, m.n_kv_heads
    q, k, v = heads(x @ m.q_proj.weight.T, h), heads(x @ m.k_proj.weight.T, hk), heads(x @ m.v_proj.weight.T, hk)
    if m.rotary is not None:
        q, k = explicit_rope(q, m.rotary.base), explicit_rope(k, m.rotary.base)
    k, v = k.repeat_interleave(h // hk, dim=1), v.repeat_interleave(h // hk, dim=1)
    length = x.shape[1]
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    n, s = torch.arange(length)[:, None], torch.arange(length)[None, :]
    allowed = s <= n
    if window is not None:
        allowed &= s > n - window
    scores = scores.masked_fill(~allowed, float("-inf"))
    o = scores.softmax(-1) @ v  # [B, H, T, d]
    return o.transpose(1, 2).reshape(x.shape) @ m.o_proj.weight.T


ATTN_IMPLS = seqzoo.mixers.attention.softmax.SoftmaxAttention.IMPLS
LIN_IMPLS = seqzoo.mixers.linear.linear_attention.LinearAttention.IMPLS
RET_IMPLS = seqzoo.mixers.linear.retention.MultiScaleRetention.IMPLS


# == softmax attention ===============================================================================================
@pytest.mark.parametrize("impl", ATTN_IMPLS)
@pytest.mark.parametrize("rope", [False, True])
def test_attention_equals_explicit_masked_softmax(impl, rope):
    m = build("attention", rope=rope, impl=impl)
    x = rand(2, 19, D, seed=1)
    with torch.no_grad():
        y, _ = m(x)
    assert rel_err(y, explicit_attention(m, x)) <= 1e-10


def test_rope_matches_plane_rotations():
    d, base = 16, 10000.0
    t = rand(2, 3, 11, d, seed=2)  # [B, H, T, d]
    rot = Rotary(d, base)
    got = rot(t.transpose(1, 2), torch.tensor([0, 5])).transpose(1, 2)
    assert rel_err(got[:1], explicit_rope(t[:1], base)) <= 1e-12
    assert rel_err(got[1:], explicit_rope(t[1:], base, offset=5)) <= 1e-12  # per-row offsets
    assert rel_err(got.norm(dim=-1), t.norm(dim=-1)) <= 1e-12  # a rotation keeps lengths


def test_rope_scores_depend_only_on_relative_position():
    d = 16
    q, k = rand(1, 1, 1, d, seed=3), rand(1, 1, 1, d, seed=4)
    freqs = rope_frequencies(d, 10000.0)

    def rotated(v, pos):
        cos, sin = rope_cos_sin(torch.tensor([[pos]]), freqs, F64)
        return apply_rope(v, cos, sin)

    def score(m, n):
        return (rotated(q, m) * rotated(k, n)).sum().item()

    for m, n in [(0, 0), (7, 3), (3, 7), (20, 1)]:
        for shift in (1, 13, 1000):
            assert abs(score(m + shift, n + shift) - score(m, n)) <= 1e-9 * (1 + abs(score(m, n)))
    # ... and they do depend on it (an identity "rotation" fails here)
    distinct = {round(score(10, 10 - r), 6) for r in range(6)}
    assert len(distinct) == 6


@pytest.mark.parametrize("name", ["attention", "retention"])
def test_rotation_gives_shift_invariant_outputs(name):
    """From an empty state, starting the positions at p instead of 0 changes nothing (only n − m matters),
    while removing the rotation (attention: rope=False) does change the outputs."""
    m = build(name)
    x = rand(2, 12, D, seed=5)
    with torch.no_grad():
        y0, _ = m(x)
        state = m.init_state(2, dtype=F64)
        state["pos"] = torch.tensor([37, 1000])
        y_shift, s_shift = m(x, state)
        assert rel_err(y_shift, y0) <= 1e-9
        assert s_shift["pos"].tolist() == [49, 1012]
        if name == "attention":
            plain = build(name, rope=False)
            y_plain, _ = plain(x)
            assert rel_err(y_plain, y0) > 1e-3


@pytest.mark.parametrize("impl", ATTN_IMPLS)
def test_sliding_window(impl):
    w, length = 4, 16
    m = build("attention", window=w, impl=impl)
    x = rand(1, length, D, seed=6)
    with torch.no_grad():
        y, _ = m(x)
        assert rel_err(y, explicit_attention(m, x, window=w)) <= 1e-10
        t = 10
        far = x.clone()
        far[:, : t - w + 1] += rand(1, t - w + 1, D, seed=7)  # positions ≤ t − w
        y_far, _ = m(far)
        assert rel_err(y_far[:, t:], y[:, t:]) <= 1e-12, "tokens outside the window leaked in"
        near = x.clone()
        near[:, t - w + 1] += 1.0  # the oldest position inside the window of t
        y_near, _ = m(near)
        assert rel_err(y_near[:, t], y[:, t]) > 1e-6, "a token inside the window had no effect"
        # streaming one token at a time keeps only `window` keys and gives the same outputs
        state, ys = None, []
        for i in range(length):
            y_i, state = m(x[:, i:i + 1], state)
            ys.append(y_i)
            assert state["k"].shape[1] == min(i + 1, w)
        assert rel_err(torch.cat(ys, 1), y) <= 1e-10
    assert m.state_size(64) == m.state_size(w) < build("attention").state_size(64)


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
def test_grouped_query_attention_equals_standard_attention(n_kv_heads):
    """GQA == multi-head attention whose key/value heads are copies shared by each group of query heads."""
    gqa = build("attention", n_heads=4, n_kv_heads=n_kv_heads)
    std = build("attention", n_heads=4, seed=99)
    group, d = 4 // n_kv_heads, D // 4
    with torch.no_grad():
        std.q_proj.weight.copy_(gqa.q_proj.weight)
        std.o_proj.weight.copy_(gqa.o_proj.weight)
        for proj in ("k_proj", "v_proj"):
            w = getattr(gqa, proj).weight.view(n_kv_heads, d, D).repeat_interleave(group, dim=0)
            getattr(std, proj).weight.copy_(w.reshape(D, D))
        x = rand(2, 15, D, seed=8)
        y_gqa, state = gqa(x)
        y_std, _ = std(x)
    assert rel_err(y_gqa, y_std) <= 1e-10
    assert rel_err(y_gqa, explicit_attention(gqa, x)) <= 1e-10
    assert state["k"].shape == (2, 15, n_kv_heads, d)
    assert gqa.k_proj.weight.shape == (n_kv_heads * d, D)


# == linear attention ================================================================================================
def explicit_linear_attention(m, x):
    phi, _ = FEATURE_MAPS[m.feature_map]
    h = m.n_heads
    q = phi(heads(x @ m.q_proj.weight.T, h))
    k = phi(heads(x @ m.k_proj.weight.T, h))
    v = heads(x @ m.v_proj.weight.T, h)
    a = (q @ k.transpose(-1, -2)).tril()  # [B, H, T, T]: φ(q_n)·φ(k_m) for m ≤ n
    if m.normalize:
        o = (a @ v) / (a.sum(-1, keepdim=True) + 1e-6)
    else:
        o = (a @ v) / math.sqrt(q.shape[-1])
    return o.transpose(1, 2).reshape(x.shape) @ m.o_proj.weight.T


@pytest.mark.parametrize("impl", LIN_IMPLS)
@pytest.mark.parametrize("feature_map,normalize", [("elu+1", True), ("relu", True), ("softplus", True),
                                                   ("identity", False), ("silu", False), ("elu+1", False)])
def test_linear_attention_equals_quadratic_form(feature_map, normalize, impl):
    m = build("linear_attention", feature_map=feature_map, normalize=normalize, impl=impl, chunk_size=8)
    x = rand(2, 21, D, seed=9)
    with torch.no_grad():
        y, state = m(x)
    assert rel_err(y, explicit_linear_attention(m, x)) <= 1e-10
    if normalize:  # the last state column is the normaliser z = Σ φ(k_t)
        phi, _ = FEATURE_MAPS[feature_map]
        z = phi(heads(x @ m.k_proj.weight.T, m.n_heads)).sum(2)  # [B, H, d]
        assert rel_err(state["S"][..., -1], z) <= 1e-10


def test_linear_attention_normaliser_makes_weights_sum_to_one():
    """With normalisation, equal values give the value back (a convex combination); a stub without it does not."""
    m = build("linear_attention", chunk_size=8)
    with torch.no_grad():
        m.v_proj.weight.zero_()
        m.v_proj.weight[:, 0] = 1.0  # v_t = x_t[0] in every channel
        x = rand(1, 10, D, seed=10)
        x[..., 0] = 2.5
        q, k, v = m.features(x)
        o, _ = m.attend(q, k, v, m.init_state(1, dtype=F64)["S"])
    assert (o - 2.5).abs().max() <= 1e-5  # up to ε = 1e-6 in the denominator


# == retention ======================================================================================================
def explicit_retention(m, x):
    """Y = W_O(swish(X W_G) ⊙ GroupNorm((Q Kᵀ/√d ⊙ D) V)), D_nm = γ_h^{n−m} (n ≥ m), written out."""
    h, length = m.n_heads, x.shape[1]
    q, k, v = (t.transpose(1, 2) for t in m.project(x, torch.zeros(x.shape[0], dtype=torch.long)))
    n, s = torch.arange(length, dtype=F64)[:, None], torch.arange(length, dtype=F64)[None, :]
    gammas = torch.tensor([1 - 2.0 ** (-5 - i) for i in range(h)], dtype=F64)
    decay = torch.where(n >= s, gammas[:, None, None] ** (n - s).clamp(min=0), torch.zeros((), dtype=F64))
    o = ((q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1]) * decay) @ v  # [B, H, T, d]
    o = o.transpose(1, 2).reshape(-1, D)
    o = F.group_norm(o, h, m.norm_weight, m.norm_bias, 1e-5).view(x.shape)
    return (F.silu(x @ m.g_proj.weight.T) * o) @ m.o_proj.weight.T


def test_retention_rotation_is_explicit_rotation():
    m = build("retention")
    x = rand(1, 9, D, seed=11)
    q, _, _ = m.project(x, torch.zeros(1, dtype=torch.long))
    raw = heads(x @ m.q_proj.weight.T, m.n_heads)
    d = m.head_dim
    angles = torch.arange(9, dtype=F64)[:, None] / 10000.0 ** torch.linspace(0, 1, d // 2, dtype=F64)  # [T, d/2]
    a, b = raw[..., : d // 2], raw[..., d // 2:]
    want = torch.cat((a * angles.cos() - b * angles.sin(), a * angles.sin() + b * angles.cos()), -1)
    assert rel_err(q.transpose(1, 2), want) <= 1e-12


def test_retention_forms_agree_with_explicit_parallel_form():
    x = rand(2, 70, D, seed=12)
    ref = build("retention", impl="recurrent")
    with torch.no_grad():
        y_ref, s_ref = ref(x)
        assert rel_err(y_ref, explicit_retention(ref, x)) <= 1e-10
        for impl in ("parallel", "chunk"):
            for chunk_size in (1, 4, 16, 64):
                m = build("retention", impl=impl, chunk_size=chunk_size)
                y, s = m(x)
                assert rel_err(y, y_ref) <= 1e-10, f"{impl}, chunk_size={chunk_size}: {rel_err(y, y_ref):.3g}"
                assert rel_err(s["S"], s_ref["S"]) <= 1e-10
                if impl == "parallel":
                    break  # chunk_size does not affect the parallel form


def test_retention_decays_are_retnet_schedule():
    for n_heads in (1, 4, 8):
        m = seqzoo.build_mixer("retention", D, n_heads=n_heads)
        want = torch.tensor([1 - 2.0 ** (-5 - h) for h in range(n_heads)], dtype=F64)
        assert torch.equal(m.decays, want)
    assert torch.equal(build("retention").decays, torch.tensor([0.96875, 0.984375, 0.9921875, 0.99609375],
                                                              dtype=F64))


@pytest.mark.parametrize("impl", RET_IMPLS)
def test_retention_state_decays_by_gamma_per_step(impl):
    """Feeding one token and then zeros (k = v = 0) shrinks head h's state by γ_h per step."""
    m = build("retention", impl=impl, chunk_size=4)
    x = torch.zeros(1, 11, D, dtype=F64)
    x[:, 0] = rand(D, seed=13)
    with torch.no_grad():
        _, s1 = m(x[:, :1])
        _, s = m(x[:, 1:], s1)
    gammas = torch.tensor([1 - 2.0 ** (-5 - h) for h in range(4)], dtype=F64)
    assert rel_err(s["S"], s1["S"] * gammas[None, :, None, None] ** 10) <= 1e-12


@pytest.mark.parametrize("impl", RET_IMPLS)
def test_retention_gamma_zero_keeps_only_the_current_token(impl):
    """γ = 0: o_n = d^{-1/2} (q_n · k_n) v_n before the norm and gate, in the mixer and in the op itself."""
    from seqzoo.ops import decay_linear_attention

    m = build("retention", gammas=[0.0] * 4, impl=impl, chunk_size=4)
    x = rand(2, 10, D, seed=14)
    with torch.no_grad():
        q, k, v = m.project(x, torch.zeros(2, dtype=torch.long))
        o, _ = m.retain(q, k, v, m.init_state(2, dtype=F64)["S"])
        want = (q * k).sum(-1, keepdim=True) / math.sqrt(m.head_dim) * v
        assert rel_err(o, want) <= 1e-10
        g = torch.full((2, 10, 4), -1e4, dtype=F64)  # exp(−1e4) == 0 in float64
        o_op, _ = decay_linear_attention(q, k, v, g, impl=impl, chunk_size=4)
        assert rel_err(o_op, want) <= 1e-10


def test_retention_class_token_at_the_end_sees_every_patch():
    """ViR places the class token last: its output depends on every earlier patch, and under causal retention the
    first token's output depends on no later one (so a class token at the start could not aggregate)."""
    m = build("retention")
    x = rand(1, 40, D, seed=15).requires_grad_(True)
    y, _ = m(x)
    (grad_last,) = torch.autograd.grad(y[0, -1].square().sum(), x, retain_graph=True)
    assert (grad_last[0].abs().sum(-1) > 0).all(), "the last token ignores some earlier position"
    (grad_first,) = torch.autograd.grad(y[0, 0].square().sum(), x)
    assert (grad_first[0, 1:] == 0).all()


# == bad options =====================================================================================================
@pytest.mark.parametrize("name,kwargs,words", [
    ("linear_attention", {"feature_map": "cosine"}, ["cosine", "elu+1", "relu"]),
    ("linear_attention", {"feature_map": "identity"}, ["normalize"]),
    ("linear_attention", {"n_heads": 5}, ["n_heads", "64"]),
    ("linear_attention", {"impl": "fast"}, ["fast", "chunk"]),
    ("attention", {"n_heads": 5}, ["n_heads", "64"]),
    ("attention", {"n_heads": 4, "n_kv_heads": 3}, ["n_kv_heads", "n_heads"]),
    ("attention", {"window": 0}, ["window"]),
    ("attention", {"impl": "flash"}, ["flash", "sdpa"]),
    ("retention", {"n_heads": 7}, ["n_heads", "64"]),
    ("retention", {"gammas": [0.9]}, ["gammas"]),
    ("retention", {"chunk_size": 0}, ["chunk_size"]),
])
def test_bad_options_are_one_line_errors(name, kwargs, words):
    with pytest.raises(SeqzooError) as info:
        seqzoo.build_mixer(name, D, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


def test_rope_needs_even_head_width():
    with pytest.raises(SeqzooError, match="even"):
        seqzoo.build_mixer("attention", 12, n_heads=4)
    seqzoo.build_mixer("attention", 12, n_heads=4, rope=False)  # fine without RoPE


def test_positions_helper():
    assert rope_positions(torch.tensor([0, 3]), 2).tolist() == [[0, 1], [3, 4]]
