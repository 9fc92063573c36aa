"""Reproduction ``icl-algorithms``: a small trained transformer's in-context predictions track least squares
(noiseless) and move toward ridge regression when the labels are noisy.

Papers: "What learning algorithm is in-context learning? Investigations with linear models", Akyürek, Schuurmans,
Andreas, Ma and Zhou, 2022, arXiv 2211.15661 (the trained learner matches min-norm OLS without noise and the Bayes
posterior mean — ridge with λ = σ²/τ² — with noise; compared by the squared prediction difference, SPD), and
"What Can Transformers Learn In-Context?", Garg et al., 2022, arXiv 2208.01066 (the d = 5, 11-point "toy" setting
and the normalised squared error curve, which for OLS is 1 − k/d for k < d and 0 for k ≥ d).

Setting (fixed before any run): :class:`~seqzoo.tasks.icl.ICLRegression` with d = 5, 11 (x, y) pairs per prompt
(k = 0 … 10 examples before each query), x, w ~ N(0, I). Two training distributions: noiseless, and label noise
σ = ``NOISE`` = 1 (Garg et al.'s noisy evaluation uses noise std 1). Model: ``CausalLM`` with ``N_LAYERS`` softmax
attention layers (RoPE, ``N_HEADS`` heads), d_model ``D_MODEL``, GLU FFN, input adapter 6 → d_model, output 1;
trained with the shared trainer (AdamW, warm-up + cosine, clipping) for ``STEPS`` steps of batch ``BATCH`` at lr
``LR``, the loss averaged over all prefixes, with Garg et al.'s curriculum over input dimensions (``CURRICULUM``:
the last coordinates of x are 0 early in training; evaluation always uses all d). The two runs go in two
processes with one thread each.

Reference learners on the same ``EVAL_BATCHES`` × ``EVAL_BATCH`` validation prompts (seqzoo.tasks.icl.learners):
OLS (min-norm), ridge with λ = σ² = 1, one GD step with η tuned per k on training prompts (closed form), 3-NN, and
averaging. Reported: the normalised error curve vs k of the model and each learner, and the SPD between the model and
each learner (÷ d, mean over k), per k for OLS and ridge.

Checks: noiseless — the model's mean normalised error over k ≥ d is ≤ ``NEAR_ZERO`` (OLS: 0), and its SPD is
smallest to OLS among the learners; noisy — its SPD to ridge is below its SPD to OLS (it moved toward ridge) and is
the smallest among the learners. Quick mode: a tiny model and a few steps; its checks are not meant to hold.

Options (``--set key=value``): ``device`` (``cpu`` default, ``cuda``), ``steps`` (default ``STEPS``).
"""

from __future__ import annotations

import tempfile
import time

import torch

from ..core.errors import SeqzooError
from ..models import CausalLM, ModelConfig
from ..tasks.icl.learners import averaging, gd, knn, ols, prefix_predictions, ridge, tune_gd_lr
from ..tasks.icl.regression import ICLRegression
from ..train import Trainer
from ..train.config import TrainConfig
from .base import ReproResult, register_repro
from .common import fmt_curve, int_option, run_processes

D, N_POINTS, NOISE = 5, 11, 1.0
D_MODEL, N_LAYERS, N_HEADS = 64, 3, 4
STEPS, BATCH, LR = 6000, 64, 1e-3
CURRICULUM = (2, 1000)   # Garg et al.: input dimensions 2 → 5, one more every 1000 steps (all 5 from step 3000)
EVAL_BATCHES, EVAL_BATCH, TUNE_PROMPTS = 8, 256, 4096
NEAR_ZERO = 0.1
WORKERS = 2
QUICK = {"d_model": 16, "n_layers": 1, "steps": 3, "batch": 8, "eval_batches": 1, "eval_batch": 32,
         "tune_prompts": 64, "workers": 1}


