"""Training configuration: the ``[train]`` table of a TOML config.

Plain typed fields with defaults so :func:`seqzoo.core.config.from_dict` can load and type-check them; choices
are ``Literal`` so a wrong value is a one-line error naming the valid ones. :meth:`TrainConfig.validate` checks
ranges (and is called by ``from_dict`` and by the trainer), raising :class:`SeqzooError` on the first bad value.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, fields
from typing import Literal

from ..core.errors import SeqzooError


@dataclass
class TrainConfig:
    """How to train a model (see :class:`seqzoo.train.Trainer`).

    ``batch_size`` is the GLOBAL batch: with ``torchrun --nproc_per_node=N`` each rank takes ``batch_size / N``
    contiguous rows of the same global batch, so a run's data does not depend on the number of processes.
    ``lr`` is the peak rate after ``warmup_steps`` of linear warm-up; a cosine then takes it to
    ``min_lr_ratio·lr`` at ``steps``. Zero disables ``grad_clip``; ``eval_every = 0`` / ``checkpoint_every = 0``
    mean "only at the end"; the newest ``keep_checkpoints`` checkpoints are kept. ``log_every`` is in steps.
    ``num_threads = 0`` keeps torch's default intra-op thread count. ``precision = "auto"`` is bf16 autocast on
    CUDA and fp32 elsewhere (bf16 is refused on CPU). ``deterministic`` asks torch for deterministic kernels
    (needed for bit-exact resume on CUDA; CPU training is deterministic for a fixed thread count anyway).
    """

    steps: int = 1000
    batch_size: int = 32
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    eval_every: int = 200
    eval_batches: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    compile: bool = False
    num_threads: int = 0
    progress: bool = True
    deterministic: bool = False

    def validate(self) -> None:
        """Raise :class:`SeqzooError` naming the first field with a bad value."""
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            value, tp = getattr(self, f.name), hints[f.name]
            if typing.get_origin(tp) is Literal:
                choices = typing.get_args(tp)
                if value not in choices:
                    raise SeqzooError(f"train.{f.name}: {value!r} is not valid; valid: "
                                      f"{', '.join(map(repr, choices))}")
            elif tp is bool and not isinstance(value, bool):
                raise SeqzooError(f"train.{f.name}: expected true or false, got {value!r}")
            elif tp is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise SeqzooError(f"train.{f.name}: expected an integer, got {value!r}")
            elif tp is float and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
                raise SeqzooError(f"train.{f.name}: expected a finite number, got {value!r}")

        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise SeqzooError(f"train.{name} must be {rule}, got {getattr(self, name)!r}")

        for name in ("steps", "batch_size", "eval_batches", "keep_checkpoints", "log_every"):
            need(getattr(self, name) >= 1, name, ">= 1")
        for name in ("warmup_steps", "eval_every", "checkpoint_every", "num_threads", "seed"):
            need(getattr(self, name) >= 0, name, ">= 0")
        need(self.lr > 0, "lr", "> 0")
        need(0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio", "in [0, 1]")
        need(self.weight_decay >= 0, "weight_decay", ">= 0")
        need(0.0 <= self.beta1 < 1.0, "beta1", "in [0, 1)")
        need(0.0 <= self.beta2 < 1.0, "beta2", "in [0, 1)")
        need(self.eps > 0, "eps", "> 0")
        need(self.grad_clip >= 0, "grad_clip", ">= 0 (0 disables clipping)")
        if self.device == "cpu" and self.precision == "bf16":
            raise SeqzooError("train.precision 'bf16' needs CUDA (bf16 autocast runs on GPU only); "
                              "use precision = 'fp32' or 'auto' on CPU")
