"""Selective copying (Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces",
arXiv 2312.00752, §3.1 and Figure 2).

``num_tokens`` data tokens are scattered at random positions of a context of ``context_len`` noise tokens (token
0); then ``num_tokens`` marker tokens (token 1) follow, and at the i-th marker the model must output the i-th data
token. Because the spacing is random, a time-invariant (convolutional) model cannot solve it by a fixed lag:
it needs input-dependent selection. Only the answer positions are scored.
"""

from __future__ import annotations

import numpy as np
import torch

from ...core.errors import SeqzooError

NOISE, MARKER = 0, 1


class SelectiveCopying:
    def __init__(self, *, vocab_size: int = 16, context_len: int = 64, num_tokens: int = 8, seed: int = 0):
        if vocab_size < 3 or num_tokens < 1 or context_len < num_tokens:
            raise SeqzooError(f"selective copying needs vocab_size >= 3 and context_len >= num_tokens >= 1, got "
                              f"vocab_size={vocab_size}, context_len={context_len}, num_tokens={num_tokens}")
        self.vocab_size, self.context_len, self.num_tokens, self.seed = vocab_size, context_len, num_tokens, seed
        self.seq_len = context_len + num_tokens

    def get_batch(self, split: str, index: int, batch_size: int) -> dict[str, torch.Tensor]:
        if split not in ("train", "val", "test"):
            raise SeqzooError(f"unknown split {split!r}; valid: train, val, test")
        rng = np.random.default_rng([self.seed, {"train": 0, "val": 1, "test": 2}[split], index])
        n, c = self.num_tokens, self.context_len
        inputs = np.full((batch_size, c + n), NOISE, dtype=np.int64)
        inputs[:, c:] = MARKER
        targets = np.full((batch_size, c + n), NOISE, dtype=np.int64)
        for b in range(batch_size):
            data = rng.integers(2, self.vocab_size, n)
            inputs[b, np.sort(rng.choice(c, n, replace=False))] = data
            targets[b, c:] = data  # the i-th marker asks for the i-th data token
        mask = torch.zeros(batch_size, c + n, dtype=torch.bool)
        mask[:, c:] = True
        return {"inputs": torch.from_numpy(inputs), "targets": torch.from_numpy(targets), "loss_mask": mask}
