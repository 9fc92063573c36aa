"""SSA (arXiv 2306.01705): sub-sampled attention in training, dense at inference, self-ensembles."""

import math

import pytest
import torch

import seqzoo
from seqzoo.core.errors import SeqzooError
from seqzoo.mixers.attention.ssa import (dense_attention, partition, self_ensemble_log_probs, subsampled_attention,
                                         subsampling)
from seqzoo.models import CausalLM, ModelConfig
from seqzoo.ops import softmax_attention

D = 64


def pair(**opts):
    torch.manual_seed(5)
    impl = opts.pop("impl", "math")
    plain = seqzoo.build_mixer("attention", D, impl=impl).double().eval()
    ssa = seqzoo.build_mixer("ssa_attention", D, impl=impl, **opts).double().eval()
    ssa.load_state_dict(plain.state_dict())
    return plain, ssa


def qkv(B=2, T=70, H=4, Hkv=4, Dh=8, L=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, Dh, generator=g, dtype=torch.float64)
    k = torch.randn(B, T, Hkv, Dh, generator=g, dtype=torch.float64)
    v = torch.randn(B, T, Hkv, Dh, generator=g, dtype=torch.float64)
    cache = None
    if L:
        cache = {"k": torch.randn(B, L, Hkv, Dh, generator=g, dtype=torch.float64),
                 "v": torch.randn(B, L, Hkv, Dh, generator=g, dtype=torch.float64)}
    return q, k, v, cache


