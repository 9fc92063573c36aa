"""The trainer: one loop for every model, alone or under ``torchrun``, with exact resume.

Step ``s`` (0-based) trains on ``data.get_batch("train", s, batch_size)``. Batches are a pure function of the
step, so the data position of a run *is* its step: resuming restores model, optimiser, scheduler and RNG states
from the newest checkpoint in ``out_dir`` and carries on from its step, and on CPU (fixed thread count) the
result is bit-for-bit the uninterrupted run's. Under data parallelism every rank builds the same global batch and
takes its contiguous block of rows; DDP averages gradients, so a run with N processes follows the same curve as
one process (up to float rounding), and the loss, gradient norm and evaluation are reduced across ranks.

Per step: forward (``model.loss(batch)``, under bf16 autocast on CUDA when asked), backward, gradient clipping,
AdamW step, schedule step. Every ``log_every`` steps a line goes to ``out_dir/metrics.jsonl``
(``step, loss, lr, grad_norm, tokens_per_s, elapsed``); every ``eval_every`` steps and at the end the mean loss
over ``eval_batches`` validation batches is logged (``step, val_loss, val_bpt, elapsed``; bits per token =
loss / ln 2). Checkpoints are written every ``checkpoint_every`` steps and at the end, keeping the newest
``keep_checkpoints``. Only rank 0 writes files. Logged ``loss`` is the loss of that step (not a window mean), so
a resumed run's log is identical to an uninterrupted one's apart from timings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core.errors import SeqzooError
from . import distributed as dist
from .checkpoint import (apply_model_state, capture_rng_state, checkpoint_dir, latest_checkpoint, load_checkpoint,
                         prune_checkpoints, restore_rng_state, save_checkpoint)
from .config import TrainConfig
from .optim import build_optimizer, build_scheduler, scheduler_state
from .progress import TrainProgress

METRICS_FILE = "metrics.jsonl"
LN2 = math.log(2.0)


class LossModule(nn.Module):
    """``forward(batch) = model.loss(batch)``: the module DDP wraps, so its gradient hooks fire on backward."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict) -> torch.Tensor:
        return self.model.loss(batch)


def resolve_device(name: str) -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SeqzooError("train.device is 'cuda' but no CUDA device is available; use device = 'cpu' or 'auto'")
    return name


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The JSON objects of a ``metrics.jsonl`` file (a run dir or the file); unreadable lines are skipped."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only complete lines with ``step <= last_step`` (rewritten atomically)."""
    if not path.exists():
        return
    keep = [json.dumps(r) for r in read_metrics(path) if isinstance(r.get("step"), int) and r["step"] <= last_step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in keep), encoding="utf-8")
    os.replace(tmp, path)


