"""Spider-web generators: causality probe, classifier-free-guidance identities, diffusion schedule and sampler,
training that lowers the loss, and checkpoints that reload exactly."""

import numpy as np
import pytest
import torch

from seqzoo.core.errors import SeqzooError
from seqzoo.models.webs import GraphDiffusion, GraphWebTransformer, alpha_bar, build_generator, load_generator, \
    save_generator, train_generator
from seqzoo.repro.spider_web import causality_probe
from seqzoo.tasks.webs import FeatureScaler, WebTokenizer, feature_matrix, web_dataset

WEBS = web_dataset(24, seed=5, max_nodes=12)
TOK = WebTokenizer(12, "full")


def _batch(dtype=torch.float64):
    tokens = torch.as_tensor(TOK.encode_batch(WEBS[:3]), dtype=dtype)
    cond = torch.randn(3, 14, dtype=dtype, generator=torch.Generator().manual_seed(0))
    return tokens, cond


def _model(**kw):
    torch.manual_seed(0)
    return GraphWebTransformer(TOK.token_dim, 12, 14, d_model=16, n_layers=2, n_heads=2, **kw).double().eval()


@pytest.mark.parametrize("j", [0, 4, 10])
def test_causal_transformer_passes_probe(j):
    tokens, cond = _batch()
    assert causality_probe(_model(), tokens, cond, j)


def test_bidirectional_variant_fails_probe():
    tokens, cond = _batch()
    assert not causality_probe(_model(causal=False), tokens, cond, 4)


def test_generation_equals_teacher_forcing_on_its_own_output():
    model = _model()
    _, cond = _batch()
    out = model.generate(cond, snap=False)
    assert out.shape == (3, 12, TOK.token_dim)
    assert torch.allclose(model(out, cond), out, atol=1e-12)   # each generated token is the model's prediction


def test_cfg_identities():
    model = _model()
    tokens, cond = _batch()
    assert torch.equal(model.guided(tokens, cond, 1.0), model(tokens, cond))
    drop = torch.ones(3, dtype=torch.bool)
    # a dropped condition reads only the null key/value: its values do not matter
    assert torch.equal(model(tokens, cond, drop), model(tokens, cond * 5 + 1, drop))
    # ... whereas a kept condition does
    assert not torch.allclose(model(tokens, cond), model(tokens, cond * 5 + 1))
    w = 3.0
    null, full = model(tokens, cond, drop), model(tokens, cond)
    assert torch.allclose(model.guided(tokens, cond, w), null + w * (full - null), atol=1e-12)


def test_model_input_errors():
    model = _model()
    tokens, cond = _batch()
    with pytest.raises(SeqzooError, match="14"):
        model(tokens, cond[:, :13])
    with pytest.raises(SeqzooError, match="node tokens"):
        model(tokens[..., :5], cond)
    with pytest.raises(SeqzooError, match="divide"):
        GraphWebTransformer(TOK.token_dim, 12, d_model=10, n_heads=4)
    with pytest.raises(SeqzooError, match="cond_drop_prob"):
        GraphWebTransformer(TOK.token_dim, 12, cond_drop_prob=1.5)


def test_alpha_bar_schedule():
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    ab = alpha_bar(t)
    assert ab[0] == pytest.approx(1.0) and ab[-1] < 1e-3 and bool((ab[1:] < ab[:-1]).all())


def test_diffusion_shapes_cfg_and_seeded_sampling():
    torch.manual_seed(0)
    model = GraphDiffusion(TOK.token_dim, 12, 14, d_model=16, n_layers=1, n_heads=2).double().eval()
    tokens, cond = _batch()
    t = torch.full((3,), 0.5, dtype=torch.float64)
    assert torch.equal(model.guided(tokens, t, cond, 1.0), model(tokens, t, cond))
    drop = torch.ones(3, dtype=torch.bool)
    assert torch.equal(model(tokens, t, cond, drop), model(tokens, t, -cond, drop))
    a = model.generate(cond, steps=3, generator=torch.Generator().manual_seed(1))
    b = model.generate(cond, steps=3, generator=torch.Generator().manual_seed(1))
    assert a.shape == tokens.shape and torch.equal(a, b)
    with torch.no_grad():
        assert float(model.loss(tokens, cond, torch.Generator().manual_seed(0))) > 0
    with pytest.raises(SeqzooError, match="steps"):
        model.generate(cond, steps=0)