def masked_reference(q, k, v, cache, pattern):
    """Dense softmax attention restricted to ``pattern`` ([B, H, T, L + T]): the mask-based form of SSA."""
    if cache is not None:
        k, v = torch.cat([cache["k"], k], 1), torch.cat([cache["v"], v], 1)
    groups = q.shape[2] // k.shape[2]
    kh = k.transpose(1, 2).repeat_interleave(groups, 1)
    vh = v.transpose(1, 2).repeat_interleave(groups, 1)
    s = (q.transpose(1, 2) @ kh.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    return (torch.softmax(s.masked_fill(~pattern, float("-inf")), -1) @ vh).transpose(1, 2)


# -- inference: dense -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", ["math", "sdpa"])
def test_eval_mode_equals_attention_exactly(impl):
    plain, ssa = pair(impl=impl)
    x = torch.randn(2, 37, D, dtype=torch.float64)
    with torch.no_grad():
        y0, s0 = plain(x[:, :20])
        y1, s1 = ssa(x[:, :20])
        assert torch.equal(y0, y1)
        assert torch.equal(plain(x[:, 20:], s0)[0], ssa(x[:, 20:], s1)[0])


def test_training_mode_subsamples_and_dense_attention_context_restores_dense():
    plain, ssa = pair()
    x = torch.randn(2, 80, D, dtype=torch.float64)
    with torch.no_grad():
        ref = plain(x)[0]
        ssa.train()
        y = ssa(x)[0]
        assert (y[:, 40:] - ref[:, 40:]).abs().max() > 1e-3  # queries lost keys
        assert ssa.last_gather["keys_per_query"] == 20  # 80 positions in 4 groups
        with dense_attention(ssa):
            assert torch.equal(ssa(x)[0], ref)
        assert ssa.override is None


# -- training: which keys -------------------------------------------------------------------------------------------
def test_partition_is_a_balanced_partition_and_local_keeps_segments_together():
    for n, groups, segment in ((13, 4, 3), (64, 4, 8), (7, 2, 1), (5, 8, 2)):
        part = partition(3, 2, n, groups, segment=segment, offset=10, generator=torch.Generator().manual_seed(n))
        assert part.shape == (3, 2, groups, -(-n // groups))
        for b in range(3):
            for h in range(2):
                real = part[b, h][part[b, h] < 10 + n]
                assert sorted(real.tolist()) == list(range(10, 10 + n))  # every position exactly once
                sizes = (part[b, h] < 10 + n).sum(-1)
                assert sizes.max() - sizes.min() <= 1  # balanced
                group_of = {int(p): c for c in range(groups) for p in part[b, h, c] if p < 10 + n}
                runs = [list(range(10 + s, min(10 + s + segment, 10 + n))) for s in range(0, n, segment)]
                # a segment is split only where a group boundary falls inside it
                split = sum(len({group_of[p] for p in run}) - 1 for run in runs)
                assert split <= groups - 1


@pytest.mark.parametrize("sampling", ["local", "uniform"])
@pytest.mark.parametrize("L,Hkv", [(0, 4), (9, 2)])
def test_subsampled_output_is_attention_within_groups(sampling, L, Hkv):
    q, k, v, cache = qkv(L=L, Hkv=Hkv)
    torch.manual_seed(1)
    o, new_cache, info = subsampled_attention(q, k, v, fraction=0.25, sampling=sampling, segment=4, cache=cache,
                                              return_pattern=True)
    pattern = info["pattern"]
    torch.testing.assert_close(o, masked_reference(q, k, v, cache, pattern), rtol=1e-12, atol=1e-12)
    T, N = q.shape[1], L + q.shape[1]
    assert new_cache["k"].shape[1] == N  # the cache keeps every key
    assert info["keys_per_query"] == -(-L // 4) + -(-T // 4)
    future = torch.arange(N)[None, :] > (L + torch.arange(T))[:, None]
    assert not pattern[..., future].any(), "a query attended to a future key"
    assert pattern[..., torch.arange(T), L + torch.arange(T)].all(), "a query did not attend to itself"
    # the kept sets come from a partition: two queries either share their group (and so their earlier keys) or
    # attend to disjoint sets
    for t1, t2 in ((3, 40), (10, 11), (0, T - 1), (25, 52)):
        shared = pattern[:, :, t2, L + t1]
        same = (pattern[:, :, t2, :L + t1 + 1] == pattern[:, :, t1, :L + t1 + 1]).all(-1)
        disjoint = ~(pattern[:, :, t2] & pattern[:, :, t1]).any(-1)
        assert torch.where(shared, same, disjoint).all()
    counts = pattern.sum(-1).double()  # about 1/4 of the visible keys
    assert abs((counts / torch.arange(L + 1, N + 1))[..., T // 2:].mean().item() - 0.25) < 0.06


@pytest.mark.parametrize("sampling", ["local", "uniform"])
def test_kept_fraction_and_keys_per_query_shrink(sampling):
    T = 512
    q, k, v, _ = qkv(B=2, T=T, H=2, Hkv=2)
    torch.manual_seed(2)
    _, _, info = subsampled_attention(q, k, v, fraction=0.25, sampling=sampling, return_pattern=True)
    kept = info["pattern"].sum(-1).double() / torch.arange(1, T + 1)
    assert abs(kept[..., T // 4:].mean().item() - 0.25) < 0.02  # each query attends to about a quarter
    assert info["keys_per_query"] == T // 4  # what is materialised: T/4 keys per query instead of T


def test_gathered_memory_really_shrinks():
    """Bytes autograd keeps for the backward pass of one attention layer: sub-sampled vs dense (explicit)."""
    from seqzoo.repro.ssa import saved_activation_bytes

    def saved(name, **opts):
        torch.manual_seed(0)
        model = CausalLM(ModelConfig(vocab_size=32, d_model=32, n_layers=1, mixer=name, ffn="none",
                                     mixer_options={name: opts}))
        ids = torch.randint(0, 32, (2, 513))
        return saved_activation_bytes(model, {"inputs": ids[:, :-1], "targets": ids[:, 1:]})

    dense = saved("attention", impl="math")
    assert saved("ssa_attention", fraction=0.25) < 0.5 * dense
    assert saved("ssa_attention", fraction=0.125) < 0.35 * dense


def test_local_sampling_prefers_near_keys_uniform_does_not():
    n, groups, segment = 256, 4, 8
    rates = {}
    for sampling, seg in (("local", segment), ("uniform", 1)):
        part = partition(200, 1, n, groups, segment=seg, generator=torch.Generator().manual_seed(3))
        group_of = torch.empty(200, n + 1, dtype=torch.int64)
        group_of.scatter_(1, part[:, 0].flatten(1), torch.arange(groups).repeat_interleave(part.shape[-1])
                          .expand(200, -1))
        group_of = group_of[:, :n]
        same = group_of[:, :, None] == group_of[:, None, :]  # [samples, query, key]
        rates[sampling] = torch.stack([same.diagonal(-d, 1, 2).double().mean() for d in range(1, 33)])
    local, uniform = rates["local"], rates["uniform"]
    assert (local[:-1] >= local[1:] - 0.02).all()  # non-increasing with distance
    assert local[0] > 0.85 and local[0] > 3 * uniform[0]
    # beyond a segment: another segment shares the group with probability (segments per group - 1) / (segments - 1)
    far = (n / groups / segment - 1) / (n / segment - 1)
    assert (local[2 * segment:] - far).abs().max() < 0.02 and abs(far - 1 / groups) < 0.03
    assert (uniform - (n / groups - 1) / (n - 1)).abs().max() < 0.03  # unbiased: 1/r-ish at every distance


def test_per_sample_and_per_head_subsets_differ_and_follow_the_torch_seed():
    q, k, v, _ = qkv(B=2, T=64, H=4)
    torch.manual_seed(7)
    a = subsampled_attention(q, k, v, fraction=0.25, return_pattern=True)[2]["pattern"]
    torch.manual_seed(7)
    b = subsampled_attention(q, k, v, fraction=0.25, return_pattern=True)[2]["pattern"]
    assert torch.equal(a, b)
    assert not torch.equal(a[0, 0], a[0, 1]) and not torch.equal(a[0, 0], a[1, 0])


def test_fraction_one_is_dense():
    q, k, v, cache = qkv(L=7, Hkv=2)
    o, _, _ = subsampled_attention(q, k, v, fraction=1.0, cache=cache)
    ref, _ = softmax_attention(q, k, v, cache=cache, impl="math")
    torch.testing.assert_close(o, ref, rtol=1e-12, atol=1e-12)


# -- ensembles ------------------------------------------------------------------------------------------------------
def test_ensemble_of_one_full_pass_equals_attention():
    plain, ssa = pair(fraction=1.0, ensemble=1)
    x = torch.randn(2, 45, D, dtype=torch.float64)
    with torch.no_grad():
        y0, s0 = plain(x[:, :30])
        y1, s1 = ssa(x[:, :30])
        torch.testing.assert_close(y1, y0, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(ssa(x[:, 30:], s1)[0], plain(x[:, 30:], s0)[0], rtol=1e-12, atol=1e-12)
    assert ssa.last_gather is not None  # it did take the sub-sampled path


def test_ensemble_is_the_mean_of_subsampled_passes():
    _, ssa = pair(fraction=0.25, ensemble=3)
    x = torch.randn(1, 70, D, dtype=torch.float64)
    with torch.no_grad():
        torch.manual_seed(11)
        y = ssa(x)[0]
        ssa.train()
        torch.manual_seed(11)
        passes = [ssa(x)[0] for _ in range(3)]
    torch.testing.assert_close(y, sum(passes) / 3, rtol=1e-12, atol=1e-12)
    assert (passes[0] - passes[1]).abs().max() > 1e-6


def test_self_ensemble_log_probs():
    torch.manual_seed(0)
    model = CausalLM(ModelConfig(vocab_size=40, d_model=32, n_layers=2, mixer="ssa_attention",
                                 mixer_options={"ssa_attention": {"fraction": 0.25, "segment": 2}})).double()
    ids = torch.randint(0, 40, (2, 48))
    torch.manual_seed(4)
    lp = self_ensemble_log_probs(model, ids, 3)
    torch.manual_seed(4)
    with subsampling(model), torch.no_grad():
        probs = [torch.softmax(model.eval()(ids)[0], -1) for _ in range(3)]
    torch.testing.assert_close(lp.exp(), sum(probs) / 3, rtol=1e-10, atol=1e-12)
    assert model.blocks[0].mixer.override is None
    with torch.no_grad():
        dense = torch.log_softmax(model(ids)[0], -1)
    assert (lp - dense).abs().max() > 1e-4


@pytest.mark.parametrize("opts,match", [({"fraction": 0.0}, "fraction"), ({"fraction": 1.5}, "fraction"),
                                        ({"fraction": 0.3}, "1/r"), ({"segment": 0}, "segment"),
                                        ({"sampling": "far"}, "unknown sampling"),
                                        ({"ensemble": -1}, "ensemble"), ({"window": 8}, "unknown option")])
def test_bad_options(opts, match):
    with pytest.raises(SeqzooError, match=match) as err:
        seqzoo.build_mixer("ssa_attention", D, **opts)
    assert "\n" not in str(err.value)


def test_repro_quick_runs():
    from seqzoo.repro import get_repro

    result = get_repro("ssa").run(True)
    assert len(result.checks) == 4
    assert all(math.isfinite(v) for v in result.details["val_loss"].values())
