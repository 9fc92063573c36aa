"""Mixtures of function classes for in-context regression (seqzoo/tasks/icl/mixtures.py): class frequencies,
normalisation, out-of-distribution blends and sinusoids, and the exact Bayes reference learners."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from seqzoo.core.errors import SeqzooError
from seqzoo.tasks.icl.learners import ols, prefix_predictions
from seqzoo.tasks.icl.mixtures import MIXTURE_CLASSES, MixtureICL, bayes_linear
from seqzoo.tasks.icl.regression import Blend


def test_mixture_draws_each_class_with_its_declared_weight():
    weights = {"linear": 1.0, "sparse_linear": 2.0, "sinusoid": 3.0, "decision_tree": 4.0}
    task = MixtureICL(d=4, n_points=3, function=weights, seed=5)
    kinds = Counter()
    for index in range(4):
        kinds.update(task.sample("train", index, 2000).kinds)
    total = sum(kinds.values())
    for name, w in weights.items():
        p = w / sum(weights.values())
        assert abs(kinds[name] / total - p) < 4 * math.sqrt(p * (1 - p) / total), (name, kinds)
    zero = MixtureICL(d=4, n_points=3, function={"linear": 1.0, "relu_nn": 0.0})
    assert set(zero.sample("train", 0, 200).kinds) == {"linear"}


@pytest.mark.parametrize("kind", MIXTURE_CLASSES)
def test_every_class_is_normalised_to_unit_second_moment(kind):
    task = MixtureICL(d=5, n_points=20, function=kind, seed=1)
    p = task.sample("val", 0, 2000)
    assert float((p.fs ** 2).mean()) == pytest.approx(1.0, rel=0.1)
    assert torch.equal(p.scale, torch.ones(2000, dtype=torch.float64))
    assert torch.equal(p.ys, p.fs)   # noiseless
    batch = task.get_batch("train", 0, 3)
    assert batch["inputs"].shape == (3, 40, 6) and batch["loss_mask"][:, 0::2].all()


def test_blend_and_out_of_range_sinusoids():
    task = MixtureICL(d=3, n_points=10, function=Blend("linear", "sinusoid", 0.25))
    p = task.sample("val", 0, 4000)
    assert set(p.kinds) == {"0.25·linear+0.75·sinusoid"}
    assert float(p.scale[0]) == pytest.approx(0.25 ** 2 + 0.75 ** 2)
    assert float((p.fs ** 2).mean()) == pytest.approx(0.625, rel=0.1)
    # one sinusoid per prompt with |ω| in the range: along its direction v, f = √2 sin(ω t + φ) has period 2π/ω
    slow = MixtureICL(d=2, n_points=4, function="sinusoid", frequency=(0.5, 0.5)).sample("val", 0, 1)
    fast = MixtureICL(d=2, n_points=4, function="sinusoid", frequency=(4.0, 4.0)).sample("val", 0, 1)
    assert slow.fs.abs().max() <= math.sqrt(2) and not torch.allclose(slow.fs, fast.fs)
    with pytest.raises(SeqzooError, match="frequency"):
        MixtureICL(function="sinusoid", frequency=(2.0, 1.0))


def test_bad_classes_and_weights_are_one_line_errors():
    for bad, needle in (("nope", "unknown function class 'nope'"), ({"linear": -1}, "weight of 'linear'"),
                        ({"linear": 0}, "must not all be 0"), (Blend("linear", "wave", 0.5), "'wave'")):
        with pytest.raises(SeqzooError) as err:
            MixtureICL(function=bad)
        assert needle in str(err.value) and "\n" not in str(err.value)
    task = MixtureICL(function="relu_nn")
    with pytest.raises(SeqzooError, match="Bayes reference exists for mixtures of linear, sparse_linear only"):
        task.linear_components()
    assert "bayes" not in task.reference_predictions(task.sample("val", 0, 2), "relu_nn")


def _errors(task: MixtureICL, prompts, reference) -> torch.Tensor:
    return task.normalised_error(prompts, task.reference_predictions(prompts, reference)["bayes"])


def test_each_class_reference_learner_is_best_on_its_own_class():
    """Bayes-sparse beats OLS and Bayes-dense on sparse prompts before k = d; Bayes-dense (= OLS when noiseless)
    beats Bayes-sparse on dense prompts; the mixture's Bayes learner is best on the mixture (model selection)."""
    d, n = 5, 7
    sparse = MixtureICL(d=d, n_points=n, function="sparse_linear", sparsity=2, seed=0)
    dense = MixtureICL(d=d, n_points=n, function="linear", sparsity=2, seed=0)
    mixed = MixtureICL(d=d, n_points=n, function={"linear": 0.5, "sparse_linear": 0.5}, sparsity=2, seed=0)
    mixture = {"linear": 0.5, "sparse_linear": 0.5}

    p = sparse.sample("val", 0, 400)
    e_sparse, e_dense = _errors(sparse, p, "sparse_linear"), _errors(sparse, p, "linear")
    e_ols = sparse.normalised_error(p, prefix_predictions(ols, p.xs, p.ys))
    assert (e_sparse[3:d] < 0.01).all() and (e_ols[3:d] > 0.1).all()     # s < k < d: support found, OLS not done
    assert e_sparse[1:].mean() < e_dense[1:].mean()

    p = dense.sample("val", 0, 400)
    e_dense, e_sparse = _errors(dense, p, "linear"), _errors(dense, p, "sparse_linear")
    assert torch.allclose(e_dense, dense.normalised_error(p, prefix_predictions(ols, p.xs, p.ys)), atol=1e-3)
    assert (e_dense[d:] < 1e-3).all() and e_dense[1:].mean() < e_sparse[1:].mean()

    p = mixed.sample("val", 0, 600)
    means = {ref: float(_errors(mixed, p, ref)[1:].mean()) for ref in ("linear", "sparse_linear")}
    means["mixture"] = float(_errors(mixed, p, mixture)[1:].mean())
    assert means["mixture"] < min(means["linear"], means["sparse_linear"])


def test_bayes_linear_with_one_dense_support_is_ridge():
    """One support (all coordinates) and w ~ N(0, v I): the posterior mean is ridge with λ = σ²/v."""
    torch.manual_seed(0)
    xs, ys = torch.randn(6, 5, 3, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    v, noise = 0.5, 0.3
    got = bayes_linear(xs, ys, [((0, 1, 2), 1.0, v)], noise_var=noise)
    for k in range(1, 5):
        X, y, xq = xs[:, :k], ys[:, :k], xs[:, k]
        w = torch.linalg.solve(X.transpose(1, 2) @ X + (noise / v) * torch.eye(3, dtype=torch.float64),
                               X.transpose(1, 2) @ y.unsqueeze(-1)).squeeze(-1)
        assert torch.allclose(got[:, k], (w * xq).sum(-1), atol=1e-10)
    assert torch.equal(got[:, 0], torch.zeros(6, dtype=torch.float64))
    with pytest.raises(SeqzooError, match="noise_var"):
        bayes_linear(xs, ys, [((0,), 1.0, 1.0)], noise_var=0.0)


def test_quick_reproduction_runs_and_reports_its_checks():
    from seqzoo.repro import get_repro

    result = get_repro("data-mixtures-icl").run(True)
    assert len(result.checks) == 7 and "quick mode" in result.render()
    curves = result.details["in_distribution"]["sparse_linear"]
    assert {"A", "B", "C", "ols", "knn3", "bayes_sparse", "bayes_dense", "bayes_mixture"} <= set(curves)
    assert len(curves["C"]) == 11
