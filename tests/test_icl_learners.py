"""Reference learners for in-context regression (seqzoo.tasks.icl.learners), checked against closed forms.

Each test would fail for an obvious stub (predicting the mean y, or 0): OLS must recover w exactly from k ≥ d
noiseless examples and project it onto the examples' span for k < d; ridge must equal the Gaussian posterior mean
written in its other (kernel) form; GD must equal the explicit one-step formula and converge to OLS; k-NN must
return the labels of the nearest examples.
"""

from __future__ import annotations

import pytest
import torch

from seqzoo import SeqzooError
from seqzoo.tasks.icl import ICLRegression
from seqzoo.tasks.icl.learners import (LEARNERS, averaging, gd, knn, ols, ols_weights, prefix_predictions, ridge,
                                       ridge_weights, squared_prediction_difference, tune_gd_lr)

F64 = torch.float64


def data(B=64, k=8, d=5, seed=0, noise=0.0, tau=1.0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(B, k, d, generator=g, dtype=F64)
    w = tau * torch.randn(B, d, generator=g, dtype=F64)
    y = (X @ w.unsqueeze(-1)).squeeze(-1) + noise * torch.randn(B, k, generator=g, dtype=F64)
    xq = torch.randn(B, d, generator=g, dtype=F64)
    return X, y, xq, w


@pytest.mark.parametrize("k", [5, 9])
def test_ols_recovers_w_exactly_from_d_or_more_noiseless_examples(k):
    X, y, xq, w = data(k=k, d=5)
    assert torch.allclose(ols_weights(X, y), w, atol=1e-10, rtol=0)
    assert torch.allclose(ols(X, y, xq), (w * xq).sum(-1), atol=1e-10, rtol=0)


def test_ols_below_d_is_the_projection_of_w_onto_the_examples_span():
    X, y, xq, w = data(k=3, d=6)
    projector = torch.linalg.pinv(X) @ X                       # onto the row space of X
    assert torch.allclose(ols_weights(X, y), (projector @ w.unsqueeze(-1)).squeeze(-1), atol=1e-10, rtol=0)


def test_ols_expected_normalised_error_is_one_minus_k_over_d():
    """Noiseless, x, w ~ N(0, I): E (ŷ − y)²/d = 1 − k/d for k < d and 0 for k ≥ d (min-norm solution)."""
    task = ICLRegression(d=4, n_points=7, seed=3)
    p = task.sample("test", 0, 6000)
    err = task.normalised_error(p, prefix_predictions(ols, p.xs, p.ys))
    expected = torch.tensor([max(0.0, 1 - k / 4) for k in range(7)], dtype=F64)
    assert torch.allclose(err, expected, atol=0.06, rtol=0)
    assert float(err[4:].abs().max()) < 1e-18


def test_ridge_equals_the_gaussian_posterior_mean():
    """w ~ N(0, τ² I), ε ~ N(0, σ² I): E[w | X, y] = τ² Xᵀ(τ² X Xᵀ + σ² I)⁻¹ y = ridge with λ = σ²/τ²."""
    tau, sigma = 1.7, 0.6
    for k in (3, 12):
        X, y, xq, _ = data(k=k, d=5, noise=sigma, tau=tau, seed=k)
        kernel = tau ** 2 * X @ X.transpose(1, 2) + sigma ** 2 * torch.eye(k, dtype=F64)
        posterior = tau ** 2 * (X.transpose(1, 2) @ torch.linalg.solve(kernel, y.unsqueeze(-1))).squeeze(-1)
        assert torch.allclose(ridge_weights(X, y, sigma ** 2 / tau ** 2), posterior, atol=1e-10, rtol=0)
        assert torch.allclose(ridge(X, y, xq, lam=sigma ** 2 / tau ** 2), (posterior * xq).sum(-1), atol=1e-10, rtol=0)


@pytest.mark.parametrize("k", [3, 12])
def test_ridge_tends_to_min_norm_ols_as_lambda_vanishes(k):
    X, y, xq, _ = data(k=k, d=6, noise=0.3)
    assert torch.allclose(ridge(X, y, xq, lam=1e-7), ols(X, y, xq), atol=1e-5, rtol=0)
    assert not torch.allclose(ridge(X, y, xq, lam=1.0), ols(X, y, xq), atol=1e-3)


def test_one_gd_step_is_the_explicit_formula():
    X, y, xq, _ = data(k=7, d=4)
    eta = 0.37
    w1 = (eta / 7) * (X.transpose(1, 2) @ y.unsqueeze(-1)).squeeze(-1)   # −η ∇L(0), L = 1/(2k)||Xw − y||²
    assert torch.allclose(gd(X, y, xq, steps=1, lr=eta), (w1 * xq).sum(-1), atol=1e-12, rtol=0)
    assert torch.allclose(averaging(X, y, xq), gd(X, y, xq, steps=1, lr=1.0), atol=1e-12, rtol=0)


@pytest.mark.parametrize("k", [3, 40])
def test_gd_converges_to_ols_for_a_safe_step(k):
    """From w₀ = 0, GD with η < 2/λ_max(XᵀX/k) converges to the least-squares (min-norm when k < d) solution."""
    X, y, xq, _ = data(k=k, d=5, noise=0.5, B=8)
    lam_max = torch.linalg.eigvalsh(X.transpose(1, 2) @ X / k).max()
    eta = float(1.0 / lam_max)
    assert torch.allclose(gd(X, y, xq, steps=3000, lr=eta), ols(X, y, xq), atol=1e-8, rtol=0)
    assert not torch.allclose(gd(X, y, xq, steps=2, lr=eta), ols(X, y, xq), atol=1e-3)


def test_knn_returns_the_labels_of_the_nearest_examples():
    X, y, xq, _ = data(k=9, d=3, B=16)
    assert torch.allclose(knn(X, y, X[:, 4], neighbors=1), y[:, 4])          # a query at an example
    assert torch.allclose(knn(X, y, xq, neighbors=50), y.mean(1))            # more neighbours than examples
    dist = ((X - xq[:, None]) ** 2).sum(-1)
    brute = torch.stack([y[b, dist[b].argsort()[:3]].mean() for b in range(16)])
    assert torch.allclose(knn(X, y, xq, neighbors=3), brute)


def test_every_learner_predicts_zero_with_no_examples_and_is_permutation_invariant():
    X, y, xq, _ = data(k=6, d=4, noise=0.2)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(1))
    for name, learner in LEARNERS.items():
        assert torch.equal(learner(X[:, :0], y[:, :0], xq), torch.zeros(X.shape[0], dtype=F64)), name
        assert torch.allclose(learner(X, y, xq), learner(X[:, perm], y[:, perm], xq), atol=1e-10), name


