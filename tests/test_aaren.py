"""Aaren ("Attention as an RNN", Feng et al. 2024, arXiv 2405.13956) and its op, seqzoo.ops.prefix_attention.

Property tests (the generic mixer contract is in test_mixer_contract.py):

* the outputs equal causal softmax attention whose queries are all the same learned constant, written out as an
  explicit masked softmax (a cumulative-mean stub, or attention with input-dependent queries, fails this);
* the parallel prefix scan equals the recurrence to 1e-10 in float64 with scores of ±1e3 (numerically stable),
  gradients included;
* ⊕ is associative and commutative, and (−∞, 0, 0) is its identity;
* the state is constant in T (64 vs 4096 tokens);
* with a constant query, y_t depends on the set of x_1 … x_t, not on their order.
"""

from __future__ import annotations

import pytest
import torch

import seqzoo
from seqzoo import SeqzooError
from seqzoo.core import state_numel
from seqzoo.ops import prefix_attention
from seqzoo.ops.prefix_attention import combine, empty_state

F64 = torch.float64


def rand(*shape, seed=0, dtype=F64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64).to(dtype)


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def masked_softmax_attention(q, k, v, scale):
    """Causal softmax attention where every position's query is the same ``q [H, K]`` — the explicit [T, T] form."""
    T = k.shape[1]
    queries = q.expand(k.shape[0], T, *q.shape)                                   # [B, T, H, K], all equal
    logits = torch.einsum("bthk,bshk->bhts", queries, k) * scale
    logits = logits.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    return torch.einsum("bhts,bshv->bthv", torch.softmax(logits, dim=-1), v)


def build(**kwargs):
    torch.manual_seed(0)
    return seqzoo.build_mixer("aaren", 32, **kwargs).double().eval()


# -- the mechanism: attention of a constant query over every prefix ---------------------------------------------------
@pytest.mark.parametrize("impl", ["recurrent", "parallel"])
def test_mixer_equals_masked_softmax_attention_with_a_constant_query(impl):
    mixer = build(impl=impl, n_heads=4)
    x = rand(2, 23, 32, seed=1)
    with torch.no_grad():
        y, _ = mixer(x)
        k, v = mixer.project(x)
        o = masked_softmax_attention(mixer.query, k, v, mixer.head_dim ** -0.5)
        expected = mixer.o_proj(o.reshape(2, 23, 32))
    assert rel(y, expected) <= 1e-12
    # the probe is live: the prefix outputs differ from a plain running mean of the values
    running_mean = torch.cumsum(v, 1) / torch.arange(1, 24, dtype=F64)[None, :, None, None]
    assert rel(o, running_mean) > 1e-2


@pytest.mark.parametrize("impl", ["recurrent", "parallel"])
@pytest.mark.parametrize("chunk_size", [None, 4])
def test_op_equals_masked_softmax_with_huge_scores(impl, chunk_size):
    q, k, v = rand(3, 8, seed=2), rand(2, 37, 3, 8, seed=3) * 1000.0, rand(2, 37, 3, 5, seed=4)
    scores = torch.einsum("bthk,hk->bth", k, q) * 8 ** -0.5
    assert scores.abs().max() > 1e3                                                  # really huge scores
    o, state = prefix_attention(q, k, v, impl=impl, chunk_size=chunk_size)
    assert torch.isfinite(o).all() and all(torch.isfinite(t).all() for t in state.values())
    assert rel(o, masked_softmax_attention(q, k, v, 8 ** -0.5)) <= 1e-12


def test_scan_equals_recurrent_float64_with_huge_scores_and_gradients():
    q = rand(4, 16, seed=5)
    k = (rand(2, 45, 4, 16, seed=6) * 600.0).requires_grad_(True)                  # scores beyond ±1e3
    v = rand(2, 45, 4, 16, seed=7).requires_grad_(True)
    init = {"m": rand(2, 4, seed=8) * 1e3, "u": rand(2, 4, seed=9).abs() + 0.1, "w": rand(2, 4, 16, seed=10)}
    weight = rand(2, 45, 4, 16, seed=11)
    assert (torch.einsum("bthk,hk->bth", k, q) * 16 ** -0.5).abs().max() > 1e3
    results = {}
    for impl in ("recurrent", "parallel"):
        o, state = prefix_attention(q, k, v, initial_state=init, impl=impl)
        gk, gv = torch.autograd.grad((o * weight).sum(), (k, v))
        results[impl] = (o, state, gk, gv)
    o_r, s_r, gk_r, gv_r = results["recurrent"]
    o_p, s_p, gk_p, gv_p = results["parallel"]
    assert torch.isfinite(o_r).all() and torch.isfinite(gk_r).all()
    assert rel(o_p, o_r) <= 1e-10
    for key in ("m", "u", "w"):
        assert rel(s_p[key], s_r[key]) <= 1e-10, key
    assert rel(gk_p, gk_r) <= 1e-10 and rel(gv_p, gv_r) <= 1e-10
    # the scores are huge, yet the gradients are the exact ones of the explicit softmax
    kk, vv = k.detach().requires_grad_(True), v.detach().requires_grad_(True)
    ref = masked_softmax_attention(q, kk, vv, 16 ** -0.5)
    gk_ref, gv_ref = torch.autograd.grad((ref * weight).sum(), (kk, vv))
    o0, _ = prefix_attention(q, kk, vv, impl="parallel")
    gk0, gv0 = torch.autograd.grad((o0 * weight).sum(), (kk, vv))
    assert rel(gk0, gk_ref) <= 1e-10 and rel(gv0, gv_ref) <= 1e-10


