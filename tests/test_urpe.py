"""URPE attention (Luo et al. 2022, arXiv 2205.13401): property tests beyond the mixer contract.

(softmax(QKᵀ/√d + B) ⊙ C) V with Toeplitz B, C (clipped distances); C ≡ 1 is plain softmax attention; the KV cache
streams; A ⊙ C need not be row-stochastic, so URPE represents position-dependent maps of a constant input that
softmax attention (whatever its weights or relative encoding) cannot.
"""

import pytest
import torch

import seqzoo
from seqzoo.core.errors import SeqzooError
from seqzoo.core.mixer import get_optim

D = 16


def make(**kwargs):
    torch.manual_seed(0)
    return seqzoo.build_mixer("urpe", D, **kwargs).double().eval()


def randomise_tables(mixer, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        mixer.toeplitz.copy_(torch.randn(mixer.toeplitz.shape, generator=gen, dtype=torch.float64))
        if mixer.rpe is not None:
            mixer.rpe.copy_(torch.randn(mixer.rpe.shape, generator=gen, dtype=torch.float64))
    return mixer


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def explicit(mixer, x):
    """The paper's formula written out with loops over (i, j) for the Toeplitz matrices."""
    B, T, _ = x.shape
    H, d, L = mixer.n_heads, mixer.head_dim, mixer.max_len
    q, k, v = (p(x).view(B, T, H, d).transpose(1, 2) for p in (mixer.q_proj, mixer.k_proj, mixer.v_proj))
    c = torch.zeros(H, T, T, dtype=x.dtype)
    b = torch.zeros(H, T, T, dtype=x.dtype)
    mask = torch.full((T, T), float("-inf"), dtype=x.dtype)
    for i in range(T):
        for j in range(i + 1):
            c[:, i, j] = mixer.toeplitz[:, min(i - j, L - 1)]
            b[:, i, j] = 0.0 if mixer.rpe is None else mixer.rpe[:, min(i - j, L - 1)]
            mask[i, j] = 0.0
    attn = torch.softmax(q @ k.transpose(-1, -2) / d ** 0.5 + b + mask, dim=-1)
    o = (attn * c) @ v
    return mixer.o_proj(o.transpose(1, 2).reshape(B, T, H * d))


@pytest.mark.parametrize("rpe_bias", [True, False])
def test_equals_explicit_formula_with_clipped_distances(rpe_bias):
    mixer = randomise_tables(make(n_heads=2, max_len=4, rpe_bias=rpe_bias))  # T > max_len: clipping is used
    x = rand(2, 11, D)
    with torch.no_grad():
        y, _ = mixer(x)
        ref = explicit(mixer, x)
    assert (y - ref).abs().max() <= 1e-12 * ref.abs().max()


def test_toeplitz_entries_depend_only_on_the_distance():
    mixer = randomise_tables(make(n_heads=2, max_len=6))
    c, b = mixer.toeplitz_matrices(9, 9, torch.float64)
    c2, b2 = mixer.toeplitz_matrices(4, 9, torch.float64)      # the last 4 queries (a KV-cache step)
    assert torch.equal(c2, c[:, 5:]) and torch.equal(b2, b[:, 5:])
    for mat in (c, b):
        assert torch.equal(mat[:, 1:, 1:], mat[:, :-1, :-1])              # constant along diagonals
        assert torch.equal(mat[:, 8, 0], mat[:, 8, 2])                     # distances ≥ max_len − 1 share one value
        assert not torch.equal(mat[:, 5, 0], mat[:, 4, 0])


@pytest.mark.parametrize("rope", [False, True])
def test_c_equal_one_is_plain_softmax_attention(rope):
    urpe = make(n_heads=4, rope=rope, rpe_bias=False)          # the initial C is all ones
    attention = seqzoo.build_mixer("attention", D, n_heads=4, rope=rope, impl="math").double().eval()
    attention.load_state_dict(urpe.state_dict(), strict=False)
    assert torch.all(urpe.toeplitz == 1.0)
    x = rand(3, 10, D, seed=2)
    with torch.no_grad():
        y_urpe, s_urpe = urpe(x[:, :6])
        y_attn, s_attn = attention(x[:, :6])
        y_urpe2, _ = urpe(x[:, 6:], s_urpe)
        y_attn2, _ = attention(x[:, 6:], s_attn)
    assert (y_urpe - y_attn).abs().max() <= 1e-12
    assert (y_urpe2 - y_attn2).abs().max() <= 1e-12
    # with the default RPE bias (initialised at 0) the same holds; a non-constant C breaks it
    with torch.no_grad():
        assert (make(n_heads=4)(x)[0] - make(n_heads=4, rpe_bias=False)(x)[0]).abs().max() <= 1e-12
        urpe.toeplitz.add_(torch.linspace(0, 1, urpe.max_len, dtype=torch.float64))
        assert (urpe(x[:, :6])[0] - y_attn).abs().max() > 1e-3


@pytest.mark.parametrize("rope", [False, True])
def test_kv_cache_streaming_equals_one_call(rope):
    mixer = randomise_tables(make(n_heads=2, max_len=5, rope=rope))
    x = rand(2, 13, D, seed=3)
    with torch.no_grad():
        y_full, s_full = mixer(x)
        for sizes in ([1] * 13, [4, 1, 8], [12, 1]):
            ys, state, start = [], None, 0
            for size in sizes:
                y, state = mixer(x[:, start:start + size], state)
                ys.append(y)
                start += size
            assert (torch.cat(ys, 1) - y_full).abs().max() <= 1e-12 * y_full.abs().max()
            assert state["k"].shape == (2, 13, 2, D // 2) and state["pos"].tolist() == [13, 13]
            for key in ("k", "v"):
                assert (state[key] - s_full[key]).abs().max() <= 1e-12 * s_full[key].abs().max()


def identity_urpe(c):
    """One head, W_q = 0 (uniform attention logits), W_k = W_v = W_o = I, Toeplitz C = c."""
    mixer = make(n_heads=1, max_len=len(c), rpe_bias=False)
    with torch.no_grad():
        mixer.q_proj.weight.zero_()
        for proj in (mixer.k_proj, mixer.v_proj, mixer.o_proj):
            proj.weight.copy_(torch.eye(D, dtype=torch.float64))
        mixer.toeplitz.copy_(torch.as_tensor(c, dtype=torch.float64)[None])
    return mixer


def test_uniform_logits_realise_a_toeplitz_map_that_is_not_row_stochastic():
    T = 9
    c = rand(T, seed=4)
    mixer = identity_urpe(c)
    x = rand(2, T, D, seed=5)
    with torch.no_grad():
        y, _ = mixer(x)
        mixing = mixer.mixing_matrix(x)[0, 0]
    # causal rows are normalised over t + 1 positions: y_t = (t + 1)^-1 Σ_{s ≤ t} c_{t−s} x_s, exactly
    ref = torch.stack([sum(c[t - s] * x[:, s] for s in range(t + 1)) / (t + 1) for t in range(T)], dim=1)
    assert (y - ref).abs().max() <= 1e-12 * ref.abs().max()
    rows = mixing.sum(-1)
    assert (rows - 1.0).abs().max() > 0.1                      # A ⊙ C is not row-stochastic ...
    assert (rows - torch.cumsum(c, 0) / torch.arange(1, T + 1)).abs().max() <= 1e-12   # ... its rows: mean of c


def test_constant_input_position_counter_that_softmax_attention_cannot_represent():
    T = 8
    x = rand(1, 1, D, seed=6).expand(1, T, D).contiguous()     # the same token at every position
    # c_δ = 2δ + 1 and uniform logits: y_t = (t + 1)^-1 Σ_{δ ≤ t} (2δ + 1) x = (t + 1) x, a position counter
    counter = identity_urpe([2.0 * delta + 1.0 for delta in range(T)])
    with torch.no_grad():
        y, _ = counter(x)
    expected = torch.arange(1, T + 1, dtype=torch.float64)[None, :, None] * x
    assert (y - expected).abs().max() <= 1e-12 * expected.abs().max()
    # softmax attention, whatever its weights and relative encoding, maps a constant input to identical rows
    # (its rows are convex combinations of equal values); URPE with the same weights does not
    for rope in (False, True):
        torch.manual_seed(7)
        attention = seqzoo.build_mixer("attention", D, n_heads=2, rope=rope).double().eval()
        urpe = randomise_tables(make(n_heads=2, rope=rope), seed=8)
        urpe.load_state_dict(attention.state_dict(), strict=False)
        with torch.no_grad():
            y_attn, _ = attention(x)
            y_urpe, _ = urpe(x)
        assert (y_attn - y_attn[:, :1]).abs().max() <= 1e-12
        assert (y_urpe - y_urpe[:, :1]).abs().max() > 1e-3


def test_gradients_reach_the_toeplitz_tables():
    mixer = randomise_tables(make(n_heads=2, max_len=6))
    y, _ = mixer(rand(2, 9, D, seed=9))
    y.square().sum().backward()
    assert mixer.toeplitz.grad.abs().min() > 0 and mixer.rpe.grad.abs().sum() > 0
    # exempt from weight decay, which would pull C towards 0 instead of its neutral value 1
    assert get_optim(mixer.toeplitz) == {"weight_decay": 0.0} == get_optim(mixer.rpe)


@pytest.mark.parametrize("kwargs, message", [
    ({"max_len": 0}, "max_len must be a positive int"),
    ({"n_heads": 3}, "does not divide d_model"),
    ({"n_heads": 16, "rope": True}, "rope needs an even head width"),
    ({"window": 4}, "unknown option 'window'"),
])
def test_bad_options_are_one_line_errors(kwargs, message):
    with pytest.raises(SeqzooError, match=message) as info:
        seqzoo.build_mixer("urpe", D, **kwargs)
    assert "\n" not in str(info.value)