def test_prefix_predictions_use_only_earlier_examples():
    X, y, _, _ = data(k=8, d=3)
    preds = prefix_predictions(ridge, X, y, lam=0.5)
    for i in range(8):
        assert torch.allclose(preds[:, i], ridge(X[:, :i], y[:, :i], X[:, i], lam=0.5))
    y2 = y.clone()
    y2[:, 5:] += 10.0                                     # later labels do not change earlier predictions
    assert torch.equal(prefix_predictions(ridge, X, y2, lam=0.5)[:, :6], preds[:, :6])


def test_tuned_gd_rate_is_the_least_squares_optimum():
    task = ICLRegression(d=5, n_points=9, seed=0)
    p = task.sample("train", 0, 512)
    lrs = tune_gd_lr(p.xs, p.ys)
    assert lrs[0] == 0.0 and all(lr > 0 for lr in lrs[1:])
    k = 6
    X, y, xq, yq = p.xs[:, :k], p.ys[:, :k], p.xs[:, k], p.ys[:, k]
    best = float(((gd(X, y, xq, lr=lrs[k]) - yq) ** 2).mean())
    for factor in (0.8, 0.95, 1.05, 1.25):
        assert best < float(((gd(X, y, xq, lr=lrs[k] * factor) - yq) ** 2).mean())
    grid_lrs = tune_gd_lr(p.xs, p.ys, steps=2)
    assert len(grid_lrs) == 9 and grid_lrs[0] == 0.0


def test_spd_is_zero_for_identical_learners_and_scaled():
    X, y, _, _ = data(k=6, d=3)
    a = prefix_predictions(ols, X, y)
    assert float(squared_prediction_difference(a, a).abs().max()) == 0.0
    b = a + 2.0
    scale = torch.full((X.shape[0],), 4.0, dtype=F64)
    assert torch.allclose(squared_prediction_difference(a, b, scale), torch.full((6,), 1.0, dtype=F64))


def test_bad_arguments_are_one_line_errors():
    X, y, xq, _ = data(k=4, d=3)
    for call in (lambda: ridge(X, y, xq, lam=0.0), lambda: knn(X, y, xq, neighbors=0),
                 lambda: gd(X, y, xq, steps=-1), lambda: ols(X, y, xq[:, :2])):
        with pytest.raises(SeqzooError) as err:
            call()
        assert "\n" not in str(err.value)


def test_lasso_satisfies_its_optimality_conditions_and_recovers_sparse_w():
    """KKT of min 1/(2k)||Xw − y||² + α||w||₁: g = Xᵀ(Xw − y)/k has g_j = −α sign(w_j) where w_j ≠ 0 and
    |g_j| ≤ α where w_j = 0."""
    from seqzoo.tasks.icl.learners import lasso, lasso_weights

    task = ICLRegression(d=8, n_points=6, function="sparse_linear", sparsity=2, seed=0)
    p = task.sample("train", 0, 16)
    X, y = p.xs, p.ys
    alpha = 0.05
    w = lasso_weights(X, y, alpha=alpha, sweeps=300)
    g = (X.transpose(1, 2) @ ((X @ w.unsqueeze(-1)).squeeze(-1) - y).unsqueeze(-1)).squeeze(-1) / X.shape[1]
    active = w.abs() > 1e-10
    assert torch.allclose(g[active], -alpha * torch.sign(w[active]), atol=1e-6)
    assert bool((g[~active].abs() <= alpha + 1e-6).all()) and bool((~active).any())
    # with k = 6 < d = 8 examples OLS cannot recover w, the lasso nearly can (sparsity 2)
    big = ICLRegression(d=8, n_points=7, function="sparse_linear", sparsity=2, seed=1).sample("test", 0, 400)
    X, y, xq, yq = big.xs[:, :6], big.ys[:, :6], big.xs[:, 6], big.ys[:, 6]
    err_lasso = float(((lasso(X, y, xq, alpha=0.01, sweeps=100) - yq) ** 2).mean())
    err_ols = float(((ols(X, y, xq) - yq) ** 2).mean())
    assert err_lasso < 0.5 * err_ols
