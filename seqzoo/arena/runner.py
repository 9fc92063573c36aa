"""The arena: train a grid of mixers × tasks × sizes × learning rates × seeds under one budget.

A grid (:class:`ArenaConfig`, from the ``[arena]`` table of a TOML file) expands to one flat config per run. Each
run builds its task from the task registry and a :class:`~seqzoo.models.CausalLM` from the mixer registry — no
per-mixer code — trains it with :func:`seqzoo.repro.common.train_on_task`, and stores the metrics in SQLite. A
run is keyed by the SHA-256 of its full config, so a restarted arena skips every run already in the database
(resumable after a kill). The budget is ``steps`` or ``tokens`` per run (tokens are turned into steps at that
run's batch size and sequence length), plus an optional ``max_seconds`` for the whole arena, after which no new
run starts. Results are compared as in Zoology: for each mixer, task, length and width, the best over learning
rates (of the mean over seeds).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..core.errors import SeqzooError
from ..core.registry import build_mixer, list_mixers, mixer_entry
from ..models import ModelConfig
from ..repro.common import train_on_task
from .db import RunDB
from .tasks import get_task, list_tasks


@dataclass
class ArenaConfig:
    """One arena grid. ``mixers = ["all"]`` means every registered mixer; ``seq_lens`` empty means each task's
    default length. Exactly one of ``steps`` and ``tokens`` sets the per-run training budget."""

    mixers: list = field(default_factory=lambda: ["attention"])
    tasks: list = field(default_factory=lambda: ["mqar"])
    d_models: list = field(default_factory=lambda: [32])
    lrs: list = field(default_factory=lambda: [1e-3])
    seeds: list = field(default_factory=lambda: [0])
    seq_lens: list = field(default_factory=list)
    n_layers: int = 2
    steps: int | None = None
    tokens: int | None = None
    batch_size: int = 16
    eval_batches: int = 4
    max_seconds: float | None = None
    num_threads: int = 0  # torch CPU threads for the arena; 0 leaves torch's default
    on_error: str = "stop"  # "stop": a failing run stops the arena; "skip": log it and go on (a rerun retries it)
    db: str = "runs/arena.sqlite"
    task_options: dict = field(default_factory=dict)
    mixer_options: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> "ArenaConfig":
        """Build from a parsed TOML document (its ``[arena]``, ``[task_options.*]`` and ``[mixer_options.*]``
        tables, or a flat dict of the fields); unknown keys are a one-line error."""
        valid = [f.name for f in fields(cls)]
        flat = dict(data.get("arena", {}))
        for key, value in data.items():
            if key in ("task_options", "mixer_options"):
                flat[key] = value
            elif key != "arena":
                flat[key] = value
        unknown = [k for k in flat if k not in valid]
        if unknown:
            raise SeqzooError(f"unknown arena key {unknown[0]!r}; valid: {', '.join(valid)}")
        cfg = cls(**flat)
        cfg.validate()
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> "ArenaConfig":
        import tomllib

        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SeqzooError(f"arena config {str(path)!r} does not exist") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise SeqzooError(f"arena config {str(path)!r} is not valid TOML: {e}") from None
        return cls.from_dict(data)

    def mixer_names(self) -> list[str]:
        return list_mixers() if list(self.mixers) == ["all"] else list(self.mixers)

    def validate(self) -> None:
        """Check names, types and ranges, raising :class:`SeqzooError` on the first bad value."""
        for key in ("mixers", "tasks", "d_models", "lrs", "seeds", "seq_lens"):
            value = getattr(self, key)
            if not isinstance(value, list) or (key != "seq_lens" and not value):
                raise SeqzooError(f"arena.{key} must be a non-empty list, got {value!r}")
        for key, kind in (("d_models", int), ("seeds", int), ("seq_lens", int), ("lrs", (int, float))):
            for v in getattr(self, key):
                if isinstance(v, bool) or not isinstance(v, kind) or (key != "seeds" and v <= 0):
                    raise SeqzooError(f"arena.{key} must hold positive numbers, got {v!r}")
        for name in self.mixer_names():
            mixer_entry(name)  # unknown mixer -> one-line error listing the valid ones
        for name in self.tasks:
            get_task(name)
        for key, opts, valid in (("task_options", self.task_options, list_tasks()),
                                 ("mixer_options", self.mixer_options, list_mixers())):
            for name, table in opts.items():
                if name not in valid or not isinstance(table, dict):
                    raise SeqzooError(f"arena.{key}.{name} must be a table for a registered name; "
                                      f"valid: {', '.join(valid)}")
        if (self.steps is None) == (self.tokens is None):
            raise SeqzooError("arena needs exactly one budget: steps or tokens")
        if isinstance(self.num_threads, bool) or not isinstance(self.num_threads, int) or self.num_threads < 0:
            raise SeqzooError(f"arena.num_threads must be a non-negative integer, got {self.num_threads!r}")
        for key in ("steps", "tokens", "n_layers", "batch_size", "eval_batches"):
            v = getattr(self, key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
                raise SeqzooError(f"arena.{key} must be a positive integer, got {v!r}")
        if self.max_seconds is not None and not (isinstance(self.max_seconds, (int, float)) and self.max_seconds > 0):
            raise SeqzooError(f"arena.max_seconds must be a positive number, got {self.max_seconds!r}")
        if self.on_error not in ("stop", "skip"):
            raise SeqzooError(f"arena.on_error: {self.on_error!r} is not valid; valid: 'stop', 'skip'")
        for name in self.tasks:  # bad task options or lengths fail here, before any training
            for seq_len in self.seq_lens or [None]:
                get_task(name).build(seq_len, 0, **self.task_options.get(name, {}))
        for name in self.mixer_names():
            build_mixer(name, self.d_models[0], **self.mixer_options.get(name, {}))


def run_key(config: dict) -> str:
    """The identity of a run: a SHA-256 of its config as canonical JSON."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:32]


