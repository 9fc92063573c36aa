"""Metrics shared by token tasks: accuracy and loss at the positions a task scores (its ``loss_mask``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.data import BatchSource


@torch.no_grad()
def token_accuracy(model: nn.Module, source: BatchSource, *, split: str = "val", batches: int = 8,
                   batch_size: int = 64) -> dict[str, float]:
    """Fraction of scored positions where the model's argmax equals the target, and whole-sequence accuracy
    (every scored position of a sequence right), averaged over ``batches`` deterministic batches."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = total = seq_correct = seqs = 0
    loss_sum = 0.0
    for index in range(batches):
        batch = {k: v.to(device) for k, v in source.get_batch(split, index, batch_size).items()}
        logits, _ = model(batch["inputs"])
        mask = batch.get("loss_mask", torch.ones_like(batch["targets"], dtype=torch.bool))
        hits = (logits.argmax(-1) == batch["targets"]) & mask
        correct += int(hits.sum())
        total += int(mask.sum())
        seq_correct += int(((hits | ~mask).all(-1)).sum())
        seqs += mask.shape[0]
        loss_sum += float(F.cross_entropy(logits[mask].float(), batch["targets"][mask], reduction="sum"))
    model.train(was_training)
    return {"accuracy": correct / max(total, 1), "sequence_accuracy": seq_correct / max(seqs, 1),
            "loss": loss_sum / max(total, 1)}