class Trainer:
    """Train ``model`` (anything with ``.loss(batch) -> scalar``) on a batch source with :class:`TrainConfig`.

    ``run_config`` is stored in every checkpoint (the CLI passes its full config so it can rebuild the model);
    by default it is ``{"train": cfg, "model": model.cfg}`` when the model has a dataclass ``cfg``.
    Under ``torchrun`` the process group is created here and torn down when :meth:`fit` returns.
    """

    def __init__(self, model: nn.Module, data, cfg: TrainConfig, out_dir: str | os.PathLike, *,
                 run_config: dict | None = None):
        cfg.validate()
        self.cfg = cfg
        self.data = data
        self.out_dir = Path(out_dir)
        if run_config is None:
            run_config = {"train": dataclasses.asdict(cfg)}
            if dataclasses.is_dataclass(getattr(model, "cfg", None)):
                run_config["model"] = dataclasses.asdict(model.cfg)
        self.run_config = run_config

        device_type = resolve_device(cfg.device)
        precision = cfg.precision if cfg.precision != "auto" else ("bf16" if device_type == "cuda" else "fp32")
        if precision == "bf16" and device_type != "cuda":
            raise SeqzooError("train.precision 'bf16' needs CUDA (bf16 autocast runs on GPU only); "
                              "use precision = 'fp32' or 'auto' on CPU")
        self.precision = precision
        if cfg.num_threads > 0:
            torch.set_num_threads(cfg.num_threads)
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False

        self._owns_group = dist.setup(device_type)
        self.rank, self.world = dist.rank(), dist.world_size()
        self.is_main = self.rank == 0  # stays valid after fit() has left the process group
        if cfg.batch_size % self.world:
            self._close()
            raise SeqzooError(f"train.batch_size={cfg.batch_size} is the global batch and must divide by the "
                              f"number of processes ({self.world}); use a multiple of {self.world}")
        self.device = torch.device("cuda", dist.local_rank() if self.world > 1 else torch.cuda.current_device()) \
            if device_type == "cuda" else torch.device("cpu")
        self._seed_rngs(cfg.seed)

        self.model = model.to(self.device)
        self.model.train()
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.module = dist.wrap(LossModule(self.model), self.device)
        if cfg.compile:
            self.module = torch.compile(self.module)
        # the group whose lr is logged (the first non-custom one); an index, since loading state replaces the dicts
        names = [g["name"] for g in self.optimizer.param_groups]
        self._main_group = next((i for i, n in enumerate(names) if not n.startswith("custom")), 0)

        self.step = 0
        self.tokens = 0
        self.elapsed = 0.0
        self.metrics: dict = {}
        self.resumed_from: Path | None = None
        self.last_checkpoint: Path | None = None
        self._metrics_file = None

    # -- helpers ------------------------------------------------------------------------------------------------
    def _seed_rngs(self, seed: int) -> None:
        torch.manual_seed(seed + self.rank)
        random.seed(seed + self.rank)
        np.random.seed((seed + self.rank) % 2**32)

    def _close(self) -> None:
        if self._owns_group:
            dist.teardown()
            self._owns_group = False

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _local_batch(self, split: str, index: int) -> dict:
        """Rows ``[rank·b, (rank+1)·b)`` of global batch ``index`` (``b = batch_size / world``), on the device."""
        batch = self.data.get_batch(split, index, self.cfg.batch_size)
        rows = batch["inputs"].shape[0]
        if rows != self.cfg.batch_size:
            raise SeqzooError(f"data.get_batch({split!r}, {index}, {self.cfg.batch_size}) returned {rows} rows; "
                              f"a batch source must return exactly batch_size rows")
        per = rows // self.world
        lo = self.rank * per
        out = {}
        for k, v in batch.items():
            if isinstance(v, torch.Tensor):
                if self.world > 1 and v.dim() > 0 and v.shape[0] == rows:
                    v = v[lo: lo + per]
                v = v.to(self.device, non_blocking=True)
            out[k] = v
        return out

    def _log(self, row: dict) -> None:
        if self._metrics_file is not None:
            self._metrics_file.write(json.dumps(row) + "\n")
            self._metrics_file.flush()

    # -- resume, evaluate, checkpoint ---------------------------------------------------------------------------
    def _resume(self) -> None:
        found = latest_checkpoint(self.out_dir) if self.is_main else None
        found = dist.broadcast_json(str(found) if found is not None else None)
        if found is None:
            return
        ckpt = load_checkpoint(found)
        apply_model_state(self.model, ckpt.model_state, str(ckpt.path))
        if ckpt.optimizer_state is None:
            raise SeqzooError(f"checkpoint {ckpt.path} has no optimizer state; it cannot be resumed")
        try:
            self.optimizer.load_state_dict(ckpt.optimizer_state)
        except (ValueError, KeyError, RuntimeError) as e:
            raise SeqzooError(f"checkpoint {ckpt.path}: optimizer state does not match this model's parameter "
                              f"groups ({e}); use the same model and config to resume") from None
        if ckpt.scheduler_state:
            self.scheduler.load_state_dict(dict(ckpt.scheduler_state))
        if self.rank < len(ckpt.rng):
            restore_rng_state(ckpt.rng[self.rank])
        else:  # more ranks than when saved: a fresh, distinct stream per rank
            self._seed_rngs(self.cfg.seed + 7919 * ckpt.step)
        self.step = ckpt.step
        self.tokens = int(ckpt.extra.get("tokens", 0))
        self.elapsed = float(ckpt.extra.get("elapsed", 0.0))
        self.metrics = dict(ckpt.metrics)
        self.resumed_from = ckpt.path

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Mean validation loss over ``eval_batches`` batches (reduced across ranks) and bits per token."""
        self.model.eval()
        total = 0.0
        try:
            with self._autocast():
                for i in range(self.cfg.eval_batches):
                    total += float(self.model.loss(self._local_batch("val", i)))
        finally:
            self.model.train()
        val = dist.all_reduce_mean(total / self.cfg.eval_batches)
        return {"val_loss": val, "val_bpt": val / LN2}

    def _save(self) -> Path | None:
        rng = dist.all_gather_json(capture_rng_state())
        path = None
        if self.is_main:
            path = save_checkpoint(checkpoint_dir(self.out_dir, self.step), model=self.model,
                                   optimizer=self.optimizer, scheduler_state=scheduler_state(self.scheduler),
                                   step=self.step, config=self.run_config, metrics=self.metrics, rng=rng,
                                   extra={"tokens": self.tokens, "elapsed": self.elapsed, "world_size": self.world})
            prune_checkpoints(self.out_dir, self.cfg.keep_checkpoints)
        dist.barrier()
        return path

    # -- the loop -----------------------------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train to ``cfg.steps`` (resuming from ``out_dir`` if it holds a checkpoint); returns final metrics."""
        cfg = self.cfg
        self._metrics_file = None
        progress = None
        try:
            self._resume()
            if self.is_main:
                self.out_dir.mkdir(parents=True, exist_ok=True)
                _truncate_metrics(self.out_dir / METRICS_FILE, self.step)
                self._metrics_file = open(self.out_dir / METRICS_FILE, "a", encoding="utf-8")
            if self.step < cfg.steps:
                progress = TrainProgress(cfg.steps, self.step, enabled=cfg.progress and self.is_main)
                self._train(progress)
            result = dict(self.metrics, step=self.step)
            last = self.last_checkpoint or self.resumed_from
            if last is not None:
                result["checkpoint"] = str(last)
            return result
        finally:
            if progress is not None:
                progress.close()
            if self._metrics_file is not None:
                self._metrics_file.close()
                self._metrics_file = None
            self._close()

    def _train(self, progress: TrainProgress) -> None:
        cfg = self.cfg
        window_tokens, window_time = 0, 0.0
        start_time = time.perf_counter()
        elapsed_base = self.elapsed
        for step in range(self.step, cfg.steps):
            t0 = time.perf_counter()
            batch = self._local_batch("train", step)
            with self._autocast():
                loss = self.module(batch)
            loss.backward()
            max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            lr = float(self.optimizer.param_groups[self._main_group]["lr"])
            self.scheduler.step()
            self.step = done = step + 1
            step_tokens = batch["inputs"].shape[0] * batch["inputs"].shape[1] * self.world
            self.tokens += step_tokens
            window_tokens += step_tokens
            if self.device.type == "cuda" and (done % cfg.log_every == 0 or done == cfg.steps):
                torch.cuda.synchronize(self.device)
            window_time += time.perf_counter() - t0
            self.elapsed = elapsed_base + time.perf_counter() - start_time

            is_log = done % cfg.log_every == 0 or done == cfg.steps
            is_eval = (cfg.eval_every > 0 and done % cfg.eval_every == 0) or done == cfg.steps
            is_ckpt = (cfg.checkpoint_every > 0 and done % cfg.checkpoint_every == 0) or done == cfg.steps
            if is_log or is_eval or is_ckpt:
                loss_value = dist.all_reduce_mean(float(loss.detach()))
                if not math.isfinite(loss_value):
                    raise SeqzooError(f"training diverged at step {done}: loss is {loss_value}; "
                                      "lower train.lr or set train.grad_clip")
                self.metrics.update(step=done, loss=loss_value, lr=lr, grad_norm=float(grad_norm))
            if is_log:
                tps = window_tokens / max(window_time, 1e-9)
                self._log({"step": done, "loss": loss_value, "lr": lr, "grad_norm": float(grad_norm),
                           "tokens_per_s": tps, "elapsed": round(self.elapsed, 4)})
                progress.update(done, loss=loss_value, lr=lr, tok_s=round(tps))
                window_tokens, window_time = 0, 0.0
            if is_eval:
                result = self.evaluate()
                self.elapsed = elapsed_base + time.perf_counter() - start_time
                self.metrics.update(result, eval_step=done)
                self._log({"step": done, **result, "elapsed": round(self.elapsed, 4)})
                progress.note(f"step {done}: val_loss {result['val_loss']:.4f}  ({result['val_bpt']:.4f} bits/token)")
            if is_ckpt:
                self.metrics.update(tokens=self.tokens, elapsed=self.elapsed)
                self.last_checkpoint = self._save()