def expand_grid(cfg: ArenaConfig) -> list[dict]:
    """Every run of the grid as a flat, JSON-serialisable config (task, length, mixer, width, lr, seed order)."""
    runs = []
    for task in cfg.tasks:
        entry = get_task(task)
        for seq_len in cfg.seq_lens or [entry.default_seq_len]:
            steps = cfg.steps or max(1, cfg.tokens // (cfg.batch_size * seq_len))
            for mixer in cfg.mixer_names():
                for d_model in cfg.d_models:
                    for lr in cfg.lrs:
                        for seed in cfg.seeds:
                            runs.append({
                                "task": task, "task_options": dict(cfg.task_options.get(task, {})),
                                "seq_len": seq_len, "mixer": mixer,
                                "mixer_options": dict(cfg.mixer_options.get(mixer, {})), "d_model": d_model,
                                "n_layers": cfg.n_layers, "lr": float(lr), "seed": seed, "steps": steps,
                                "batch_size": cfg.batch_size, "eval_batches": cfg.eval_batches,
                            })
    return runs


def run_one(config: dict) -> dict:
    """Train and evaluate one run of the grid; returns its metrics (accuracy, state size, seconds, ...)."""
    task = get_task(config["task"])
    source = task.build(config["seq_len"], config["seed"], **config["task_options"])
    model_cfg = ModelConfig(vocab_size=source.vocab_size, d_model=config["d_model"], n_layers=config["n_layers"],
                            mixer=config["mixer"], mixer_options={config["mixer"]: config["mixer_options"]}
                            if config["mixer_options"] else {}, input_dim=getattr(source, "input_dim", None),
                            output_dim=getattr(source, "output_dim", None))  # continuous tasks (ICL regression)
    model_cfg.validate()
    wall, cpu = time.perf_counter(), time.process_time()
    _, metrics = train_on_task(model_cfg, source, steps=config["steps"], batch_size=config["batch_size"],
                               lr=config["lr"], seed=config["seed"], eval_batches=config["eval_batches"])
    metrics = dict(metrics)
    metrics.update(wall_seconds=time.perf_counter() - wall, cpu_seconds=time.process_time() - cpu,
                   score=metrics[task.metric], metric=task.metric)
    metrics["accuracy"] = float(metrics[task.metric])
    return metrics


def run_arena(cfg: ArenaConfig, db: RunDB, *, log=print) -> dict:
    """Run every grid point not yet in ``db``; returns counts ``total``, ``skipped``, ``ran``, ``failed`` and
    ``stopped`` (true when ``max_seconds`` ran out before the grid was done)."""
    grid = expand_grid(cfg)
    done = db.done_keys()
    if cfg.num_threads:
        import torch

        torch.set_num_threads(cfg.num_threads)
    start = time.perf_counter()
    counts = {"total": len(grid), "skipped": 0, "ran": 0, "failed": 0, "stopped": False}
    for i, config in enumerate(grid, 1):
        key = run_key(config)
        if key in done:
            counts["skipped"] += 1
            continue
        if cfg.max_seconds is not None and time.perf_counter() - start > cfg.max_seconds:
            counts["stopped"] = True
            log(f"arena: max_seconds={cfg.max_seconds} spent; {len(grid) - i + 1} runs left for a rerun")
            break
        label = (f"[{i}/{len(grid)}] {config['task']} T={config['seq_len']} {config['mixer']} "
                 f"d={config['d_model']} lr={config['lr']:g} seed={config['seed']}")
        try:
            metrics = run_one(config)
        except Exception as e:
            if cfg.on_error == "stop":
                raise
            counts["failed"] += 1
            log(f"{label}: FAILED {type(e).__name__}: {' '.join(str(e).split())}")
            continue
        db.insert(key, config, metrics)
        counts["ran"] += 1
        log(f"{label}: acc {metrics['accuracy']:.3f} state {metrics['state_size']} "
            f"({metrics['cpu_seconds']:.1f} cpu-s, {metrics['wall_seconds']:.1f} s)")
    return counts


def best_over_lr(runs: list[dict]) -> list[dict]:
    """For each (task, seq_len, mixer, d_model): the learning rate with the highest mean accuracy over seeds,
    and that accuracy. ``runs`` are rows from :meth:`RunDB.runs`. Sorted by task, length, accuracy (best first)."""
    groups: dict[tuple, dict[float, list[dict]]] = {}
    for row in runs:
        if row["accuracy"] is None:
            continue
        group = (row["task"], row["seq_len"], row["mixer"], row["d_model"])
        groups.setdefault(group, {}).setdefault(row["lr"], []).append(row)
    out = []
    for (task, seq_len, mixer, d_model), by_lr in groups.items():
        means = {lr: sum(r["accuracy"] for r in rows) / len(rows) for lr, rows in by_lr.items()}
        lr = max(means, key=lambda k: (means[k], -k))
        rows = by_lr[lr]
        out.append({"task": task, "seq_len": seq_len, "mixer": mixer, "d_model": d_model, "accuracy": means[lr],
                    "best_lr": lr, "lrs": sorted(by_lr), "seeds": len(rows), "state_size": rows[0]["state_size"],
                    "parameters": rows[0]["parameters"],
                    "cpu_seconds": sum(r["cpu_seconds"] or 0.0 for rs in by_lr.values() for r in rs)})
    out.sort(key=lambda r: (r["task"], r["seq_len"], -r["accuracy"], r["mixer"], r["d_model"]))
    return out


def format_leaderboard(best: list[dict]) -> str:
    """The best-over-lr rows as a plain-text table."""
    header = f"{'task':18s} {'T':>5s} {'mixer':20s} {'d':>4s} {'acc':>6s} {'best lr':>8s} {'state':>9s} {'params':>8s}"
    lines = [header, "-" * len(header)]
    for r in best:
        lines.append(f"{r['task']:18s} {r['seq_len']:5d} {r['mixer']:20s} {r['d_model']:4d} {r['accuracy']:6.3f} "
                     f"{r['best_lr']:8.0e} {r['state_size'] or 0:9d} {r['parameters'] or 0:8d}")
    return "\n".join(lines)


__all__ = ["ArenaConfig", "best_over_lr", "expand_grid", "format_leaderboard", "run_arena", "run_key",
           "run_one"]
