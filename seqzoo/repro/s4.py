"""Reproduction ``s4``: on a long-range sequential-image task, S4 beats an attention model of the same size.

Paper: "Efficiently Modeling Long Sequences with Structured State Spaces", Gu, Goel, Ré, ICLR 2022,
arXiv 2111.00396. Headline: S4 solves long-range tasks where Transformers fail — Long Range Arena "Image"
(greyscale CIFAR as a pixel sequence of length 1024): S4 ≈ 88.5 % (the table in state-spaces/s4
``models/s4/experiments.md``) against 42.44 % for the Transformer of the LRA paper (Tay et al., arXiv 2011.04006;
that number is from the reference notes, not re-checked here).

Small-scale setting (CPU, minutes; no image data set is installed, so the images are synthetic):
:class:`SequentialShapes` draws 16×16 greyscale images of one of four shapes — a horizontal bar, a vertical bar,
a rectangle outline or a plus sign — at a random place and size on a noisy background, quantised to 16 grey
levels, and flattens them row by row into 256 pixel tokens followed by a query token. The label is the class of
the shape, predicted at the query token (the loss mask covers only that position), so the model must relate
pixels up to 256 steps apart (a vertical bar is a run of bright pixels 16 steps apart). 16×16 rather than LRA's
32×32 keeps four training runs within the 10-minute CPU budget (``SequentialShapes(side=32)`` gives length 1025).

Two 2-layer CausalLMs with d_model 64, one with S4 mixers and one with softmax attention (RoPE), the attention
model's FFN widened so that both have the same parameter count (±10 %), each trained with the same budget
(steps, batch) at two learning rates; the best validation accuracy of each is compared. Check: S4 > attention.
Quick mode (the test suite's smoke run) uses 8×8 images and a handful of steps.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ..core.errors import SeqzooError
from ..models import ModelConfig
from .base import ReproResult, register_repro
from .common import train_on_task

SHAPES = ("horizontal bar", "vertical bar", "rectangle outline", "plus sign")
LEVELS = 16           # grey levels: pixel tokens 0 … 15
QUERY = LEVELS        # the token after the image, where the class is predicted


class SequentialShapes:
    """Synthetic sequential-image classification (see the module docstring); deterministic from the seed.

    Batches: ``inputs [B, side² + 1]`` (pixel tokens then the query token), ``targets`` (the class at the last
    position, 0 elsewhere), ``loss_mask`` (True only at the last position).
    """

    vocab_size = LEVELS + 1

    def __init__(self, side: int = 32, noise: float = 0.35, seed: int = 0):
        if side < 8:
            raise SeqzooError(f"SequentialShapes needs side >= 8, got {side}")
        self.side, self.noise, self.seed = side, noise, seed
        self.seq_len = side * side + 1
        self.num_classes = len(SHAPES)

    def draw(self, label: int, rng: np.random.Generator) -> np.ndarray:
        s = self.side
        img = np.zeros((s, s))
        lo, hi = max(3, s // 4), max(4, (3 * s) // 4)
        length, other = rng.integers(lo, hi + 1), rng.integers(lo, hi + 1)
        if label in (0, 1, 3):
            r0, c0 = rng.integers(0, s - length + 1), rng.integers(0, s - length + 1)
            mid_r, mid_c = r0 + rng.integers(0, length), c0 + rng.integers(0, length)
            if label in (0, 3):
                img[mid_r if label == 3 else r0 + length // 2, c0:c0 + length] = 1.0
            if label in (1, 3):
                img[r0:r0 + length, mid_c if label == 3 else c0 + length // 2] = 1.0
        else:
            r0, c0 = rng.integers(0, s - length + 1), rng.integers(0, s - other + 1)
            img[r0, c0:c0 + other] = img[r0 + length - 1, c0:c0 + other] = 1.0
            img[r0:r0 + length, c0] = img[r0:r0 + length, c0 + other - 1] = 1.0
        img = img * rng.uniform(0.6, 1.0) + self.noise * rng.standard_normal((s, s))
        return np.clip(np.round((img + 0.5) / 2.0 * (LEVELS - 1)), 0, LEVELS - 1).astype(np.int64)

    def get_batch(self, split: str, index: int, batch_size: int) -> dict[str, torch.Tensor]:
        if split not in ("train", "val", "test"):
            raise SeqzooError(f"unknown split {split!r}; valid: train, val, test")
        rng = np.random.default_rng([self.seed, {"train": 0, "val": 1, "test": 2}[split], index])
        labels = rng.integers(0, self.num_classes, batch_size)
        inputs = np.full((batch_size, self.seq_len), QUERY, dtype=np.int64)
        for b, label in enumerate(labels):
            inputs[b, :-1] = self.draw(int(label), rng).reshape(-1)
        targets = np.zeros_like(inputs)
        targets[:, -1] = labels
        mask = torch.zeros(batch_size, self.seq_len, dtype=torch.bool)
        mask[:, -1] = True
        return {"inputs": torch.from_numpy(inputs), "targets": torch.from_numpy(targets), "loss_mask": mask}


def model_configs(d_model: int, n_layers: int, vocab: int) -> dict[str, ModelConfig]:
    """S4 and attention configs with equal parameter counts (the attention FFN is widened to match)."""
    from ..models import CausalLM

    s4 = ModelConfig(vocab_size=vocab, d_model=d_model, n_layers=n_layers, mixer="s4")
    count = CausalLM(s4).num_parameters()
    best = None
    for hidden in range(8, 8 * d_model + 1, 8):
        cfg = ModelConfig(vocab_size=vocab, d_model=d_model, n_layers=n_layers, mixer="attention", ffn_hidden=hidden)
        gap = abs(CausalLM(cfg).num_parameters() - count)
        if best is None or gap < best[0]:
            best = (gap, cfg)
    return {"s4": s4, "attention": best[1]}


@register_repro("s4", title="Efficiently Modeling Long Sequences with Structured State Spaces", arxiv="2111.00396",
                claim="On a sequential-image task (256 pixel tokens, one label at the end), S4 beats a same-size Transformer "
                      "(LRA Image: S4 ≈ 88.5 % vs Transformer 42.44 %).")
def run(quick: bool) -> ReproResult:
    side, steps, batch, lrs, eval_batches = (8, 3, 8, (1e-3,), 1) if quick else (16, 120, 32, (1e-3, 3e-3), 8)
    task = SequentialShapes(side=side, seed=0)
    configs = model_configs(64, 2, task.vocab_size)
    result = ReproResult("s4")
    best: dict[str, dict] = {}
    start = time.perf_counter()
    for name, cfg in configs.items():
        for lr in lrs:
            _, metrics = train_on_task(cfg, task, steps=steps, batch_size=batch, lr=lr, eval_batches=eval_batches)
            metrics["lr"] = lr
            result.details[f"{name}@lr={lr:g}"] = metrics
            if name not in best or metrics["accuracy"] > best[name]["accuracy"]:
                best[name] = metrics
    result.details["wall_seconds"] = time.perf_counter() - start
    result.details["setup"] = {"side": side, "seq_len": task.seq_len, "steps": steps, "batch_size": batch,
                               "lrs": list(lrs), "eval_sequences": eval_batches * batch, "d_model": 64,
                               "n_layers": 2, "classes": list(SHAPES)}
    p_s4, p_att = best["s4"]["parameters"], best["attention"]["parameters"]
    result.check("parameter counts equal (±10%)", f"s4 {p_s4}, attention {p_att}", "|ratio − 1| ≤ 0.10",
                 abs(p_s4 / p_att - 1) <= 0.10)
    result.check("s4 accuracy > attention accuracy (best of the learning rates)",
                 f"s4 {best['s4']['accuracy']:.3f} vs attention {best['attention']['accuracy']:.3f}",
                 "s4 higher (LRA Image: S4 ≈ 88.5 % vs Transformer 42.44 %)",
                 best["s4"]["accuracy"] > best["attention"]["accuracy"])
    for key, metrics in result.details.items():
        if "@lr=" in key:
            result.notes.append(f"{key}: val accuracy {metrics['accuracy']:.3f}, loss {metrics['loss']:.3f}, "
                                f"{metrics['parameters']} parameters, trained in {metrics['train_seconds']:.0f} s")
    result.notes.append(f"chance accuracy is {1 / len(SHAPES):.2f}; sequence length {task.seq_len}; "
                        f"{eval_batches * batch} validation sequences; wall {result.details['wall_seconds']:.0f} s")
    if quick:
        result.notes.append("quick mode: a smoke run, its checks are not meant to hold")
    return result


__all__ = ["SHAPES", "SequentialShapes", "model_configs", "run"]
