"""Reproduction ``icl-gd``: a trained 1-layer linear self-attention model matches one step of gradient descent.

Paper: "Transformers learn in-context by gradient descent", von Oswald, Niklasson, Randazzo, Sacramento,
Mordvintsev, Zhmoginov and Vladymyrov, ICML 2023, arXiv 2212.07677 (sec. 3, Fig. 2). Headline for one layer: a
linear self-attention (LSA) layer trained on in-context linear regression reaches the loss of one gradient-descent
step with the best learning rate η*, and agrees with it on new tasks: the cosine similarity of their predictions and
of their sensitivities ∂ŷ/∂x_q is ≈ 1.

Setting (the paper's): d = 10 inputs, N = 10 in-context pairs and one query per task, w ~ N(0, I), x ~ U(−1, 1)^d
(the paper's text; its code draws U(−0.5, 0.5), a scale that η absorbs), noiseless y = wᵀx. Model:
:class:`~seqzoo.tasks.icl.lsa_gd.LSARegressor` with one layer, one head, key size 11, weights ~ N(0, ``INIT_STD``²);
Adam lr 1e-3, batch 2048, 5000 steps (the paper's notebook), loss = mean squared error of the query prediction.
GD baseline: ŷ = η* s with s = (1/N) Σ_i y_i x_iᵀx_q; η* = Σ s y_q / Σ s² in closed form on ``TUNE_BATCHES``
training batches (never on the evaluation tasks). The constructed LSA with η* (:func:`gd_construction`) is
evaluated too, as a check that it is the same predictor as GD.

Evaluation on ``EVAL_BATCHES`` × 2048 fresh validation tasks: the loss (½ mean squared error, as the paper) of the
trained LSA, of GD with η* and of the zero predictor; the cosine similarity of the two prediction vectors over all
tasks; the mean over tasks of the cosine similarity of the sensitivities ∂ŷ/∂x_q (for GD: η* s-gradient
(η*/N) Σ y_i x_i; for the LSA: autograd); and the relative L2 distance of the predictions.

Checks (fixed before any run): |L_LSA / L_GD − 1| ≤ ``LOSS_TOL`` (reference notes: "within about 1 %", relaxed to
2 %); prediction cosine ≥ ``COS_BAR``; sensitivity cosine ≥ ``COS_BAR``. Quick mode: a few steps, not meant to hold.
"""

from __future__ import annotations

import time

import torch

from ..tasks.icl.learners import gd
from ..tasks.icl.lsa_gd import LSARegressor, gd_construction
from ..tasks.icl.regression import ICLRegression
from .base import ReproResult, register_repro

D, N = 10, 10
STEPS, BATCH, LR = 5000, 2048, 1e-3
INIT_STD = 0.1
TUNE_BATCHES, EVAL_BATCHES = 20, 10
LOSS_TOL, COS_BAR = 0.02, 0.99
QUICK = {"steps": 20, "batch": 128, "tune_batches": 2, "eval_batches": 2}


def split_prompt(task: ICLRegression, split: str, index: int, batch: int):
    """Context ``X [B, N, d]``, ``y [B, N]``, query ``xq [B, d]`` and target ``yq [B]`` (float32)."""
    p = task.sample(split, index, batch)
    xs, ys = p.xs.float(), p.ys.float()
    return xs[:, :N], ys[:, :N], xs[:, N], ys[:, N]


def tune_eta(task: ICLRegression, batches: int, batch: int) -> float:
    """Closed-form best one-step GD rate on training tasks: η* = Σ s y_q / Σ s², s = one GD step with η = 1."""
    num = den = 0.0
    for index in range(batches):
        X, y, xq, yq = (t.double() for t in split_prompt(task, "train", 10**6 + index, batch))
        s = gd(X, y, xq, steps=1, lr=1.0)
        num, den = num + float((s * yq).sum()), den + float((s * s).sum())
    return num / den


