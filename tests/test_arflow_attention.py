"""ARFlow's hybrid linear attention (arXiv 2501.16085) against an explicit O(T²) reference built from its definition:
softmax inside the chunk, gated linear attention over earlier chunks, the two added.

Each test fails on an obvious stub: linear attention over every earlier token (chunks ignored), softmax over
all earlier tokens, a missing or wrong decay, the two parts averaged instead of added, a state that forgets the
unfinished chunk.
"""

import pytest
import torch

import seqzoo
from seqzoo.core.errors import SeqzooError
from seqzoo.mixers.linear.linear_attention import FEATURE_MAPS
from seqzoo.ops import decay_linear_attention, softmax_attention

D = 32


def make(dtype=torch.float64, **options):
    torch.manual_seed(3)
    return seqzoo.build_mixer("arflow_attention", D, **options).to(dtype).eval()


def rand(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def rel(a, b) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def reference(q, k, v, alpha, C, within="causal", feature_map="identity"):
    """The definition, one query and one key at a time (float64):

    o_t = Σ_{s in chunk(t), s ≤ t (or all of the chunk)} softmax(q_t·k_s/√d) v_s
        + Σ_{s in earlier chunks} exp(G_t) Π_{chunks c' strictly between} γ_c' (φ(q_t)·φ(k_s)/√d) v_s
    G_t = Σ α over chunk(t) up to t;  γ_c = exp(mean α over chunk c).
    """
    phi = FEATURE_MAPS[feature_map][0]
    B, T, H, d = q.shape
    scale = d ** -0.5
    chunk_of = [t // C for t in range(T)]
    gamma = {c: torch.exp(alpha[:, c * C:(c + 1) * C].mean(1)) for c in range(T // C)}  # complete chunks only
    out = torch.zeros_like(v)
    for t in range(T):
        c = chunk_of[t]
        start = c * C
        stop = t + 1 if within == "causal" else min(start + C, T)
        scores = torch.einsum("bhd,bshd->bsh", q[:, t], k[:, start:stop]) * scale
        out[:, t] += torch.einsum("bsh,bshd->bhd", torch.softmax(scores, dim=1), v[:, start:stop])
        g_t = alpha[:, start:t + 1].sum(1)                                            # [B, H]
        for s in range(start):
            weight = torch.exp(g_t)
            for between in range(chunk_of[s] + 1, c):
                weight = weight * gamma[between]
            sim = (phi(q[:, t]) * phi(k[:, s])).sum(-1) * scale                        # [B, H]
            out[:, t] += (weight * sim)[..., None] * v[:, s]
    return out


def features(mixer, x):
    with torch.no_grad():
        return mixer.features(x)


def run_hybrid(mixer, q, k, v, alpha, sizes):
    state, outs, start = mixer.init_state(q.shape[0], dtype=q.dtype), [], 0
    for size in sizes:
        sl = slice(start, start + size)
        o, state = mixer.hybrid(q[:, sl], k[:, sl], v[:, sl], alpha[:, sl], state)
        outs.append(o)
        start += size
    return torch.cat(outs, 1), state


@pytest.mark.parametrize("chunk, sizes", [(4, [23]), (4, [1] * 23), (5, [3, 9, 1, 10]), (8, [7, 16]), (1, [23])])
@pytest.mark.parametrize("impl", ["math", "sdpa"])
def test_hybrid_equals_explicit_reference(chunk, sizes, impl):
    mixer = make(chunk_size=chunk, impl=impl)
    q, k, v, alpha = features(mixer, rand(2, 23, D, seed=1))
    assert bool((alpha < 0).all())                        # a real, data-dependent decay
    with torch.no_grad():
        o, state = run_hybrid(mixer, q, k, v, alpha, sizes)
    assert rel(o, reference(q, k, v, alpha, chunk)) < 1e-10
    pending = 23 % chunk
    assert state["k"].shape[1] == pending                  # the unfinished chunk's keys are kept
    if pending:
        assert rel(state["g_sum"], alpha[:, 23 - pending:].sum(1)) < 1e-12


@pytest.mark.parametrize("feature_map", ["elu+1", "relu"])
def test_feature_map_applies_to_the_linear_part_only(feature_map):
    mixer = make(chunk_size=4, feature_map=feature_map)
    q, k, v, alpha = features(mixer, rand(1, 14, D, seed=2))
    with torch.no_grad():
        o, _ = run_hybrid(mixer, q, k, v, alpha, [14])
    assert rel(o, reference(q, k, v, alpha, 4, feature_map=feature_map)) < 1e-10
    assert rel(o, reference(q, k, v, alpha, 4)) > 1e-3   # the map matters (the check is live)


def test_single_chunk_is_causal_softmax_attention():
    mixer = make(chunk_size=64)
    q, k, v, alpha = features(mixer, rand(2, 20, D, seed=3))
    with torch.no_grad():
        o, state = run_hybrid(mixer, q, k, v, alpha, [20])
        expect, _ = softmax_attention(q, k, v, impl="math")
    assert rel(o, expect) < 1e-12
    assert state["S"].abs().max() == 0 and state["k"].shape[1] == 20


def test_chunk_size_one_is_value_plus_gated_linear_attention():
    """C = 1: the softmax over one key returns v_t; the rest is decayed linear attention over earlier tokens, i.e.
    decay_linear_attention with g = α minus its own diagonal term (an independent op as the second reference)."""
    mixer = make(chunk_size=1)
    q, k, v, alpha = features(mixer, rand(2, 17, D, seed=4))
    with torch.no_grad():
        o, _ = run_hybrid(mixer, q, k, v, alpha, [17])
        lin, _ = decay_linear_attention(q, k, v, alpha, impl="recurrent")
    scale = mixer.head_dim ** -0.5
    diagonal = (q * k).sum(-1, keepdim=True) * scale * v
    assert rel(o, v + lin - diagonal) < 1e-10


def test_ungated_linear_part_has_no_decay():
    mixer = make(chunk_size=3, gated=False)
    assert mixer.a_proj is None
    q, k, v, alpha = features(mixer, rand(1, 10, D, seed=5))
    assert alpha.abs().max() == 0
    with torch.no_grad():
        o, _ = run_hybrid(mixer, q, k, v, alpha, [10])
    assert rel(o, reference(q, k, v, alpha, 3)) < 1e-10


def test_later_chunks_do_not_change_earlier_chunks():
    for within in ("causal", "full"):
        mixer = make(chunk_size=4, within_chunk=within)
        x = rand(1, 16, D, seed=6)
        x2 = x.clone()
        x2[:, 8:] += rand(1, 8, D, seed=7)
        with torch.no_grad():
            y, _ = mixer(x)
            y2, _ = mixer(x2)
        assert rel(y2[:, :8], y[:, :8]) < 1e-12 and rel(y2[:, 8:], y[:, 8:]) > 1e-6


def test_full_mode_attends_within_the_chunk_and_streams_whole_chunks():
    mixer = make(chunk_size=4, within_chunk="full")
    q, k, v, alpha = features(mixer, rand(2, 12, D, seed=8))
    with torch.no_grad():
        o, _ = run_hybrid(mixer, q, k, v, alpha, [12])
        o_split, _ = run_hybrid(mixer, q, k, v, alpha, [4, 8])
    assert rel(o, reference(q, k, v, alpha, 4, within="full")) < 1e-10
    assert rel(o_split, o) < 1e-12
    # inside a chunk the first token sees the last (ARFlow's whole-image attention)
    x = rand(1, 4, D, seed=9)
    x2 = x.clone()
    x2[:, 3] += 1.0
    with torch.no_grad():
        assert rel(mixer(x2)[0][:, 0], mixer(x)[0][:, 0]) > 1e-6
        with pytest.raises(SeqzooError, match="multiple of chunk_size=4"):
            mixer(rand(1, 6, D, seed=10))


def test_layer_output_is_gated_rmsnorm_of_the_sum():
    mixer = make(chunk_size=4)
    x = rand(2, 10, D, seed=11)
    with torch.no_grad():
        q, k, v, alpha = mixer.features(x)
        o = reference(q, k, v, alpha, 4)
        rms = o / o.pow(2).mean(-1, keepdim=True).add(mixer.norm_eps).sqrt()
        gate = torch.nn.functional.silu(mixer.g_proj(x)).view(o.shape)
        expect = mixer.o_proj((gate * rms).reshape(2, 10, D))
        y, _ = mixer(x)
        # q, k, v are RMS-normalised per head without weights
        assert rel(q.pow(2).mean(-1), torch.ones_like(q[..., 0])) < 1e-4
    assert rel(y, expect) < 1e-10


def test_state_is_bounded_by_the_chunk():
    mixer = make(chunk_size=8)
    sizes = [mixer.state_size(t) for t in (8, 13, 16, 1000, 1005)]
    assert sizes[0] == sizes[2] == sizes[3] and sizes[1] == sizes[4] > sizes[0]
    with torch.no_grad():
        _, s = mixer(rand(1, 13, D))
    assert s["k"].shape == (1, 5, mixer.n_heads, mixer.head_dim)


@pytest.mark.parametrize("options, fragment", [
    ({"chunk_size": 0}, "chunk_size must be a positive int"),
    ({"within_chunk": "window"}, "unknown within_chunk 'window'; valid: causal, full"),
    ({"feature_map": "cos"}, "unknown feature_map 'cos'"),
    ({"gate_normalizer": 0}, "gate_normalizer must be a positive number"),
    ({"gated": 1}, "gated must be true or false"),
    ({"impl": "chunk"}, "unknown impl 'chunk' for arflow_attention; valid: auto, math, sdpa"),
    ({"n_heads": 3}, "does not divide d_model"),
])
def test_bad_options_are_one_line_errors(options, fragment):
    with pytest.raises(SeqzooError) as err:
        seqzoo.build_mixer("arflow_attention", D, **options)
    assert fragment in str(err.value) and "\n" not in str(err.value)
