"""LongVQ (Liu et al. 2024, arXiv 2404.11163): property tests beyond the mixer contract.

The linear-time attention (exact window + per-codeword memory of value sums and counts) equals the quadratic causal
softmax attention over the quantised keys; the memory holds exactly the sums and counts of the positions older than
the window; the state is constant in T; quantisation is straight-through; the VQ losses are exposed.
"""

import pytest
import torch

import seqzoo
from seqzoo.core.errors import SeqzooError
from seqzoo.core.mixer import get_optim

D = 16


def make(**kwargs):
    torch.manual_seed(0)
    options = dict(n_heads=2, codebook_size=8, window=5, ema_dim=2, chunk_size=4)
    options.update(kwargs)
    mixer = seqzoo.build_mixer("longvq", D, **options).double().eval()
    with torch.no_grad():
        mixer.rel_bias.copy_(torch.randn(mixer.rel_bias.shape, dtype=torch.float64))
    return mixer


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def pieces(mixer, x):
    """q, quantised keys, codes and values of a whole sequence (from an empty state)."""
    q, k, v, _, _ = mixer.features(x, mixer.init_state(x.shape[0], dtype=x.dtype)["ema"])
    k_hat, codes, _ = mixer.quantize(k)
    return q, k, k_hat, codes, v


def quadratic(mixer, q, k_hat, v):
    """Causal softmax attention over the quantised keys, with the relative bias on distances < window."""
    T, d = q.shape[1], q.shape[-1]
    scores = q.transpose(1, 2) @ k_hat.transpose(1, 2).transpose(-1, -2) / d ** 0.5       # [B, H, T, T]
    for t in range(T):
        for s in range(T):
            if s > t:
                scores[..., t, s] = float("-inf")
            elif t - s < mixer.window:
                scores[..., t, s] += mixer.rel_bias[:, t - s]
    return (torch.softmax(scores, dim=-1) @ v.transpose(1, 2)).transpose(1, 2)


def attend_in_pieces(mixer, q, k_hat, codes, v, sizes):
    state, outs, start = mixer.init_state(q.shape[0], dtype=q.dtype), [], 0
    for size in sizes:
        part = slice(start, start + size)
        o, new = mixer.attend(q[:, part], k_hat[:, part], codes[:, part], v[:, part], state)
        state = {**state, **new}
        outs.append(o)
        start += size
    return torch.cat(outs, dim=1), state


