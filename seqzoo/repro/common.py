"""Shared plumbing for reproductions: train a CausalLM on a task with the trainer, then evaluate it."""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import torch

from ..core.data import BatchSource
from ..core.errors import SeqzooError
from ..models import CausalLM, ModelConfig
from ..tasks.metrics import token_accuracy
from ..train import Trainer
from ..train.config import TrainConfig


def train_on_task(model_cfg: ModelConfig, task: BatchSource, *, steps: int, batch_size: int = 32, lr: float = 1e-3,
                  seed: int = 0, warmup_steps: int | None = None, weight_decay: float = 0.1,
                  eval_batches: int = 8) -> tuple[CausalLM, dict]:
    """Train a fresh model on ``task`` for ``steps`` steps (no checkpoints kept) and report accuracy on its
    validation split, with the parameter count, state size and wall time."""
    torch.manual_seed(seed)
    model = CausalLM(model_cfg)
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, weight_decay=weight_decay,
                      warmup_steps=warmup_steps if warmup_steps is not None else max(1, steps // 10),
                      eval_every=steps, eval_batches=2, checkpoint_every=10**9, keep_checkpoints=1, progress=False,
                      log_every=max(1, steps // 10))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="seqzoo-repro-") as out_dir:
        Trainer(model, task, cfg, out_dir).fit()
    seconds = time.perf_counter() - start
    evaluate = getattr(task, "evaluate_model", None)  # a task with its own metrics (continuous ICL regression)
    metrics = (evaluate(model, batches=eval_batches, batch_size=batch_size) if evaluate is not None
               else token_accuracy(model, task, split="val", batches=eval_batches, batch_size=batch_size))
    seq_len = getattr(task, "seq_len", 64)
    metrics.update(parameters=model.num_parameters(), state_size=model.state_size(seq_len), train_seconds=seconds)
    return model, metrics


def int_option(repro_id: str, name: str, value, default: int) -> int:
    """A ``--set name=value`` integer option of reproduction ``repro_id``: ``default`` when unset; positive (``seed``
    may be 0); anything else is a one-line :class:`SeqzooError`."""
    if value is None:
        return default
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise SeqzooError(f"{repro_id} option {name} must be an integer, got {value!r}") from None
    if out < 0 or (name != "seed" and out == 0):
        raise SeqzooError(f"{repro_id} option {name} must be positive, got {value!r}")
    return out


def run_processes(fn, jobs: list[dict], workers: int) -> list:
    """``[fn(**job) for job in jobs]``, ``workers`` at a time in fresh (spawned) processes, or in this process when
    ``workers`` ≤ 1. ``fn`` must be a module-level function and its results picklable. Independent training runs
    of a reproduction use this to share a machine (several small models on one GPU, or several CPU cores)."""
    if workers <= 1 or len(jobs) <= 1:
        return [fn(**job) for job in jobs]
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(fn, **job) for job in jobs]
        return [f.result() for f in futures]


def fmt_curve(values) -> str:
    """A curve (e.g. error by number of in-context examples) as ``[0.123, 0.045, …]`` for a result note."""
    return "[" + ", ".join(f"{v:.3f}" for v in values) + "]"
