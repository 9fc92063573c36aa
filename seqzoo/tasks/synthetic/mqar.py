"""Multi-query associative recall (MQAR), as defined in Zoology (Arora et al. 2023, "Zoology: Measuring and
Improving Recall in Efficient Language Models", arXiv 2312.04927).

A sequence starts with ``num_kv_pairs`` key–value pairs ``k_1 v_1 … k_n v_n`` (keys and values drawn without
replacement from disjoint halves of the vocabulary). The rest of the sequence is filler, except that every key
appears once more as a query at a position drawn with a power-law bias towards short gaps (p(gap) ∝ gap^(a−1),
Zoology's ``random_non_queries`` layout); the target right after a query is its value. Only those positions are
scored, so accuracy is the fraction of recalled values. Token 0 is the filler.
"""

from __future__ import annotations

import numpy as np
import torch

from ...core.errors import SeqzooError


class MQAR:
    def __init__(self, *, vocab_size: int = 256, seq_len: int = 128, num_kv_pairs: int = 16, power_a: float = 0.01,
                 seed: int = 0):
        if seq_len < 4 * num_kv_pairs:
            raise SeqzooError(f"MQAR needs seq_len >= 4 * num_kv_pairs, got seq_len={seq_len}, "
                              f"num_kv_pairs={num_kv_pairs}")
        half = vocab_size // 2
        if half - 1 < num_kv_pairs:
            raise SeqzooError(f"MQAR vocab_size={vocab_size} is too small for {num_kv_pairs} distinct keys")
        self.vocab_size, self.seq_len, self.num_kv_pairs = vocab_size, seq_len, num_kv_pairs
        self.power_a, self.seed = power_a, seed

    def _rng(self, split: str, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, {"train": 0, "val": 1, "test": 2}[split], index])

    def get_batch(self, split: str, index: int, batch_size: int) -> dict[str, torch.Tensor]:
        if split not in ("train", "val", "test"):
            raise SeqzooError(f"unknown split {split!r}; valid: train, val, test")
        rng = self._rng(split, index)
        n, length, half = self.num_kv_pairs, self.seq_len + 1, self.vocab_size // 2
        seqs = np.zeros((batch_size, length), dtype=np.int64)
        mask = np.zeros((batch_size, length), dtype=bool)
        context = 2 * n
        # power-law over the gap between the pairs and the query slots (Zoology: p ∝ x^(a-1))
        slots = np.arange(context, length - 1, 2)  # even positions after the context; the value follows each
        weights = (slots - context + 1.0) ** (self.power_a - 1.0)
        weights /= weights.sum()
        for b in range(batch_size):
            keys = rng.choice(np.arange(1, half), n, replace=False)
            values = rng.choice(np.arange(half, self.vocab_size), n, replace=False)
            seqs[b, 0:context:2], seqs[b, 1:context:2] = keys, values
            positions = rng.choice(slots, n, replace=False, p=weights)
            seqs[b, positions], seqs[b, positions + 1] = keys, values
            mask[b, positions + 1] = True
        data = torch.from_numpy(seqs)
        return {"inputs": data[:, :-1], "targets": data[:, 1:], "loss_mask": torch.from_numpy(mask[:, 1:])}