def model_config(d_model: int, n_layers: int) -> ModelConfig:
    return ModelConfig(vocab_size=1, d_model=d_model, n_layers=n_layers, mixer="attention",
                       mixer_options={"attention": {"n_heads": N_HEADS}}, input_dim=D + 1, output_dim=1)


def learner_predictions(task: ICLRegression, p, tune_prompts: int) -> dict[str, torch.Tensor]:
    """Every reference learner's predictions ``[B, n]`` on prompts ``p`` (GD's η tuned on training prompts)."""
    tune = task.sample("train", 10**7, tune_prompts)
    lrs = tune_gd_lr(tune.xs, tune.ys, steps=1)
    return {"ols": prefix_predictions(ols, p.xs, p.ys),
            "ridge": prefix_predictions(ridge, p.xs, p.ys, lam=NOISE ** 2),
            "gd1": prefix_predictions(gd, p.xs, p.ys, steps=1, lr=lrs),
            "knn3": prefix_predictions(knn, p.xs, p.ys, neighbors=3),
            "averaging": prefix_predictions(averaging, p.xs, p.ys)}


def _train_and_compare(noise, d_model, n_layers, steps, batch, eval_batches, eval_batch, tune_prompts, threads,
                       device) -> dict:
    """Train one model on one noise level and compare it with the learners (a top-level function for workers)."""
    if threads:
        torch.set_num_threads(threads)
    cpu, wall = time.process_time(), time.perf_counter()
    task = ICLRegression(d=D, n_points=N_POINTS, noise_std=noise, seed=0, curriculum=CURRICULUM)
    torch.manual_seed(0)
    model = CausalLM(model_config(d_model, n_layers))
    cfg = TrainConfig(steps=steps, batch_size=batch, lr=LR, seed=0, warmup_steps=max(1, steps // 10),
                      eval_every=steps, eval_batches=2, checkpoint_every=10**9, keep_checkpoints=1, progress=False,
                      log_every=max(1, steps // 10), device=device)
    with tempfile.TemporaryDirectory(prefix="seqzoo-repro-icl-") as out_dir:
        Trainer(model, task, cfg, out_dir).fit()
    model = model.cpu()  # evaluated beside the reference learners on the CPU
    train_cpu = time.process_time() - cpu
    errors: dict[str, list] = {}
    spd: dict[str, list] = {}
    for index in range(eval_batches):
        p = task.sample("val", index, eval_batch)
        preds = {"model": task.predict(model, p), **learner_predictions(task, p, tune_prompts)}
        for name, pred in preds.items():
            errors.setdefault(name, []).append(task.normalised_error(p, pred))
            if name != "model":
                spd.setdefault(name, []).append(((preds["model"] - pred) ** 2 / p.scale[:, None]).mean(0))
    curve = {k: torch.stack(v).mean(0).tolist() for k, v in errors.items()}
    spd_by_k = {k: torch.stack(v).mean(0).tolist() for k, v in spd.items()}
    return {"noise": noise, "errors_by_k": curve, "spd_by_k": spd_by_k,
            "spd": {k: sum(v) / len(v) for k, v in spd_by_k.items()}, "parameters": model.num_parameters(),
            "train_cpu_seconds": train_cpu, "wall_seconds": time.perf_counter() - wall}



@register_repro("icl-algorithms", title="What learning algorithm is in-context learning? Investigations with "
                "linear models", arxiv="2211.15661",
                claim="A transformer trained on in-context linear regression predicts like min-norm least squares "
                      "when labels are noiseless (error → 0 for k ≥ d) and moves toward ridge regression "
                      "(the Bayes posterior mean) when they are noisy.")
def run(quick: bool, *, device: str = "cpu", steps=None) -> ReproResult:
    if device not in ("cpu", "cuda"):
        raise SeqzooError(f"icl-algorithms option device must be cpu or cuda, got {device!r}")
    if quick:
        q = QUICK
        d_model, n_layers, default_steps, batch = q["d_model"], q["n_layers"], q["steps"], q["batch"]
        eval_batches, eval_batch, tune_prompts, workers = q["eval_batches"], q["eval_batch"], q["tune_prompts"], 1
    else:
        d_model, n_layers, default_steps, batch = D_MODEL, N_LAYERS, STEPS, BATCH
        eval_batches, eval_batch, tune_prompts, workers = EVAL_BATCHES, EVAL_BATCH, TUNE_PROMPTS, WORKERS
    steps = int_option("icl-algorithms", "steps", steps, default_steps)
    start = time.perf_counter()
    jobs = [dict(noise=noise, d_model=d_model, n_layers=n_layers, steps=steps, batch=batch, eval_batches=eval_batches,
                 eval_batch=eval_batch, tune_prompts=tune_prompts, device=device,
                 threads=1 if workers > 1 and device == "cpu" else 0) for noise in (0.0, NOISE)]
    clean, noisy = run_processes(_train_and_compare, jobs, workers)
    result = ReproResult("icl-algorithms")
    result.details.update(noiseless=clean, noisy=noisy, wall_seconds=time.perf_counter() - start,
                          setup={"d": D, "n_points": N_POINTS, "noise": NOISE, "d_model": d_model,
                                 "n_layers": n_layers, "n_heads": N_HEADS, "steps": steps, "batch": batch, "lr": LR,
                                 "eval_prompts": eval_batches * eval_batch, "ridge_lambda": NOISE ** 2,
                                 "curriculum": CURRICULUM})

    tail = clean["errors_by_k"]["model"][D:]
    mean_tail = sum(tail) / len(tail)
    result.check(f"noiseless: model error at k ≥ d = {D} (mean normalised squared error)", mean_tail,
                 f"≤ {NEAR_ZERO} (OLS: 0; GD-1 {sum(clean['errors_by_k']['gd1'][D:]) / len(tail):.3f}, "
                 f"3-NN {sum(clean['errors_by_k']['knn3'][D:]) / len(tail):.3f})", mean_tail <= NEAR_ZERO)
    nearest = min(clean["spd"], key=clean["spd"].get)
    result.check("noiseless: learner closest to the model (SPD ÷ d)",
                 ", ".join(f"{k} {v:.4f}" for k, v in sorted(clean["spd"].items(), key=lambda kv: kv[1])),
                 "ols (Akyürek et al.: min-norm least squares)", nearest == "ols")
    s = noisy["spd"]
    result.check(f"noisy (σ = {NOISE:g}): SPD to ridge (λ = σ²) below SPD to OLS",
                 f"ridge {s['ridge']:.4f} vs ols {s['ols']:.4f}", "ridge < ols (moves toward the Bayes predictor)",
                 s["ridge"] < s["ols"])
    nearest_noisy = min(s, key=s.get)
    result.check(f"noisy (σ = {NOISE:g}): learner closest to the model (SPD ÷ d)",
                 ", ".join(f"{k} {v:.4f}" for k, v in sorted(s.items(), key=lambda kv: kv[1])),
                 "ridge (Akyürek et al.: ridge < GD < kNN)", nearest_noisy == "ridge")
    for name, r in (("noiseless", clean), ("noisy", noisy)):
        result.notes.append(f"{name} normalised error vs k=0…{N_POINTS - 1}: "
                            + "; ".join(f"{k} {fmt_curve(v)}" for k, v in r["errors_by_k"].items()))
        result.notes.append(f"{name} model-vs-OLS SPD by k {fmt_curve(r['spd_by_k']['ols'])}; model-vs-ridge "
                            f"{fmt_curve(r['spd_by_k']['ridge'])}")
    result.notes.append(f"parameters {clean['parameters']}; training CPU seconds {clean['train_cpu_seconds']:.0f} "
                        f"(noiseless), {noisy['train_cpu_seconds']:.0f} (noisy)")
    if quick:
        result.notes.append("quick mode: a smoke run, its checks are not meant to hold")
    return result


__all__ = ["learner_predictions", "model_config", "run"]
