"""CausalLM: hybrids by configuration, state threading, continuous inputs, losses."""

import pytest
import torch

import seqzoo
from seqzoo.core.errors import SeqzooError
from seqzoo.models import CausalLM, ModelConfig


def tiny(**kw) -> CausalLM:
    base = dict(vocab_size=31, d_model=32, n_layers=2)
    base.update(kw)
    return CausalLM(ModelConfig(**base)).double()


def test_hybrid_pattern_builds_the_configured_mixers():
    model = tiny(n_layers=4, mixer=["retention", "attention"], mixer_options={"attention": {"window": 5}})
    kinds = [b.mixer.registry_name for b in model.blocks]
    assert kinds == ["retention", "attention", "retention", "attention"]
    assert model.blocks[1].mixer.window == 5


def test_tied_embeddings_and_parameter_count():
    model = tiny()
    assert model.head.weight is model.embed.weight
    untied = tiny(tie_embeddings=False)
    assert untied.num_parameters() == model.num_parameters() + 31 * 32


@pytest.mark.parametrize("mixer", ["attention", ["retention", "attention"]])
def test_model_state_threading_equals_one_call(mixer):
    model = tiny(mixer=mixer)
    x = torch.randint(0, 31, (3, 23))
    full, _ = model(x)
    a, state = model(x[:, :10])
    b, state = model(x[:, 10:11], state)
    c, _ = model(x[:, 11:], state)
    torch.testing.assert_close(torch.cat([a, b, c], 1), full, rtol=1e-10, atol=1e-10)


def test_causality_of_the_whole_model():
    model = tiny(mixer=["retention", "attention"])
    x = torch.randint(0, 31, (2, 20))
    y = x.clone()
    y[:, 12:] = (y[:, 12:] + 1) % 31
    torch.testing.assert_close(model(x)[0][:, :12], model(y)[0][:, :12], rtol=0, atol=1e-12)
    assert not torch.allclose(model(x)[0][:, 12:], model(y)[0][:, 12:])


def test_continuous_inputs_and_mse_loss():
    model = CausalLM(ModelConfig(d_model=32, n_layers=2, input_dim=3, output_dim=2))
    x = torch.randn(2, 9, 3)
    out, _ = model(x)
    assert out.shape == (2, 9, 2)
    target = torch.randn(2, 9, 2)
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[:, -3:] = True
    loss = model.loss({"inputs": x, "targets": target, "loss_mask": mask})
    expected = (out[:, -3:] - target[:, -3:]).pow(2).mean()
    torch.testing.assert_close(loss, expected)


def test_masked_token_loss_counts_only_masked_positions():
    model = tiny()
    x = torch.randint(0, 31, (2, 8))
    t = torch.randint(0, 31, (2, 8))
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[0, 3] = True
    logits, _ = model(x)
    expected = torch.nn.functional.cross_entropy(logits[0, 3:4].float(), t[0, 3:4])
    got = model.loss({"inputs": x, "targets": t, "loss_mask": mask})
    torch.testing.assert_close(got.double(), expected.double())


def test_bad_model_inputs():
    model = tiny()
    with pytest.raises(SeqzooError, match=r"inputs must be \[B, T\] integer token ids"):
        model(torch.randn(2, 5))
    with pytest.raises(SeqzooError, match="state has 1 layer states; this model has 2"):
        model(torch.zeros(1, 3, dtype=torch.long), [None])


def test_every_registered_causal_mixer_trains_in_a_model():
    """One optimisation step of a CausalLM per mixer lowers the loss on a fixed batch (gradients flow)."""
    for name in seqzoo.list_mixers():
        cls = seqzoo.core.mixer_entry(name).cls
        if not cls.causal:
            continue
        torch.manual_seed(0)
        model = CausalLM(ModelConfig(vocab_size=17, d_model=32, n_layers=1, mixer=name))
        batch = {"inputs": torch.randint(0, 17, (2, 12)), "targets": torch.randint(0, 17, (2, 12))}
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        before = model.loss(batch)
        before.backward()
        opt.step()
        assert model.loss(batch) < before, name
        mixer_grads = [p.grad for p in model.blocks[0].mixer.parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in mixer_grads), name


def test_continuous_input_adapter_does_not_drown_the_input():
    """The continuous adapter's bias starts at zero, so the embedding of x is proportional to x at init (a default
    nn.Linear bias of U(±1/√input_dim) beside 0.02-scale weights made every input look almost the same)."""
    torch.manual_seed(0)
    model = CausalLM(ModelConfig(vocab_size=1, d_model=32, n_layers=1, mixer="attention", input_dim=1, output_dim=2))
    x = torch.randn(1, 5, 1)
    emb = model.embed_inputs(x)
    torch.testing.assert_close(model.embed_inputs(2 * x), 2 * emb)
    assert torch.count_nonzero(model.embed.bias) == 0
