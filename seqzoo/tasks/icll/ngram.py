"""In-context n-gram baselines for in-context language learning (ICLL).

Paper: "In-Context Language Learning: Architectures and Algorithms", Akyürek, Wang, Kim and Andreas, ICML 2024,
arXiv 2401.12973 (sec. 4–5: successful transformers behave like in-context n-gram models computed by "n-gram
heads", so n-gram counts over the prompt alone are the natural reference learners).

The predictor sees only the prompt x_1 … x_t (no training). For order n it counts, over earlier positions j < t,
how often each token followed the same (n−1)-token context:

    c_n(v | t) = #{ j < t : x_{j−n+2 … j} = x_{t−n+2 … t} and x_{j+1} = v }

and predicts argmax_v c_n(v | t) (ties → smallest token id). If the context never occurred (every count is 0) it
backs off to order n−1, …, down to order 1, the unigram counts c_1(v | t) = #{ j ≤ t : x_j = v }. Order 1 is the
"most frequent token so far" baseline. :func:`ngram_probabilities` gives the add-λ smoothed distribution
p_n(v | t) = (c_n(v | t) + λ) / (Σ_u c_n(u | t) + λ·V) of the highest order whose context was seen.
"""

from __future__ import annotations

import numpy as np

from ...core.errors import SeqzooError


def _check(tokens: np.ndarray, order: int, vocab_size: int) -> np.ndarray:
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
        raise SeqzooError(f"n-gram baseline needs integer tokens of shape [B, T], got shape {tokens.shape} "
                          f"dtype {tokens.dtype}")
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise SeqzooError(f"n-gram order must be an integer >= 1, got {order!r}")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise SeqzooError(f"tokens must lie in 0 … {vocab_size - 1}, got range {tokens.min()} … {tokens.max()}")
    return tokens


def _counts_row(row: np.ndarray, order: int, vocab_size: int):
    """For every position t: (the order actually used, the count vector of that order)."""
    tables = [dict() for _ in range(order + 1)]  # tables[k][context of k−1 tokens] -> counts of the next token
    unigram = np.zeros(vocab_size, dtype=np.int64)
    out = []
    seq = [int(v) for v in row]
    for t, token in enumerate(seq):
        # record the transition that ended at t: for each order k, context x_{t−k+1 … t−1} -> x_t
        for k in range(2, order + 1):
            if t - k + 1 >= 0:
                ctx = tuple(seq[t - k + 1: t])
                counts = tables[k].get(ctx)
                if counts is None:
                    counts = tables[k][ctx] = np.zeros(vocab_size, dtype=np.int64)
                counts[token] += 1
        unigram[token] += 1
        used, vector = 1, unigram
        for k in range(order, 1, -1):  # highest order whose context x_{t−k+2 … t} was seen before
            if t - k + 2 >= 0:
                counts = tables[k].get(tuple(seq[t - k + 2: t + 1]))
                if counts is not None:
                    used, vector = k, counts
                    break
        out.append((used, vector.copy()))
    return out


def ngram_predict(tokens, order: int, vocab_size: int) -> np.ndarray:
    """Greedy next-token predictions ``[B, T]`` of the in-context n-gram model with backoff (prediction at t is for
    x_{t+1}, from x_1 … x_t only)."""
    tokens = _check(tokens, order, vocab_size)
    preds = np.zeros(tokens.shape, dtype=np.int64)
    for b, row in enumerate(tokens):
        for t, (_, counts) in enumerate(_counts_row(row, order, vocab_size)):
            preds[b, t] = int(np.argmax(counts))  # first maximum = smallest id on ties
    return preds


def ngram_probabilities(tokens, order: int, vocab_size: int, smoothing: float = 1.0) -> np.ndarray:
    """Add-λ smoothed next-token distributions ``[B, T, V]`` of the highest order whose context was seen."""
    tokens = _check(tokens, order, vocab_size)
    if not (isinstance(smoothing, (int, float)) and smoothing > 0):
        raise SeqzooError(f"n-gram smoothing λ must be a positive number, got {smoothing!r}")
    probs = np.zeros(tokens.shape + (vocab_size,))
    for b, row in enumerate(tokens):
        for t, (_, counts) in enumerate(_counts_row(row, order, vocab_size)):
            probs[b, t] = (counts + smoothing) / (counts.sum() + smoothing * vocab_size)
    return probs


__all__ = ["ngram_predict", "ngram_probabilities"]
