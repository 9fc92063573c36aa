"""Reproduction ``wide-attention``: one wide attention layer vs a deep stack with the same total number of heads on
byte-level text classification — comparable accuracy, fewer parameters, lower CPU inference latency.

Paper: "Wide Attention Is The Way Forward For Transformers?", Brown, Zhao, Shumailov and Mullins, 2022,
arXiv 2210.00640. Claims (abstract): single-layer wide models are on average 0.3 % more accurate than deep ones at
the same total number of heads (4 NLP tasks, 10 attention types); on IMDb byte-level classification the single
layer model has 3.1× lower CPU inference latency than its equally accurate deeper counterpart and is half the size.
What is measured, as in the paper: accuracy, parameter count and CPU inference latency.

Setup, fixed before the recorded run (docs/repro/wide-attention.md says how):

* Task: :meth:`seqzoo.tasks.text.classification.TextClassification.kjv` ``"testaments"`` — is a 256-byte window of
  the King James Bible from the Old or the New Testament (balanced classes, chance 0.5; the last 10 % of each
  testament is the validation text). A byte-level binary text classification, like byte-level IMDb.
* Models: :class:`seqzoo.models.wide.AspectRatioClassifier` (bidirectional encoder, mean pooling), d_model 64,
  8 heads in total of width 16, GLU FFN; wide = 1 layer × 8 heads, deep = 4 layers × 2 heads (the same config with
  ``n_layers`` changed).
* Training, the same for both: ``STEPS`` AdamW steps of ``BATCH`` windows, lr ``LR``, 10 % warm-up then cosine,
  seed 0, through :class:`seqzoo.train.Trainer`; the two runs go side by side in two processes with one thread each.
* Accuracy on ``EVAL_BATCHES`` × 64 fixed validation windows.
* Latency: one forward pass of a batch of 1 (and of 32) windows, one CPU thread, the median of ``LATENCY_REPEATS``
  timed runs after ``WARMUP`` untimed ones, the two models alternating run by run.

Checks: equal total heads and head width; wide accuracy ≥ deep accuracy − ``ACC_TOL`` (the paper's "comparable";
the tolerance covers the evaluation's sampling error of about ±1 point per model); wide has fewer parameters;
deep / wide latency at batch 1 ≥ ``MIN_SPEEDUP`` (reference notes: ≥ 1.5× on CPU).

Quick mode (the test suite's smoke run): a tiny model, window and budget; its checks are not meant to hold.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import torch

from ..models.wide import AspectRatioClassifier, AspectRatioConfig
from ..tasks.text.classification import TextClassification, classification_accuracy
from ..train import Trainer
from ..train.config import TrainConfig
from .base import ReproResult, register_repro
from .common import run_processes

TASK, WINDOW = "testaments", 256
D_MODEL, TOTAL_HEADS, HEAD_DIM = 64, 8, 16
WIDE_LAYERS, DEEP_LAYERS = 1, 4
STEPS, BATCH, LR = 400, 32, 2e-3
EVAL_BATCHES = 32
LATENCY_REPEATS, WARMUP = 21, 3
ACC_TOL, MIN_SPEEDUP = 0.02, 1.5
QUICK = dict(window=32, d_model=16, head_dim=4, steps=3, batch=4, eval_batches=1, repeats=3, warmup=1)


def base_config(d_model: int = D_MODEL, head_dim: int = HEAD_DIM, n_classes: int = 2) -> AspectRatioConfig:
    return AspectRatioConfig(vocab_size=256, d_model=d_model, total_heads=TOTAL_HEADS, n_layers=1,
                             head_dim=head_dim, n_classes=n_classes)


def _train(job: tuple) -> dict:
    """Train one aspect ratio (top-level so that a worker process can run it); returns metrics and weights."""
    cfg, window, steps, batch, eval_batches, threads = job
    if threads:
        torch.set_num_threads(threads)
    task = TextClassification.kjv(TASK, window)
    torch.manual_seed(0)
    model = AspectRatioClassifier(cfg)
    train_cfg = TrainConfig(steps=steps, batch_size=batch, lr=LR, warmup_steps=max(1, steps // 10),
                            eval_every=steps, eval_batches=2, checkpoint_every=10**9, keep_checkpoints=1,
                            progress=False, log_every=max(1, steps // 5), device="cpu", seed=0)
    start, cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(prefix="seqzoo-repro-wide-") as out_dir:
        Trainer(model, task, train_cfg, out_dir).fit()
    metrics = classification_accuracy(model, task, batches=eval_batches, batch_size=64)
    metrics.update(n_layers=cfg.n_layers, heads_per_layer=cfg.heads_per_layer, parameters=model.num_parameters(),
                   train_seconds=time.perf_counter() - start, train_cpu_seconds=time.process_time() - cpu,
                   weights=model.state_dict())
    return metrics


@torch.no_grad()
def latencies(models: dict[str, torch.nn.Module], inputs: torch.Tensor, repeats: int, warmup: int) -> dict:
    """Median (and min) seconds of one forward pass per model, the models alternating run by run."""
    for model in models.values():
        model.eval()
        for _ in range(warmup):
            model(inputs)
    times = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            start = time.perf_counter()
            model(inputs)
            times[name].append(time.perf_counter() - start)
    return {name: {"median_s": statistics.median(t), "min_s": min(t)} for name, t in times.items()}


@register_repro("wide-attention", title="Wide Attention Is The Way Forward For Transformers?", arxiv="2210.00640",
                claim="byte-level text classification: one layer of 8 heads is as accurate as 4 layers of 2 heads, "
                      "with fewer parameters and lower CPU latency")
def run(quick: bool) -> ReproResult:
    if quick:
        q = QUICK
        window, d_model, head_dim, steps, batch = q["window"], q["d_model"], q["head_dim"], q["steps"], q["batch"]
        eval_batches, repeats, warmup = q["eval_batches"], q["repeats"], q["warmup"]
    else:
        window, d_model, head_dim, steps, batch = WINDOW, D_MODEL, HEAD_DIM, STEPS, BATCH
        eval_batches, repeats, warmup = EVAL_BATCHES, LATENCY_REPEATS, WARMUP
    result = ReproResult("wide-attention")
    wall = time.perf_counter()
    base = base_config(d_model, head_dim)
    configs = {"wide": base.with_layers(WIDE_LAYERS), "deep": base.with_layers(DEEP_LAYERS)}
    workers = 1 if quick else min(2, os.cpu_count() or 1)
    jobs = [(cfg, window, steps, batch, eval_batches, 1 if workers > 1 else 0) for cfg in configs.values()]
    runs = run_processes(_train, [{"job": job} for job in jobs], workers)
    models = {}
    for name, metrics in zip(configs, runs):
        model = AspectRatioClassifier(configs[name])
        model.load_state_dict(metrics.pop("weights"))
        models[name] = model
        result.details[name] = metrics

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        task = TextClassification.kjv(TASK, window)
        one = task.get_batch("val", 10_000, 1)["inputs"]
        many = task.get_batch("val", 10_001, 32)["inputs"]
        lat1 = latencies(models, one, repeats, warmup)
        lat32 = latencies(models, many, repeats, warmup)
    finally:
        torch.set_num_threads(threads)
    for name in models:
        result.details[name]["latency_batch1"] = lat1[name]
        result.details[name]["latency_batch32"] = lat32[name]
    result.details["setup"] = {"task": TASK, "window": window, "d_model": d_model, "total_heads": TOTAL_HEADS,
                               "head_dim": head_dim, "steps": steps, "batch": batch, "lr": LR,
                               "eval_windows": eval_batches * 64, "latency_repeats": repeats, "train_workers": workers}
    result.details["wall_seconds"] = time.perf_counter() - wall
    if hasattr(os, "getloadavg"):
        result.details["load_average_at_end"] = os.getloadavg()[0]

    wide, deep = result.details["wide"], result.details["deep"]
    heads = {name: (cfg.n_layers * cfg.heads_per_layer, cfg.head_dim) for name, cfg in configs.items()}
    result.check("equal total heads and head width", f"wide {configs['wide'].n_layers}x{configs['wide'].heads_per_layer}"
                 f", deep {configs['deep'].n_layers}x{configs['deep'].heads_per_layer}, head_dim {head_dim}",
                 "layers × heads equal", heads["wide"] == heads["deep"])
    result.check(f"wide accuracy ≥ deep − {ACC_TOL}", f"wide {wide['accuracy']:.4f}, deep {deep['accuracy']:.4f}",
                 "comparable (paper: wide 0.3 % better on average)", wide["accuracy"] >= deep["accuracy"] - ACC_TOL)
    result.check("wide has fewer parameters", f"wide {wide['parameters']}, deep {deep['parameters']} "
                 f"({wide['parameters'] / deep['parameters']:.2f}x)", "smaller (paper: half the size on IMDb)",
                 wide["parameters"] < deep["parameters"])
    speedup = deep["latency_batch1"]["median_s"] / wide["latency_batch1"]["median_s"]
    speedup32 = deep["latency_batch32"]["median_s"] / wide["latency_batch32"]["median_s"]
    result.check("CPU latency, deep / wide (batch 1, median, 1 thread)",
                 f"{speedup:.2f}x ({deep['latency_batch1']['median_s'] * 1e3:.2f} vs "
                 f"{wide['latency_batch1']['median_s'] * 1e3:.2f} ms)",
                 f"≥ {MIN_SPEEDUP}x (paper: 3.1x on IMDb vs an equally accurate deeper model)", speedup >= MIN_SPEEDUP)
    result.notes.append(f"batch 32: deep / wide latency {speedup32:.2f}x "
                        f"({deep['latency_batch32']['median_s'] * 1e3:.1f} vs "
                        f"{wide['latency_batch32']['median_s'] * 1e3:.1f} ms)")
    result.notes.append(f"chance accuracy 0.5; {eval_batches * 64} validation windows of {window} bytes")
    if quick:
        result.notes.append("quick mode: a smoke run, its checks are not meant to hold")
    return result


__all__ = ["run", "base_config", "latencies"]
