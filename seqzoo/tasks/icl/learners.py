"""Reference learners for in-context regression, run on the same prompts as a trained model.

Papers: Garg et al. 2022, arXiv 2208.01066 (OLS, k-NN, averaging baselines); Akyürek et al. 2022, arXiv
2211.15661 (the trained learner is compared with ridge / OLS / gradient descent; squared prediction difference);
von Oswald et al. 2023, arXiv 2212.07677 (one gradient step with a tuned learning rate).

Every learner maps the in-context examples ``X [B, k, d]``, ``y [B, k]`` and a query ``xq [B, d]`` to a
prediction ``[B]``, and predicts 0 when k = 0 (the prior mean of every task class here):

* ``ols``:       ŵ = X⁺ y (Moore–Penrose pseudo-inverse: least squares, the minimum-norm solution when k < d);
* ``ridge``:     ŵ = (XᵀX + λ I)⁻¹ Xᵀ y. For y = Xw + ε, w ~ N(0, τ² I), ε ~ N(0, σ² I) the posterior mean of w is
                 τ² Xᵀ(τ² X Xᵀ + σ² I)⁻¹ y, the same vector for λ = σ²/τ² (λ → 0 gives OLS's minimum-norm ŵ);
* ``gd``:        ``steps`` steps of gradient descent from w₀ = 0 on L(w) = 1/(2k) Σ_i (wᵀx_i − y_i)²,
                 w ← w − η ∇L(w) = w − (η/k) Xᵀ(Xw − y) (→ the OLS solution as steps → ∞ when η < 2/λ_max(XᵀX/k));
* ``knn``:       the mean of y over the ``neighbors`` examples nearest to xq (Euclidean; fewer when k is smaller);
* ``averaging``: ŵ = (1/k) Σ_i y_i x_i (Garg et al.'s "averaging" estimator; = one GD step with η = 1);
* ``lasso``:     ŵ = argmin 1/(2k) ||Xw − y||² + α ||w||₁ by cyclic coordinate descent (Garg et al.'s baseline for
                 sparse regression): w_j ← S(x_jᵀ r_j / k, α) / (||x_j||² / k), r_j the residual without
                 coordinate j and S(z, α) = sign(z) max(|z| − α, 0).

:func:`prefix_predictions` runs a learner at every prefix of a prompt (the prediction for y_i uses the i − 1
examples before it), which is what a causal model does at its x positions. :func:`tune_gd_lr` picks the GD
learning rate that minimises the squared error on (training) prompts, in closed form for one step:
ŷ = η s with s = (1/k) Σ_i y_i x_iᵀ x_q, so η* = Σ s y_q / Σ s².
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ...core.errors import SeqzooError

Learner = Callable[..., Tensor]


def _zero_if_empty(X: Tensor, xq: Tensor) -> Tensor | None:
    if X.dim() != 3 or xq.dim() != 2 or X.shape[0] != xq.shape[0] or X.shape[2] != xq.shape[1]:
        raise SeqzooError(f"learners take X [B, k, d] and xq [B, d], got {list(X.shape)} and {list(xq.shape)}")
    return xq.new_zeros(xq.shape[0]) if X.shape[1] == 0 else None


def ols_weights(X: Tensor, y: Tensor) -> Tensor:
    """Minimum-norm least-squares weights X⁺ y, ``[B, d]``."""
    return (torch.linalg.pinv(X) @ y.unsqueeze(-1)).squeeze(-1)


def ols(X: Tensor, y: Tensor, xq: Tensor) -> Tensor:
    zero = _zero_if_empty(X, xq)
    return zero if zero is not None else (ols_weights(X, y) * xq).sum(-1)


def ridge_weights(X: Tensor, y: Tensor, lam: float) -> Tensor:
    """(XᵀX + λ I)⁻¹ Xᵀ y, ``[B, d]`` (λ > 0)."""
    if lam <= 0:
        raise SeqzooError(f"ridge needs lam > 0 (lam → 0 is ols), got {lam}")
    d = X.shape[-1]
    gram = X.transpose(1, 2) @ X + lam * torch.eye(d, dtype=X.dtype, device=X.device)
    return torch.linalg.solve(gram, (X.transpose(1, 2) @ y.unsqueeze(-1))).squeeze(-1)


def ridge(X: Tensor, y: Tensor, xq: Tensor, *, lam: float = 1.0) -> Tensor:
    zero = _zero_if_empty(X, xq)
    return zero if zero is not None else (ridge_weights(X, y, lam) * xq).sum(-1)


def gd_weights(X: Tensor, y: Tensor, *, steps: int = 1, lr: float = 1.0) -> Tensor:
    """``steps`` GD steps on L(w) = 1/(2k) ||Xw − y||² from w₀ = 0, ``[B, d]``."""
    if steps < 0:
        raise SeqzooError(f"gd needs steps >= 0, got {steps}")
    k = X.shape[1]
    w = X.new_zeros(X.shape[0], X.shape[2])
    for _ in range(steps):
        residual = (X @ w.unsqueeze(-1)).squeeze(-1) - y
        w = w - (lr / k) * (X.transpose(1, 2) @ residual.unsqueeze(-1)).squeeze(-1)
    return w


def gd(X: Tensor, y: Tensor, xq: Tensor, *, steps: int = 1, lr: float = 1.0) -> Tensor:
    zero = _zero_if_empty(X, xq)
    return zero if zero is not None else (gd_weights(X, y, steps=steps, lr=lr) * xq).sum(-1)


def knn(X: Tensor, y: Tensor, xq: Tensor, *, neighbors: int = 3) -> Tensor:
    if neighbors < 1:
        raise SeqzooError(f"knn needs neighbors >= 1, got {neighbors}")
    zero = _zero_if_empty(X, xq)
    if zero is not None:
        return zero
    dist = ((X - xq.unsqueeze(1)) ** 2).sum(-1)
    idx = dist.topk(min(neighbors, X.shape[1]), dim=1, largest=False).indices
    return y.gather(1, idx).mean(1)


def averaging(X: Tensor, y: Tensor, xq: Tensor) -> Tensor:
    zero = _zero_if_empty(X, xq)
    return zero if zero is not None else ((y.unsqueeze(-1) * X).mean(1) * xq).sum(-1)


def lasso_weights(X: Tensor, y: Tensor, *, alpha: float = 0.1, sweeps: int = 200) -> Tensor:
    """Lasso weights by ``sweeps`` rounds of cyclic coordinate descent from 0, ``[B, d]``."""
    if alpha < 0 or sweeps < 1:
        raise SeqzooError(f"lasso needs alpha >= 0 and sweeps >= 1, got alpha={alpha}, sweeps={sweeps}")
    k, d = X.shape[1], X.shape[2]
    w = X.new_zeros(X.shape[0], d)
    residual = y.clone()
    norms = (X * X).sum(1) / k                                        # [B, d]
    for _ in range(sweeps):
        for j in range(d):
            xj = X[:, :, j]
            residual = residual + xj * w[:, j:j + 1]                  # residual without coordinate j
            rho = (xj * residual).sum(1) / k
            new = torch.sign(rho) * (rho.abs() - alpha).clamp_min(0) / norms[:, j].clamp_min(1e-300)
            w = torch.cat([w[:, :j], new.unsqueeze(1), w[:, j + 1:]], dim=1)
            residual = residual - xj * new.unsqueeze(1)
    return w


def lasso(X: Tensor, y: Tensor, xq: Tensor, *, alpha: float = 0.1, sweeps: int = 200) -> Tensor:
    zero = _zero_if_empty(X, xq)
    return zero if zero is not None else (lasso_weights(X, y, alpha=alpha, sweeps=sweeps) * xq).sum(-1)


def prefix_predictions(learner: Learner, xs: Tensor, ys: Tensor, **kwargs) -> Tensor:
    """``[B, n]``: column i is ``learner(xs[:, :i], ys[:, :i], xs[:, i])`` (k = i examples in context).
    A per-k keyword (e.g. a GD learning rate tuned for each k) may be given as a list of n values."""
    n = xs.shape[1]
    out = []
    for i in range(n):
        kw = {key: (value[i] if isinstance(value, (list, tuple)) else value) for key, value in kwargs.items()}
        out.append(learner(xs[:, :i], ys[:, :i], xs[:, i], **kw))
    return torch.stack(out, dim=1)


def tune_gd_lr(xs: Tensor, ys: Tensor, *, steps: int = 1, grid: Tensor | None = None) -> list[float]:
    """For every prefix length k = 0 … n − 1, the GD learning rate with the least squared error on these
    prompts: closed form for one step (η* = Σ s y_q / Σ s²), else the best of ``grid`` (log-spaced by default).
    Tune on training prompts, never on the prompts the learners are compared on."""
    n = xs.shape[1]
    lrs = [0.0]
    for k in range(1, n):
        X, y, xq, yq = xs[:, :k], ys[:, :k], xs[:, k], ys[:, k]
        if steps == 1:
            s = gd(X, y, xq, steps=1, lr=1.0)
            lrs.append(float((s * yq).sum() / (s * s).sum().clamp_min(1e-300)))
        else:
            candidates = grid if grid is not None else torch.logspace(-3, 1, 41, dtype=xs.dtype)
            errors = [float(((gd(X, y, xq, steps=steps, lr=float(lr)) - yq) ** 2).mean()) for lr in candidates]
            lrs.append(float(candidates[min(range(len(errors)), key=errors.__getitem__)]))
    return lrs


def squared_prediction_difference(a: Tensor, b: Tensor, scale: Tensor | None = None) -> Tensor:
    """Akyürek et al.'s SPD between two learners' predictions ``[B, n]``, per k (divided by E f² when given)."""
    diff = (a - b) ** 2
    if scale is not None:
        diff = diff / scale[:, None]
    return diff.mean(0)


LEARNERS: dict[str, Learner] = {"ols": ols, "ridge": ridge, "gd": gd, "knn": knn, "averaging": averaging,
                                "lasso": lasso}

__all__ = ["LEARNERS", "averaging", "gd", "gd_weights", "knn", "lasso", "lasso_weights", "ols", "ols_weights", "prefix_predictions", "ridge",
           "ridge_weights", "squared_prediction_difference", "tune_gd_lr"]