def test_ddim_single_step_returns_clamped_prediction():
    torch.manual_seed(0)
    model = GraphDiffusion(TOK.token_dim, 12, 14, d_model=16, n_layers=1, n_heads=2).double().eval()
    _, cond = _batch()
    z = torch.randn(3, 12, TOK.token_dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x0 = model.generate(cond, steps=1, generator=torch.Generator().manual_seed(2))
    assert torch.equal(x0, model(z, torch.ones(3, dtype=torch.float64), cond).clamp(-1.2, 1.2))


@pytest.mark.parametrize("name", ["transformer", "diffusion-sparse"])
def test_training_lowers_loss_and_checkpoint_reloads(name, tmp_path):
    scaler = FeatureScaler.fit(feature_matrix(WEBS))
    torch.manual_seed(0)
    gen = build_generator(name, scaler, max_nodes=12, d_model=16, n_layers=1, n_heads=2)
    info = train_generator(gen, WEBS, steps=60, batch_size=8, lr=3e-3, warmup=5, log_every=20)
    losses = [h["loss"] for h in info["history"]]
    assert losses[-1] < 0.8 * losses[0]
    targets = feature_matrix(WEBS[:2])
    before = gen.generate_tokens(targets, steps=2)
    save_generator(gen, tmp_path / "run" / "checkpoint")
    again = load_generator(tmp_path / "run")
    assert np.array_equal(again.generate_tokens(targets, steps=2), before)
    assert len(again.generate(targets, steps=2)) == 2
    with pytest.raises(SeqzooError, match="14 features"):
        again.generate(targets[:, :3])


def test_unknown_generator_and_missing_run(tmp_path):
    with pytest.raises(SeqzooError, match="valid"):
        build_generator("gan", FeatureScaler(np.zeros(14), np.ones(14)))
    with pytest.raises(SeqzooError, match="no web generator"):
        load_generator(tmp_path / "nothing")


def test_gaussian_head_samples_coordinates_only():
    torch.manual_seed(0)
    model = GraphWebTransformer(TOK.token_dim, 12, 14, d_model=16, n_layers=1, n_heads=2, head="gaussian").double()
    tokens, cond = _batch()
    with torch.no_grad():
        assert torch.isfinite(model.loss(tokens, cond)).item()
    assert model.raw(tokens, cond).shape[-1] == TOK.token_dim + 3 and model(tokens, cond).shape == tokens.shape
    a = model.generate(cond, generator=torch.Generator().manual_seed(3))
    b = model.generate(cond, generator=torch.Generator().manual_seed(3))
    c = model.generate(cond, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a[..., 1:4], c[..., 1:4])
    mean = model.generate(cond, temperature=0.0)            # τ = 0 is the mean path: a teacher-forcing fixed point
    assert torch.allclose(model(mean, cond)[..., 1:4] * (mean[..., :1] > 0), mean[..., 1:4], atol=1e-12)
    assert causality_probe(model.eval(), tokens, cond, 3)
    with pytest.raises(SeqzooError, match="head"):
        GraphWebTransformer(TOK.token_dim, 12, head="flow")


def test_gaussian_loss_reduces_to_mse_loss_at_half_variance():
    """The Gaussian head changes only the coordinates' squared error into their NLL: with σ² = ½ (NLL = squared
    error + const) its loss and gradients equal the MSE head's, so the flag (stop) and adjacency channels weigh
    exactly as in the MSE head. The former loss averaged flag + adjacency and the coordinates separately, giving
    each coordinate (1 + M)/3 times a flag channel's weight; the model then never learned to stop."""
    tokens, cond = _batch()
    assert bool((tokens[..., 0] < 0).any()) and bool((tokens[..., 0] > 0).any())   # padding and node rows
    torch.manual_seed(0)
    gauss = GraphWebTransformer(TOK.token_dim, 12, 14, d_model=16, n_layers=1, n_heads=2, head="gaussian").double()
    mse = GraphWebTransformer(TOK.token_dim, 12, 14, d_model=16, n_layers=1, n_heads=2, head="mse").double()
    dim = TOK.token_dim
    log_half = 0.5 * np.log(0.5)                                    # log σ with σ² = ½
    with torch.no_grad():
        gauss.out.weight[dim:] = 0.0
        gauss.out.bias[dim:] = log_half
        state = {k: (v[:dim] if k.startswith("out.") else v) for k, v in gauss.state_dict().items()}
    mse.load_state_dict(state)
    lg = gauss.loss(tokens, cond, torch.Generator().manual_seed(7))   # same condition-dropout draw for both
    lm = mse.loss(tokens, cond, torch.Generator().manual_seed(7))
    node_coords = 3 * int((tokens[..., 0] > 0).sum())
    const = node_coords * (log_half - np.log(0.01)) / tokens.numel()
    assert lg.item() == pytest.approx(lm.item() + const, rel=1e-12)
    lg.backward()
    lm.backward()
    for (name, pg), (_, pm) in zip(gauss.named_parameters(), mse.named_parameters()):
        grad = pg.grad[:dim] if name.startswith("out.") else pg.grad
        assert torch.allclose(grad, pm.grad, rtol=1e-9, atol=1e-12), name