def train_lsa(task: ICLRegression, *, steps: int, batch: int, seed: int = 0) -> tuple[LSARegressor, list[float]]:
    torch.manual_seed(seed)
    model = LSARegressor(D, n_layers=1, n_heads=1, init_std=INIT_STD)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    losses = []
    for step in range(steps):
        X, y, xq, yq = split_prompt(task, "train", step, batch)
        loss = 0.5 * ((model.predict(X, y, xq) - yq) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return model, losses


def sensitivity(model: LSARegressor, X, y, xq) -> torch.Tensor:
    """∂ŷ/∂x_q for every task, ``[B, d]`` (each prediction depends only on its own query)."""
    xq = xq.clone().requires_grad_(True)
    pred = model.predict(X, y, xq)
    (grad,) = torch.autograd.grad(pred.sum(), xq)
    return grad


def compare(model: LSARegressor, task: ICLRegression, eta: float, batches: int, batch: int, *,
            split: str = "val") -> dict:
    """Losses, prediction/sensitivity cosines and relative L2 distance on ``split`` tasks."""
    construction = gd_construction(D, eta, N, dtype=torch.float32)
    pl, pg, pc, targets, sens_cos = [], [], [], [], []
    for index in range(batches):
        X, y, xq, yq = split_prompt(task, split, (10**7 if split == "train" else 0) + index, batch)
        with torch.no_grad():
            pl.append(model.predict(X, y, xq))
            pg.append(gd(X.double(), y.double(), xq.double(), steps=1, lr=eta).float())
            pc.append(construction.predict(X, y, xq))
        targets.append(yq)
        s_lsa = sensitivity(model, X, y, xq)
        s_gd = (eta / N) * (y.unsqueeze(-1) * X).sum(1)
        sens_cos.append(torch.nn.functional.cosine_similarity(s_lsa, s_gd, dim=-1))
    pl, pg, pc, targets = (torch.cat(v) for v in (pl, pg, pc, targets))
    loss = lambda pred: 0.5 * float(((pred - targets) ** 2).mean())  # noqa: E731
    return {"loss_lsa": loss(pl), "loss_gd": loss(pg), "loss_construction": loss(pc),
            "loss_zero": loss(torch.zeros_like(targets)),
            "pred_cosine": float(torch.nn.functional.cosine_similarity(pl, pg, dim=0)),
            "sensitivity_cosine": float(torch.cat(sens_cos).mean()),
            "pred_rel_l2": float((pl - pg).norm() / pg.norm()),
            "construction_vs_gd_max_abs": float((pc - pg).abs().max())}


@register_repro("icl-gd", title="Transformers learn in-context by gradient descent", arxiv="2212.07677",
                claim="A 1-layer linear self-attention model trained on in-context linear regression (d = 10, "
                      "N = 10) matches one gradient-descent step with the best learning rate: equal loss, "
                      "cosine similarity of predictions and sensitivities ≈ 1.")
def run(quick: bool) -> ReproResult:
    steps, batch, tune_batches, eval_batches = ((QUICK["steps"], QUICK["batch"], QUICK["tune_batches"],
                                                 QUICK["eval_batches"]) if quick
                                                else (STEPS, BATCH, TUNE_BATCHES, EVAL_BATCHES))
    start = time.perf_counter()
    task = ICLRegression(d=D, n_points=N + 1, x_distribution="uniform", seed=0)
    eta = tune_eta(task, tune_batches, batch)
    model, losses = train_lsa(task, steps=steps, batch=batch)
    train_seconds = time.perf_counter() - start
    m = compare(model, task, eta, eval_batches, batch)
    result = ReproResult("icl-gd")
    result.details.update(m, eta_star=eta, train_seconds=train_seconds, wall_seconds=time.perf_counter() - start,
                          train_loss_first=losses[0], train_loss_last_100=sum(losses[-100:]) / len(losses[-100:]),
                          setup={"d": D, "N": N, "x": "U(-1,1)", "steps": steps, "batch": batch, "lr": LR,
                                 "init_std": INIT_STD, "eval_tasks": eval_batches * batch})
    ratio = m["loss_lsa"] / m["loss_gd"]
    result.check("trained LSA loss vs one GD step with tuned η*", f"{m['loss_lsa']:.4f} vs {m['loss_gd']:.4f} "
                 f"(ratio {ratio:.4f}; zero predictor {m['loss_zero']:.4f})",
                 f"|ratio − 1| ≤ {LOSS_TOL:g} (paper Fig. 2: the losses coincide)", abs(ratio - 1) <= LOSS_TOL)
    result.check("cosine similarity of predictions (LSA vs GD)", m["pred_cosine"], f"≥ {COS_BAR} (paper: ≈ 1)",
                 m["pred_cosine"] >= COS_BAR)
    result.check("cosine similarity of sensitivities ∂ŷ/∂x_q (mean over tasks)", m["sensitivity_cosine"],
                 f"≥ {COS_BAR} (paper: ≈ 1)", m["sensitivity_cosine"] >= COS_BAR)
    result.notes.append(f"η* = {eta:.4f} (closed form on {tune_batches * batch} training tasks); relative L2 "
                        f"distance of predictions {m['pred_rel_l2']:.4f}; constructed LSA(η*) vs GD max |Δŷ| "
                        f"{m['construction_vs_gd_max_abs']:.2e} (float32)")
    if quick:
        result.notes.append("quick mode: a smoke run, its checks are not meant to hold")
    return result


__all__ = ["compare", "run", "train_lsa", "tune_eta"]
