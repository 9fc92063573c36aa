"""ProbSparse attention (Informer, arXiv 2012.07436): the properties it promises, each against an explicit
computation written here.

* u = L (a large factor): exactly full attention (non-masked and masked);
* lazy queries output mean(V) (running mean when masked), active ones exact attention rows;
* the active queries are exactly the top-u by the *sampled* measure max − mean, computed here key by key;
* a query with uniform scores has measure 0 and is lazy;
* the work (FLOPs of the score and value products, counted by torch's FlopCounterMode) grows like L ln L.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import seqzoo
from seqzoo import SeqzooError
from seqzoo.mixers.attention.probsparse import probsparse_attention, probsparse_counts
from seqzoo.ops import softmax_attention

F64 = torch.float64
IMPLS = ["dense", "sparse"]


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def explicit_attention(q, k, v, masked):
    """Softmax attention ``[B, T, H, D]`` written out (queries are the last positions of the keys)."""
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    if masked:
        lq, lk = q.shape[1], k.shape[1]
        visible = torch.arange(lk)[None, :] <= torch.arange(lk - lq, lk)[:, None]
        scores = scores.masked_fill(~visible, float("-inf"))
    return torch.einsum("bhqk,bkhd->bqhd", torch.softmax(scores, -1), v)


def qkv(T, seed=0, B=2, H=3, D=8, Lk=None):
    Lk = T if Lk is None else Lk
    return rand(B, T, H, D, seed=seed), rand(B, Lk, H, D, seed=seed + 1), rand(B, Lk, H, D, seed=seed + 2)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("masked", [False, True])
def test_all_queries_active_is_full_attention(impl, masked):
    q, k, v = qkv(40)
    assert probsparse_counts(40, 40, 100.0) == (40, 40)
    o, info = probsparse_attention(q, k, v, factor=100.0, masked=masked, impl=impl)
    assert info.active.shape[-1] == 40
    assert rel(o, explicit_attention(q, k, v, masked)) <= 1e-12
    if masked:  # and the library's causal attention
        assert rel(o, softmax_attention(q, k, v, impl="math")[0]) <= 1e-12


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("masked", [False, True])
def test_lazy_rows_are_running_mean_and_active_rows_exact(impl, masked):
    T = 60
    q, k, v = qkv(T, seed=3)
    o, info = probsparse_attention(q, k, v, factor=2.0, masked=masked, impl=impl)
    n_sample, n_top = probsparse_counts(T, T, 2.0)
    assert (n_sample, n_top) == (10, 10) and info.active.shape == (2, 3, 10)
    full = explicit_attention(q, k, v, masked)
    for b in range(2):
        for h in range(3):
            active = set(info.active[b, h].tolist())
            assert len(active) == n_top
            for i in range(T):
                if i in active:
                    want = full[b, i, h]
                elif masked:
                    want = v[b, :i + 1, h].mean(0)  # the running mean up to the query's own position
                else:
                    want = v[b, :, h].mean(0)
                assert rel(o[b, i, h], want) <= 1e-12, (b, h, i, i in active)
    # the lazy rows really differ from attention (the check above is not vacuous)
    lazy = [i for i in range(T) if i not in set(info.active[0, 0].tolist())]
    assert rel(o[0, lazy, 0], full[0, lazy, 0]) > 1e-2


def explicit_measure(q, k, sample_index):
    """M̄_i = max_{j∈S_i} s_ij − mean_{j∈S_i} s_ij, key by key. q, k: [T, D] of one batch row and head."""
    out = []
    for i in range(q.shape[0]):
        scores = [float(q[i] @ k[j]) / math.sqrt(q.shape[1]) for j in sample_index[i].tolist()]
        out.append(max(scores) - sum(scores) / len(scores))
    return torch.tensor(out, dtype=F64)


@pytest.mark.parametrize("masked", [False, True])
def test_active_queries_are_the_top_u_by_the_sampled_measure(masked):
    T = 50
    q, k, v = qkv(T, seed=5)
    o, info = probsparse_attention(q, k, v, factor=3.0, masked=masked, generator=torch.Generator().manual_seed(9))
    n_sample, n_top = probsparse_counts(T, T, 3.0)
    assert info.sample_index.shape == (T, n_sample) and n_sample < T
    # the sample is reused with sample_index: same output
    o2, _ = probsparse_attention(q, k, v, factor=3.0, masked=masked, sample_index=info.sample_index)
    assert torch.equal(o, o2)
    differs_from_full_measure = False
    for b in range(2):
        for h in range(3):
            m = explicit_measure(q[b, :, h], k[b, :, h], info.sample_index)
            assert rel(info.measure[b, h], m) <= 1e-12
            want = set(m.topk(n_top).indices.tolist())
            assert set(info.active[b, h].tolist()) == want
            # the selection uses the sampled estimate, not the exact measure over all keys
            exact = explicit_measure(q[b, :, h], k[b, :, h], torch.arange(T).expand(T, T))
            differs_from_full_measure |= set(exact.topk(n_top).indices.tolist()) != want
    assert differs_from_full_measure


def test_uniform_query_has_zero_measure_and_is_lazy():
    T = 30
    q, k, v = qkv(T, seed=7, B=1, H=1)
    q[0, 4] = 0.0  # every score of query 4 is 0: uniform attention
    o, info = probsparse_attention(q, k, v, factor=2.0)
    assert info.measure[0, 0, 4] == 0.0 and info.measure[0, 0].min() == 0.0
    assert 4 not in info.active[0, 0].tolist()
    assert torch.allclose(o[0, 4, 0], v[0, :, 0].mean(0), rtol=0, atol=1e-15)


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def test_work_grows_like_L_log_L():
    per_length, dense = {}, {}
    for T in (128, 256, 1024):
        q, k, v = qkv(T, seed=1, B=1, H=1, D=8)
        with torch.no_grad():
            flops = count_flops(lambda: probsparse_attention(q, k, v, impl="sparse"))
            _, info = probsparse_attention(q, k, v, impl="sparse")
            n_sample, n_top = probsparse_counts(T, T, 5.0)
            assert info.score_entries == T * n_sample + n_top * T
            # sampled scores (T·U·D) + active scores (u·T·D) + their values (u·T·D), 2 FLOPs per multiply-add
            assert flops == 2 * 8 * (T * n_sample + 2 * n_top * T)
            per_length[T] = flops / (T * math.ceil(math.log(T)))
            if T == 1024:
                dense[T] = count_flops(lambda: probsparse_attention(q, k, v, impl="dense"))
    ratios = [per_length[T] / per_length[128] for T in per_length]
    assert all(0.99 < r < 1.01 for r in ratios), per_length  # exactly c·⌈ln L⌉ scores per query: L log L
    n_sample = probsparse_counts(1024, 1024, 5.0)[0]
    assert dense[1024] == 2 * 8 * (1024 * n_sample + 2 * 1024 * 1024)  # the reference is quadratic
    assert per_length[1024] * 1024 * math.ceil(math.log(1024)) < dense[1024] / 5


# -- the mixer --------------------------------------------------------------------------------------------------------
def build(seed=0, **kwargs):
    torch.manual_seed(seed)
    return seqzoo.build_mixer("probsparse", 64, **kwargs).double().eval()


def heads(mixer, t):
    return t.view(*t.shape[:2], mixer.n_heads, mixer.head_dim)


@pytest.mark.parametrize("causal", [False, True])
def test_mixer_with_large_factor_is_multi_head_attention(causal):
    mixer = build(factor=100.0, causal=causal)
    x = rand(2, 23, 64, seed=11)
    y, state = mixer(x)
    q, k, v = (heads(mixer, p(x)) for p in (mixer.q_proj, mixer.k_proj, mixer.v_proj))
    want = mixer.o_proj(explicit_attention(q, k, v, causal).reshape(2, 23, 64))
    assert rel(y, want) <= 1e-12
    assert state["k"].shape == (2, 23, 4, 16)
    assert type(mixer).causal is False  # the contract flag: not chunk-invariant, whatever the option


def test_mixer_default_is_sparse_and_lazy_rows_use_mean_of_values():
    mixer = build()
    x = rand(1, 200, 64, seed=12)
    y, _ = mixer(x)
    info = mixer.last_info
    assert info.active.shape[-1] == 5 * math.ceil(math.log(200)) < 200
    q, k, v = (heads(mixer, p(x)) for p in (mixer.q_proj, mixer.k_proj, mixer.v_proj))
    o, _ = probsparse_attention(q, k, v, sample_index=info.sample_index)
    assert rel(y, mixer.o_proj(o.reshape(1, 200, 64))) <= 1e-12
    lazy = sorted(set(range(200)) - set(info.active[0, 0].tolist()))
    assert len(lazy) == 170
    assert rel(o[0, lazy, 0], v[0, :, 0].mean(0).expand(170, -1)) <= 1e-12
    y2, _ = build()(x)
    assert torch.equal(y, y2)  # eval mode: the key sample is fixed by the seed


def test_decode_mode_one_token_at_a_time_is_causal_attention():
    mixer = build(causal=True)
    x = rand(1, 12, 64, seed=13)
    state, ys = None, []
    for t in range(12):
        y, state = mixer(x[:, t:t + 1], state)
        assert mixer.last_info.active.shape[-1] == 1  # a single query is always active
        ys.append(y)
    q, k, v = (heads(mixer, p(x)) for p in (mixer.q_proj, mixer.k_proj, mixer.v_proj))
    want = mixer.o_proj(softmax_attention(q, k, v, impl="math")[0].reshape(1, 12, 64))
    assert rel(torch.cat(ys, 1), want) <= 1e-12
    # one call over the same 12 tokens is ProbSparse, not causal attention: hence causal = False
    y_one, _ = build(causal=True, factor=1.0)(x)
    assert rel(y_one, want) > 1e-3


def test_sampling_modes():
    x = rand(1, 40, 64, seed=14)
    train = build(factor=2.0).train()
    torch.manual_seed(1)
    train(x)
    first = train.last_info.sample_index.clone()
    train(x)
    assert not torch.equal(first, train.last_info.sample_index)  # fresh samples per training step
    fixed = build(factor=2.0, sample="fixed", seed=3).train()
    fixed(x)
    a = fixed.last_info.sample_index.clone()
    fixed(x)
    assert torch.equal(a, fixed.last_info.sample_index)
    random_eval = build(factor=2.0, sample="random")
    random_eval(x)
    b = random_eval.last_info.sample_index.clone()
    random_eval(x)
    assert not torch.equal(b, random_eval.last_info.sample_index)


def test_bad_options_are_one_line_errors():
    for kwargs, pattern in (({"factor": 0}, "factor must be a positive number"),
                            ({"sample": "often"}, "unknown sample 'often' for probsparse; valid: auto, fixed"),
                            ({"causal": "yes"}, "causal must be True or False"),
                            ({"n_heads": 5}, "does not divide d_model"),
                            ({"impl": "flash"}, "valid: auto, dense, sparse")):
        with pytest.raises(SeqzooError, match=pattern) as err:
            seqzoo.build_mixer("probsparse", 64, **kwargs)
        assert "\n" not in str(err.value)
    q, k, v = qkv(5)
    with pytest.raises(SeqzooError, match="sample_index must be int64"):
        probsparse_attention(q, k, v, sample_index=torch.zeros(5, 2, dtype=torch.int64))
    with pytest.raises(SeqzooError, match="L_K ≥ L_Q"):
        probsparse_attention(q, k[:, :3], v[:, :3], masked=True)