@pytest.mark.parametrize("impl", ["recurrent", "chunk"])
@pytest.mark.parametrize("window,chunk_size,length", [(5, 4, 37), (3, 8, 29), (6, 4, 4)])
def test_linear_time_form_equals_quadratic_attention_over_quantised_keys(impl, window, chunk_size, length):
    mixer = make(window=window, chunk_size=chunk_size, impl=impl)
    x = rand(2, length, D)
    with torch.no_grad():
        q, _, k_hat, codes, v = pieces(mixer, x)
        ref = quadratic(mixer, q, k_hat, v)
        if length > 8:   # the memory really aggregates: codes repeat among the positions
            assert len(torch.unique(codes[0, :, 0])) < length - window
        for sizes in ([length], [1] * length, [length // 2, 1, length - length // 2 - 1]):
            o, _ = attend_in_pieces(mixer, q, k_hat, codes, v, sizes)
            assert (o - ref).abs().max() <= 1e-10 * ref.abs().max(), sizes


def test_memory_holds_value_sums_and_counts_of_positions_older_than_the_window():
    mixer = make(window=5)
    x = rand(1, 23, D, seed=1)
    with torch.no_grad():
        q, _, k_hat, codes, v = pieces(mixer, x)
        _, state = attend_in_pieces(mixer, q, k_hat, codes, v, [9, 14])
    old = 23 - 5
    onehot = torch.nn.functional.one_hot(codes[0, :old], mixer.codebook_size).double()        # [old, H, S]
    sums = torch.einsum("ths,thd->hsd", onehot, v[0, :old])
    memory = state["memory"][0]                                                              # [H, S, d + 1]
    assert torch.equal(memory[..., -1], onehot.sum(0))                                       # counts
    assert (memory[..., :-1] - sums).abs().max() <= 1e-12
    assert torch.equal(state["code_win"][0], codes[0, old:]) and state["pos"].tolist() == [23]


def test_state_is_constant_in_the_sequence_length():
    mixer = make()
    shapes = {}
    with torch.no_grad():
        for length in (3, 17, 64):
            _, state = mixer(rand(2, length, D, seed=length))
            shapes[length] = {key: tuple(t.shape) for key, t in state.items()}
    assert shapes[3] == shapes[17] == shapes[64]
    assert shapes[64]["memory"] == (2, 2, 8, D // 2 + 1)
    assert mixer.state_size(3) == mixer.state_size(10_000)


def test_quantisation_is_straight_through():
    mixer = make()
    k = rand(2, 9, 2, D // 2, seed=2).requires_grad_(True)
    k_hat, codes, _ = mixer.quantize(k)
    book = mixer.codebook.detach()
    brute = ((k.detach()[..., None, :] - book[None, None]) ** 2).sum(-1).argmin(-1)          # [B, T, H]
    assert torch.equal(codes, brute)
    assert torch.equal(k_hat.detach(), book[torch.arange(2)[None, None, :], codes])          # exactly codewords
    g = rand(*k.shape, seed=3)
    (k_hat * g).sum().backward()
    assert torch.equal(k.grad, g)                                                            # identity backward
    expected = torch.zeros_like(book).index_put_((torch.arange(2)[None, None, :].expand_as(codes), codes), g,
                                                 accumulate=True)
    assert (mixer.codebook.grad - expected).abs().max() <= 1e-12


def test_task_gradient_reaches_the_key_projection_through_the_quantiser():
    mixer = make(window=8)
    x = rand(2, 12, D, seed=4)
    y, _ = mixer(x)
    (y * rand(*y.shape, seed=5)).sum().backward()
    # κ_k, μ_k only shape the keys, and keys reach the output only through k̂ = C_c + (k − sg(k))
    assert mixer.qk_scale.grad[1].abs().sum() > 0 and mixer.qk_offset.grad[1].abs().sum() > 0


def test_vq_losses_vanish_when_keys_sit_on_codewords():
    mixer = make(codebook_size=16)
    x = rand(1, 6, D, seed=6)
    with torch.no_grad():
        _, k, _, _, _ = pieces(mixer, x)
        _, _, losses = mixer.quantize(k)
        assert losses["commitment"] > 0 and losses["codebook"] > 0
        mixer.codebook[:, :6] = k[0].transpose(0, 1)                    # every key becomes a codeword
        k_hat, _, losses = mixer.quantize(k)
    assert losses["commitment"] == 0 and losses["codebook"] == 0
    assert torch.equal(k_hat, k)


def test_aux_loss_is_exposed_after_a_forward_and_trains_the_codebook():
    mixer = make(commitment_weight=0.5)
    y, _ = mixer(rand(2, 7, D, seed=7))
    losses = mixer.vq_losses
    assert set(losses) == {"codebook", "commitment"}
    assert torch.equal(mixer.aux_loss, losses["codebook"] + 0.5 * losses["commitment"])
    mixer.aux_loss.backward()
    assert mixer.codebook.grad.abs().sum() > 0 and mixer.qk_offset.grad[1].abs().sum() > 0
    assert get_optim(mixer.codebook) == {"weight_decay": 0.0} == get_optim(mixer.ema.alpha)


@pytest.mark.parametrize("kwargs, message", [
    ({"codebook_size": 0}, "codebook_size must be a positive int"),
    ({"window": 1.5}, "window must be a positive int"),
    ({"commitment_weight": -1.0}, "commitment_weight must be a number >= 0"),
    ({"impl": "parallel"}, "unknown impl 'parallel' for longvq; valid: auto, recurrent, chunk"),
    ({"n_heads": 3}, "does not divide d_model"),
])
def test_bad_options_are_one_line_errors(kwargs, message):
    with pytest.raises(SeqzooError, match=message) as info:
        seqzoo.build_mixer("longvq", D, **kwargs)
    assert "\n" not in str(info.value)
