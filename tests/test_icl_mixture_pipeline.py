"""The data-mixtures-icl pipeline end to end (seqzoo/repro/data_mixtures_icl.py on seqzoo/tasks/icl): the four
pretraining sources really differ as intended and match their evaluation prompts, the label of the predicted point
is never visible to a causal model, and why models that only learned a label-linear estimator cannot tell dense
from sparse prompts.

* training batches of A (dense), B (sparse, d − s zero weights in every prompt), C (half the prompts sparse) and D
  differ only in the function; scale, dimension, noise and curriculum equal those of the evaluation prompts;
* a real CausalLM evaluated through ``predict``: the prediction at x̃_i does not change when y_i and everything after
  it change (no leakage), and it is read at the x̃ positions;
* both normalised classes have E[w wᵀ] = I/d, so every estimator linear in the context labels (OLS, ridge, …)
  has the same error on dense and sparse prompts; only a label-nonlinear estimator (the Bayes support average)
  separates them.
"""

from __future__ import annotations

import pytest
import torch

import seqzoo.repro.data_mixtures_icl as repro
from seqzoo.models import CausalLM, ModelConfig
from seqzoo.tasks.icl.learners import ols, prefix_predictions, ridge


def _weights(task, split="train", index=0, batch=400):
    """The prompts and each prompt's weight vector, recovered exactly from its 11 noiseless points (d = 5)."""
    p = task.sample(split, index, batch)
    w = torch.linalg.lstsq(p.xs, p.fs[..., None]).solution[..., 0]
    return p, w


def test_the_four_pretraining_sources_differ_as_intended_and_match_evaluation():
    zeros = {}
    for name, function in repro.PRETRAIN.items():
        task = repro.task(function)
        assert (task.d, task.n_points, task.noise_std, task.curriculum) == (repro.D, repro.N_POINTS, 0.0, None)
        p, w = _weights(task)
        linear = ((p.xs @ w[..., None])[..., 0] - p.fs).abs().amax(1) < 1e-9
        assert linear.all() if name != "D" else 0.4 < linear.float().mean() < 0.6   # D: half sinusoids
        zeros[name] = (w.abs() < 1e-9).sum(1)
        assert torch.equal(p.scale, torch.ones_like(p.scale))
        # evaluation prompts come from the same source (other split): same scale and layout
        v = task.sample("val", 0, 400)
        assert torch.equal(v.scale, p.scale) and v.xs.shape == p.xs.shape
        assert float(v.fs.pow(2).mean()) == pytest.approx(float(p.fs.pow(2).mean()), rel=0.2)
    d, s = repro.D, repro.SPARSITY
    assert (zeros["A"] == 0).all()
    assert (zeros["B"] == d - s).all()                              # 60 % zero weights in every prompt
    sparse_rows = (zeros["C"] == d - s).float().mean().item()
    assert 0.4 < sparse_rows < 0.6 and set(zeros["C"].tolist()) == {0, d - s}
    batches = {name: repro.task(f).get_batch("train", 3, 64) for name, f in repro.PRETRAIN.items()}
    for a in "ABCD":
        for b in "ABCD":
            if a < b:
                assert not torch.equal(batches[a]["targets"], batches[b]["targets"])


def test_prediction_at_x_i_never_sees_y_i_through_a_real_model():
    torch.manual_seed(0)
    model = CausalLM(ModelConfig(vocab_size=1, d_model=16, n_layers=2, mixer="attention",
                                 mixer_options={"attention": {"n_heads": 4}}, input_dim=repro.D + 1, output_dim=1))
    task = repro.task("sparse_linear")
    p = task.sample("val", 0, 8)
    base = task.predict(model, p)
    with torch.no_grad():
        direct, _ = model(task.encode(p)["inputs"])
    assert torch.allclose(base, direct[:, 0::2, 0].double())
    for i in (0, 3, 7):
        q = task.sample("val", 0, 8)
        q.ys = p.ys.clone()
        q.ys[:, i:] += 5.0                    # change y_i and every later label
        q.xs = p.xs.clone()
        q.xs[:, i + 1:] += 1.0                # and every later x
        changed = task.predict(model, q)
        assert torch.equal(changed[:, :i + 1], base[:, :i + 1])
        assert not torch.allclose(changed[:, i + 1:], base[:, i + 1:])


def test_label_linear_estimators_cannot_tell_dense_from_sparse_prompts():
    dense, sparse = repro.task("linear"), repro.task("sparse_linear")
    _, wd = _weights(dense, "val", 0, 4000)
    _, ws = _weights(sparse, "val", 0, 4000)
    eye = torch.eye(repro.D, dtype=torch.float64) / repro.D
    for w in (wd, ws):   # the same second moment E[w wᵀ] = I/d
        assert torch.allclose(w.T @ w / len(w), eye, atol=0.04)

    def curve(task, fn, **kw):
        errs = [task.normalised_error(p, prefix_predictions(fn, p.xs, p.ys, **kw))
                for p in (task.sample("val", i, 2000) for i in range(4))]
        return torch.stack(errs).mean(0)

    d = repro.D
    theory = torch.tensor([(d - k) / d for k in range(1, d)], dtype=torch.float64)   # OLS: E err = (d − k)/d
    for task in (dense, sparse):
        assert torch.allclose(curve(task, ols)[1:d], theory, atol=0.04)
    gap = curve(dense, ridge, lam=1.0)[1:] - curve(sparse, ridge, lam=1.0)[1:]
    assert gap.abs().max() < 0.05
    p = sparse.sample("val", 0, 500)
    bayes = sparse.normalised_error(p, sparse.reference_predictions(p, "sparse_linear")["bayes"])
    assert bayes[3] < 0.05 < theory[2] - 0.3        # the label-nonlinear support average: ≈ 0 at k = 3 vs 0.4
