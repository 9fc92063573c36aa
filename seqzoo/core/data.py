"""The batch contract shared by tasks and the trainer (DESIGN.md, Contract 4).

A batch source yields batches deterministically: the same ``(split, index, batch_size)`` always gives the same
batch, so a resumed run sees exactly the data an uninterrupted one would, and data-parallel ranks can each take
their rows of the same global batch. A batch is a dict with ``inputs``, ``targets`` and optionally ``loss_mask``
(``[B, T]`` bool; loss counted where True).
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor

Batch = dict[str, Tensor]


class BatchSource(Protocol):
    def get_batch(self, split: str, index: int, batch_size: int) -> Batch: ...