def test_state_continues_the_sequence():
    q, k, v = rand(2, 4, seed=12), rand(1, 30, 2, 4, seed=13) * 100, rand(1, 30, 2, 3, seed=14)
    full, s_full = prefix_attention(q, k, v, impl="parallel")
    first, s = prefix_attention(q, k[:, :11], v[:, :11], impl="parallel")
    rest, s = prefix_attention(q, k[:, 11:], v[:, 11:], initial_state=s, impl="recurrent")
    assert rel(torch.cat([first, rest], 1), full) <= 1e-12
    assert all(rel(s[key], s_full[key]) <= 1e-12 for key in s)


# -- the operator ⊕ -------------------------------------------------------------------------------------------------
def triple(seed, shape=(5, 3), width=4):
    return rand(*shape, seed=seed) * 1e3, rand(*shape, seed=seed + 1).abs() + 0.5, rand(*shape, width, seed=seed + 2)


def test_combine_is_associative_commutative_with_identity():
    a, b, c = triple(20), triple(30), triple(40)
    left, right = combine(combine(a, b), c), combine(a, combine(b, c))
    for x, y in zip(left, right):
        assert rel(x, y) <= 1e-12
    for x, y in zip(combine(a, b), combine(b, a)):
        assert rel(x, y) <= 1e-12
    e = empty_state(5, 3, 4, dtype=F64)
    identity = (e["m"], e["u"], e["w"])
    for x, y in zip(combine(identity, a), a):
        assert torch.equal(x, y)
    # a token is the leaf (s, 1, v): combining leaves gives max, Σ e^{s − m}, Σ e^{s − m} v
    s1, s2, v1, v2 = torch.tensor(3.0, dtype=F64), torch.tensor(5.0, dtype=F64), rand(4, seed=1), rand(4, seed=2)
    m, u, w = combine((s1, torch.tensor(1.0, dtype=F64), v1), (s2, torch.tensor(1.0, dtype=F64), v2))
    assert m == 5.0 and abs(u - (1 + torch.exp(torch.tensor(-2.0, dtype=F64)))) < 1e-15
    assert rel(w, v2 + torch.exp(torch.tensor(-2.0, dtype=F64)) * v1) <= 1e-15


# -- constant state, order invariance --------------------------------------------------------------------------------
def test_state_size_is_constant_in_sequence_length():
    torch.manual_seed(0)
    mixer = seqzoo.build_mixer("aaren", 64)
    sizes = {}
    with torch.no_grad():
        for T in (64, 4096):
            _, state = mixer(torch.randn(1, T, 64))
            sizes[T] = state_numel(state)
    assert sizes[64] == sizes[4096] == mixer.state_size(4096) == mixer.n_heads * (mixer.head_dim + 2)


def test_output_depends_on_the_set_of_prefix_tokens_not_their_order():
    mixer = build()
    x = rand(2, 17, 32, seed=15)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    x_perm = torch.cat([x[:, :16][:, perm], x[:, 16:]], dim=1)
    with torch.no_grad():
        y, _ = mixer(x)
        y_perm, _ = mixer(x_perm)
    assert rel(y_perm[:, 16:], y[:, 16:]) <= 1e-12      # the last output sees the same set of tokens
    assert rel(y_perm[:, :16], y[:, :16]) > 1e-3         # earlier prefixes are different sets


def test_query_is_a_learned_input_independent_parameter():
    mixer = build()
    assert isinstance(mixer.query, torch.nn.Parameter) and mixer.query.shape == (4, 8)
    x = rand(1, 9, 32, seed=16).requires_grad_(True)
    y, _ = mixer(x)
    y.sum().backward()
    assert mixer.query.grad is not None and mixer.query.grad.abs().sum() > 0


# -- errors ------------------------------------------------------------------------------------------------------------
def test_bad_inputs_are_one_line_errors():
    q, k, v = rand(3, 8), rand(2, 5, 3, 8), rand(2, 5, 3, 4)
    with pytest.raises(SeqzooError, match=r"q must have shape \[H, K\]"):
        prefix_attention(rand(2, 8), k, v)
    with pytest.raises(SeqzooError, match="impl 'chunk' is not valid for prefix_attention"):
        prefix_attention(q, k, v, impl="chunk")
    with pytest.raises(SeqzooError, match="initial_state must be a dict with keys m, u, w"):
        prefix_attention(q, k, v, initial_state={"S": torch.zeros(2, 3)})
    with pytest.raises(SeqzooError, match="n_heads=3 does not divide d_model=32"):
        seqzoo.build_mixer("aaren", 32, n_heads=3)
    with pytest.raises(SeqzooError, match="aaren state lacks 'm'"):
        build()(rand(1, 3, 32), {"u": torch.zeros(1, 4), "w": torch.zeros(1, 4, 8)})


# -- the reproduction's smoke run --------------------------------------------------------------------------------------
def test_repro_quick_mode_runs():
    from seqzoo.repro import get_repro

    result = get_repro("aaren").run(True)
    names = [c.name for c in result.checks]
    assert any("state" in n for n in names) and any("MSE" in n for n in names)
    sizes = result.details["state_size"]
    assert sizes["aaren"]["64"] == sizes["aaren"]["long"] and sizes["attention"]["long"] > sizes["attention"]["64"]
