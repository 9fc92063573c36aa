"""Induction heads: predict the token that followed the earlier occurrence of the current token.

Each sequence is random tokens in which one bigram ``a b`` appears at a random position, and the sequence ends
with ``a`` again; the target at that last position is ``b``. The trigger ``a`` occurs nowhere else, so the answer is
unambiguous and can only be found by looking back to where ``a`` was seen and copying what came next (the
"induction head" circuit of Olsson et al. 2022, used as a synthetic probe by H3, arXiv 2212.14052, and Zoology,
arXiv 2312.04927). Only the last position is scored. Batches are deterministic in ``(seed, split, index)``.
"""

from __future__ import annotations

import numpy as np
import torch

from ...core.errors import SeqzooError


class InductionHeads:
    def __init__(self, *, vocab_size: int = 32, seq_len: int = 64, seed: int = 0):
        if vocab_size < 3:
            raise SeqzooError(f"induction heads needs vocab_size >= 3, got {vocab_size}")
        if seq_len < 3:
            raise SeqzooError(f"induction heads needs seq_len >= 3, got {seq_len}")
        self.vocab_size, self.seq_len, self.seed = vocab_size, seq_len, seed

    def get_batch(self, split: str, index: int, batch_size: int) -> dict[str, torch.Tensor]:
        if split not in ("train", "val", "test"):
            raise SeqzooError(f"unknown split {split!r}; valid: train, val, test")
        rng = np.random.default_rng([self.seed, {"train": 0, "val": 1, "test": 2}[split], index])
        length = self.seq_len + 1  # inputs are data[:-1], targets data[1:]
        data = np.empty((batch_size, length), dtype=np.int64)
        for b in range(batch_size):
            trigger = int(rng.integers(0, self.vocab_size))
            # every other token avoids the trigger: draw from vocab_size - 1 values and skip over it
            row = rng.integers(0, self.vocab_size - 1, length)
            row[row >= trigger] += 1
            answer = int(row[-1])  # a non-trigger token
            pos = int(rng.integers(0, self.seq_len - 2))  # the bigram sits before the final trigger
            row[pos], row[pos + 1] = trigger, answer
            row[-2], row[-1] = trigger, answer
            data[b] = row
        mask = torch.zeros(batch_size, self.seq_len, dtype=torch.bool)
        mask[:, -1] = True
        tensor = torch.from_numpy(data)
        return {"inputs": tensor[:, :-1], "targets": tensor[:, 1:], "loss_mask": mask}
