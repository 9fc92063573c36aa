"""Combiner (Ren et al. 2021, arXiv 2107.05768): property tests beyond the mixer contract.

The implied dense attention matrix of the structured factorisation (Fixed and Axial, max and mean pooling) equals
an explicit position-by-position construction, is a proper causal distribution with non-zero probability on every
previous position (full attention, unlike a local/sparse stub), and y = P V; one block spanning the sequence is
exact causal softmax attention; the state (partial block + block summaries) streams in any split.
"""

import pytest
import torch

import seqzoo
from seqzoo.core.errors import SeqzooError

D, H = 16, 2
VARIANTS = [("fixed", "max"), ("fixed", "mean"), ("axial", "max")]


def make(**kwargs):
    torch.manual_seed(0)
    return seqzoo.build_mixer("combiner", D, n_heads=H, **kwargs).double().eval()


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def heads(mixer, x):
    q, k, v = mixer.project(x, torch.zeros(x.shape[0], dtype=torch.int64))
    return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)          # [B, H, T, d]


def explicit_matrix(mixer, x):
    """Combiner's p(j | i) built position by position from the paper's definitions."""
    q, k, _ = heads(mixer, x)
    T, s, scale = x.shape[1], mixer.block_size, mixer.head_dim ** -0.5
    pool = (lambda t: t.amax(-2)) if mixer.pooling == "max" else (lambda t: t.mean(-2))
    P = torch.zeros(*q.shape[:2], T, T, dtype=x.dtype)
    for i in range(T):
        n, col = divmod(i, s)
        own = list(range(n * s, i + 1))
        logits = [(q[..., i, :] * k[..., j, :]).sum(-1, keepdim=True) for j in own]   # direct terms
        within = []                                                          # q(j | Ω^r) per earlier block
        for r in range(n):
            rows = slice(r * s, (r + 1) * s)
            if mixer.variant == "fixed":
                key, query = pool(k[..., rows, :]), pool(q[..., rows, :])
            else:                                   # axial: reached through column `col` of row r
                key, query = k[..., r * s + col, :], q[..., r * s + col, :]
            logits.append((q[..., i, :] * key).sum(-1, keepdim=True))
            within.append(torch.softmax((k[..., rows, :] * query[..., None, :]).sum(-1) * scale, dim=-1))
        probs = torch.softmax(torch.cat(logits, dim=-1) * scale, dim=-1)    # one joint normaliser
        for a, j in enumerate(own):
            P[..., i, j] = probs[..., a]
        for r in range(n):
            P[..., i, r * s:(r + 1) * s] = probs[..., len(own) + r, None] * within[r]
    return P


@pytest.mark.parametrize("variant,pooling", VARIANTS)
def test_implied_attention_is_a_full_causal_distribution_and_gives_the_output(variant, pooling):
    mixer = make(block_size=4, variant=variant, pooling=pooling)
    x = rand(2, 13, D)                                                       # 3 full blocks and a partial one
    with torch.no_grad():
        P = mixer.implied_attention(x)
        y, _ = mixer(x)
        ref = explicit_matrix(mixer, x)
        _, _, v = heads(mixer, x)
    assert P.shape == (2, H, 13, 13)
    assert (P - ref).abs().max() <= 1e-12
    assert (P.sum(-1) - 1.0).abs().max() <= 1e-12                            # rows are distributions
    assert torch.all(P.triu(1) == 0)                                         # causal
    lower = torch.ones(13, 13, dtype=torch.bool).tril()
    assert torch.all(P[..., lower] > 0)                                      # every previous position is reached
    o = (P @ v).transpose(1, 2).reshape(2, 13, D)
    assert (mixer.o_proj(o) - y).abs().max() <= 1e-10 * y.abs().max()


@pytest.mark.parametrize("variant", ["fixed", "axial"])
def test_one_block_is_exact_causal_softmax_attention(variant):
    mixer = make(block_size=16, variant=variant)
    attention = seqzoo.build_mixer("attention", D, n_heads=H, impl="math").double().eval()
    attention.load_state_dict(mixer.state_dict())                           # same projections, same RoPE
    x = rand(3, 11, D, seed=1)
    with torch.no_grad():
        assert (mixer(x)[0] - attention(x)[0]).abs().max() <= 1e-12


@pytest.mark.parametrize("variant,pooling", VARIANTS)
def test_streaming_in_any_split_equals_one_call(variant, pooling):
    mixer = make(block_size=3, variant=variant, pooling=pooling)
    x = rand(2, 14, D, seed=2)
    with torch.no_grad():
        y_full, s_full = mixer(x)
        for sizes in ([1] * 14, [5, 1, 8], [2, 7, 5], [13, 1]):
            ys, state, start = [], None, 0
            for size in sizes:
                y, state = mixer(x[:, start:start + size], state)
                ys.append(y)
                start += size
            assert (torch.cat(ys, 1) - y_full).abs().max() <= 1e-10 * y_full.abs().max(), sizes
            for key in ("k_sum", "v_sum"):
                assert (state[key] - s_full[key]).abs().max() <= 1e-12 * s_full[key].abs().max()
    # the state: the 2 positions of the unfinished block, one summary per finished block (a row for axial)
    assert s_full["q"].shape == (2, 2, H, D // H) and s_full["pos"].tolist() == [14, 14]
    summary = (2, H, 4) + ((3,) if variant == "axial" else ()) + (D // H,)
    assert s_full["k_sum"].shape == summary and s_full["v_sum"].shape == summary
    assert mixer.state_size(14) == sum(t[0].numel() for t in s_full.values())


def test_abstractions_carry_far_information_that_a_local_block_cannot():
    """Perturbing a token two blocks back moves the output through the abstraction of its block."""
    mixer = make(block_size=4)
    x = rand(1, 12, D, seed=3)
    x2 = x.clone()
    x2[:, 1] += 1.0
    with torch.no_grad():
        y, y2 = mixer(x)[0], mixer(x2)[0]
    assert (y2[:, 8:] - y[:, 8:]).abs().max() > 1e-6


@pytest.mark.parametrize("kwargs, message", [
    ({"variant": "logsparse"}, "unknown combiner variant 'logsparse'; valid: fixed, axial"),
    ({"pooling": "sum"}, "unknown combiner pooling 'sum'; valid: max, mean"),
    ({"block_size": 0}, "block_size must be a positive int"),
    ({"n_heads": 3}, "does not divide d_model"),
])
def test_bad_options_are_one_line_errors(kwargs, message):
    with pytest.raises(SeqzooError, match=message) as info:
        seqzoo.build_mixer("combiner", D, **kwargs)
    assert "\n" not in str(info.value)
