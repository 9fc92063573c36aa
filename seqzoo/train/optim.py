"""AdamW parameter groups and the warm-up + cosine learning-rate schedule.

Weight decay rule: decay applies to weight matrices (parameters with two or more dimensions) only. Biases,
normalisation gains and other 1-D/scalar parameters are not decayed (decaying them only pulls gains towards 0),
and neither are embedding tables (``nn.Embedding`` weights): rows of rare tokens get few gradient updates and
decay would shrink them towards zero between updates. A head tied to the embedding is the same tensor, so it
follows the embedding rule. Shared parameters appear once (``named_parameters`` deduplicates them).

Parameters marked with :func:`seqzoo.core.set_optim` (for example SSM ``A`` and ``Δ``: no decay, own lr) go into
their own group per distinct ``(lr, weight_decay)``; a key the mark leaves out follows the default. Each group's
``lr`` is its own base rate, and the scheduler multiplies every group's base rate by the same factor, so an
overridden group keeps its ratio to the main rate throughout the run.

The schedule is a pure function of the step (linear warm-up from ``lr/warmup`` to ``lr``, then a half cosine
down to ``min_lr_ratio·lr`` at ``steps``, constant after), applied through ``torch.optim.lr_scheduler.LambdaLR``,
whose state (step counter, base rates) is plain numbers and is saved in checkpoints.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..core.mixer import get_optim
from .config import TrainConfig


def no_decay_parameter_ids(model: nn.Module) -> set[int]:
    """``id()`` of every parameter that gets no weight decay by default (1-D/scalar and embedding tables)."""
    ids = {id(p) for p in model.parameters() if p.dim() < 2}
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            ids.add(id(module.weight))
    return ids


def param_groups(model: nn.Module, *, lr: float, weight_decay: float) -> list[dict]:
    """AdamW parameter groups for ``model`` (see the module docstring). Frozen parameters are left out.

    Each group has ``params``, ``lr``, ``weight_decay`` and a ``name`` (``decay``, ``no_decay`` or
    ``custom_<i>``); empty groups are dropped.
    """
    no_decay = no_decay_parameter_ids(model)
    decay_group = {"name": "decay", "params": [], "lr": lr, "weight_decay": weight_decay}
    plain_group = {"name": "no_decay", "params": [], "lr": lr, "weight_decay": 0.0}
    custom: dict[tuple[float, float], dict] = {}
    for _, p in model.named_parameters():  # deduplicated: a tied tensor appears once
        if not p.requires_grad:
            continue
        default_wd = 0.0 if id(p) in no_decay else weight_decay
        opts = get_optim(p)
        if opts:
            key = (float(opts.get("lr", lr)), float(opts.get("weight_decay", default_wd)))
            if key not in custom:
                custom[key] = {"name": f"custom_{len(custom)}", "params": [], "lr": key[0], "weight_decay": key[1]}
            custom[key]["params"].append(p)
        elif default_wd:
            decay_group["params"].append(p)
        else:
            plain_group["params"].append(p)
    return [g for g in (decay_group, plain_group, *custom.values()) if g["params"]]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` with the betas and eps of ``cfg``."""
    groups = param_groups(model, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                             weight_decay=cfg.weight_decay)


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the base lr for optimiser step ``step`` (0-based).

    Warm-up: ``(step + 1) / warmup_steps`` for ``step < warmup_steps``; then a half cosine from 1 at
    ``warmup_steps`` to ``min_lr_ratio`` at ``total_steps``; ``min_lr_ratio`` afterwards.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosine:
    """The schedule of :func:`lr_factor` as a callable for ``LambdaLR``."""

    def __init__(self, warmup_steps: int, total_steps: int, min_lr_ratio: float):
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_lr_ratio = min_lr_ratio

    def __call__(self, step: int) -> float:
        return lr_factor(step, warmup_steps=self.warmup_steps, total_steps=self.total_steps,
                         min_lr_ratio=self.min_lr_ratio)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` applying :class:`WarmupCosine` to every group's own base lr."""
    schedule = WarmupCosine(cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def scheduler_state(scheduler: torch.optim.lr_scheduler.LRScheduler) -> dict:
    """The scheduler's state as JSON-friendly numbers.

    The schedule function itself is not stored: it is rebuilt from the config, so a resumed run follows the
    config it is given (e.g. more ``steps``) from the restored step counter.
    """
    state = scheduler.state_dict()
    if "lr_lambdas" in state:
        state["lr_lambdas"] = [None] * len(state["lr_lambdas"])
    return state
