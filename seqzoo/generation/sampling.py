"""Next-token sampling: greedy, temperature, top-k and top-p (nucleus, Holtzman et al. 2019, arXiv 1904.09751).

``sample_next(logits, ...)`` takes ``[B, V]`` logits and returns ``[B]`` token ids. Temperature 0 is greedy.
Top-k keeps the k most likely tokens; top-p keeps the smallest set of most likely tokens whose probability mass
reaches p (the most likely token is always kept). Both filters are applied before renormalising.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.errors import SeqzooError


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    if temperature < 0:
        raise SeqzooError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise SeqzooError(f"top_k must be a positive int or unset, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise SeqzooError(f"top_p must be in (0, 1] or unset, got {top_p}")


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Set the logits of tokens outside the top-k / top-p set to -inf."""
    logits = logits.float()
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        mass_before = probs.cumsum(-1) - probs  # mass of strictly more likely tokens
        drop_sorted = mass_before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(logits: Tensor, *, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                generator: torch.Generator | None = None) -> Tensor:
    if temperature == 0:
        return logits.argmax(-1)
    probs = (filter_logits(logits, top_k, top_p) / temperature).softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
