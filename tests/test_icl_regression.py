"""In-context regression task (seqzoo.tasks.icl.regression), its arena entry, the report's ICL plot and the
quick modes of the icl-algorithms / icl-gd reproductions.

Property tests: batches are deterministic per (seed, split, index); the token layout puts x and y in the right slots
and scores only x positions; every function class has E f² equal to its documented scale (the normaliser of the
error); linear prompts are exactly linear, sparse ones have ``sparsity`` non-zero weights, ReLU nets are positively
homogeneous and trees are piecewise constant in the signs; mixtures and blends draw what they say; and a "model"
that runs OLS at the x positions gets exactly the OLS curve from ``evaluate_model``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from seqzoo import SeqzooError
from seqzoo.tasks.icl import FUNCTION_CLASSES, Blend, ICLRegression
from seqzoo.tasks.icl.learners import ols, ols_weights, prefix_predictions
from seqzoo.tasks.icl.regression import FunctionSampler


def test_batches_are_deterministic_and_splits_differ():
    task = ICLRegression(d=4, n_points=6, noise_std=0.5, seed=7)
    a, b = task.get_batch("train", 3, 5), task.get_batch("train", 3, 5)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["inputs"], task.get_batch("val", 3, 5)["inputs"])
    assert not torch.equal(a["inputs"], ICLRegression(d=4, n_points=6, seed=8).get_batch("train", 3, 5)["inputs"])


def test_token_layout_targets_and_mask():
    task = ICLRegression(d=3, n_points=4, seed=0)
    p = task.sample("train", 0, 2)
    batch = task.encode(p, dtype=torch.float64)
    assert batch["inputs"].shape == (2, 8, 4) and batch["targets"].shape == (2, 8, 1)
    assert torch.equal(batch["inputs"][:, 0::2, :3], p.xs) and torch.all(batch["inputs"][:, 0::2, 3] == 0)
    assert torch.equal(batch["inputs"][:, 1::2, 3], p.ys) and torch.all(batch["inputs"][:, 1::2, :3] == 0)
    assert torch.equal(batch["targets"][:, 0::2, 0], p.ys)       # at x_i the target is y_i (not yet seen)
    assert batch["loss_mask"].tolist() == [[True, False] * 4] * 2
    assert task.seq_len == 8 and task.input_dim == 4 and task.output_dim == 1


@pytest.mark.parametrize("x_distribution", ["normal", "uniform"])
@pytest.mark.parametrize("kind", FUNCTION_CLASSES)
def test_scale_is_the_second_moment_of_f(kind, x_distribution):
    task = ICLRegression(d=5, n_points=10, function=kind, x_distribution=x_distribution, seed=1)
    p = task.sample("train", 0, 3000)
    measured = float((p.fs ** 2).mean())
    assert measured == pytest.approx(float(p.scale[0]), rel=0.08), (kind, measured)
    assert torch.equal(p.ys, p.fs)                                # noiseless by default
    assert set(p.kinds) == {kind}


def test_noise_has_the_given_std():
    p = ICLRegression(d=3, n_points=20, noise_std=0.7, seed=0).sample("train", 0, 2000)
    assert float((p.ys - p.fs).std()) == pytest.approx(0.7, rel=0.03)


def test_linear_and_sparse_prompts_are_exactly_linear():
    p = ICLRegression(d=4, n_points=9, seed=0).sample("train", 0, 16)
    w = ols_weights(p.xs, p.ys)
    assert torch.allclose((p.xs @ w.unsqueeze(-1)).squeeze(-1), p.ys, atol=1e-10)
    p = ICLRegression(d=6, n_points=12, function="sparse_linear", sparsity=2, seed=0).sample("train", 0, 16)
    w = ols_weights(p.xs, p.ys)
    assert ((w.abs() > 1e-8).sum(-1) == 2).all()


def _same_function_at(kind, xs_a, xs_b, d=4):
    sampler = FunctionSampler(d, hidden=20, depth=3)
    return (sampler(kind, np.random.default_rng(5), xs_a), sampler(kind, np.random.default_rng(5), xs_b))


def test_relu_net_is_positively_homogeneous_and_tree_depends_on_signs_only():
    xs = np.random.default_rng(0).standard_normal((8, 10, 4))
    f, f3 = _same_function_at("relu_nn", xs, 3.0 * xs)
    assert np.allclose(f3, 3.0 * f) and not np.allclose(f, 0)
    stretch = np.random.default_rng(1).uniform(0.1, 5.0, xs.shape)        # same signs, other magnitudes
    t, t2 = _same_function_at("decision_tree", xs, xs * stretch)
    assert np.array_equal(t, t2)
    assert all(len(np.unique(row)) <= 2 ** 3 for row in t)
    flipped = xs.copy()
    flipped[..., :] *= -1
    assert not np.array_equal(t, _same_function_at("decision_tree", xs, flipped)[1])


def test_mixture_and_blend():
    p = ICLRegression(d=4, function={"linear": 3, "decision_tree": 1}, seed=0).sample("train", 0, 4000)
    share = sum(k == "linear" for k in p.kinds) / len(p.kinds)
    assert share == pytest.approx(0.75, abs=0.03)
    assert set(p.scale[[k == "decision_tree" for k in p.kinds]].tolist()) == {1.0}
    p = ICLRegression(d=4, function=Blend("linear", "relu_nn", 0.3), seed=0).sample("train", 0, 3000)
    assert float(p.scale[0]) == pytest.approx(0.09 * 4 + 0.49 * 4)
    assert float((p.fs ** 2).mean()) == pytest.approx(float(p.scale[0]), rel=0.08)


class OLSAtXPositions(nn.Module):
    """A stand-in sequence model: at every x̃ position it outputs the OLS prediction from the earlier pairs."""

    def __init__(self, d):
        super().__init__()
        self.d = d
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, inputs, state=None):
        xs, ys = inputs[:, 0::2, :self.d].double(), inputs[:, 1::2, self.d].double()
        out = torch.zeros(*inputs.shape[:2], 1, dtype=inputs.dtype)
        out[:, 0::2, 0] = prefix_predictions(ols, xs, ys).to(inputs.dtype)
        return out, None


def test_evaluate_reads_the_x_positions():
    task = ICLRegression(d=3, n_points=7, seed=0)
    metrics = task.evaluate_model(OLSAtXPositions(3), batches=2, batch_size=32)
    assert metrics["error_by_k"] == pytest.approx(metrics["ols_by_k"], abs=1e-5)
    assert metrics["ols_by_k"][0] == pytest.approx(1.0, abs=0.3) and max(metrics["ols_by_k"][3:]) < 1e-10
    assert metrics["r2"] == pytest.approx(1 - metrics["nse"]) and len(metrics["error_by_k"]) == 7
    zero = task.evaluate_model(ZeroModel(), batches=4, batch_size=64)
    assert zero["nse"] == pytest.approx(1.0, abs=0.1) and zero["r2"] == pytest.approx(0.0, abs=0.1)


class ZeroModel(nn.Module):
    """Predicts 0 everywhere: its normalised error is 1 at every k (in expectation)."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, inputs, state=None):
        return torch.zeros(*inputs.shape[:2], 1), None


def test_bad_options_are_one_line_errors():
    for kwargs in ({"function": "sine"}, {"function": {"linear": -1}}, {"noise_std": -1}, {"d": 0},
                   {"x_distribution": "cauchy"}, {"function": Blend("linear", "tree", 0.5)}, {"sparsity": 9}):
        with pytest.raises(SeqzooError) as err:
            ICLRegression(**kwargs)
        assert "\n" not in str(err.value)


def test_curriculum_zeroes_the_last_coordinates_of_training_inputs_only():
    task = ICLRegression(d=5, n_points=4, curriculum=(2, 10), seed=0)
    assert [task.active_dims(i) for i in (0, 9, 10, 25, 10**6)] == [2, 2, 3, 4, 5]
    early = task.sample("train", 0, 8)
    assert torch.all(early.xs[..., 2:] == 0) and torch.all(early.xs[..., :2] != 0)
    assert torch.allclose(ols(early.xs[:, :3], early.ys[:, :3], early.xs[:, 3]), early.ys[:, 3], atol=1e-10)
    assert torch.all(task.sample("val", 0, 8).xs != 0)
    with pytest.raises(SeqzooError):
        ICLRegression(curriculum=(0, 10))
