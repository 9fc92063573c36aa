"""LRA ListOps generator (seqzoo/tasks/synthetic/listops.py).

Verification (reference notes, LRA §29): the evaluator is right on exhaustive small trees and hand-checked
expressions; generated sequences respect the length and depth limits, their labels are the evaluator's values,
and batches are deterministic, left-padded, scored only at the final query token.
"""

import itertools
import statistics

import numpy as np
import pytest
import torch

from seqzoo.core.errors import SeqzooError
from seqzoo.tasks.synthetic.listops import (CLOSE, OP_ID, PAD, QUERY, VOCAB_SIZE, ListOps, apply, depth_of,
                                            evaluate)


def expr(*parts):
    """Tokens from a readable form: operator names, digits and ']'."""
    return [OP_ID[p] if isinstance(p, str) and p in OP_ID else CLOSE if p == "]" else int(p) for p in parts]


def test_hand_checked_expressions():
    assert evaluate(expr("MAX", 2, 9, "MIN", 4, 7, "]", 0, "]")) == 9
    assert evaluate(expr("SM", 5, 7, "]")) == 2
    assert evaluate(expr("MED", 1, 2, 3, 4, "]")) == 2          # int(2.5)
    assert evaluate(expr("MED", 3, 1, 2, "]")) == 2
    assert evaluate(expr("MED", 9, 8, "]")) == 8                # int(8.5)
    assert evaluate(expr("MIN", "SM", 9, 9, "]", "MAX", 3, 4, "]", "]")) == 4
    assert evaluate([7]) == 7


def test_exhaustive_small_trees_match_the_definition():
    for op, values in itertools.product(OP_ID, itertools.product(range(10), repeat=3)):
        reference = {"MIN": min(values), "MAX": max(values), "SM": sum(values) % 10,
                     "MED": int(statistics.median(values))}[op]
        assert evaluate(expr(op, *values, "]")) == reference == apply(op, list(values))
    for outer, inner in itertools.product(OP_ID, OP_ID):        # nested: [outer a [inner b c ] d ]
        for a, b, c, d in [(1, 2, 3, 4), (9, 0, 5, 5), (3, 3, 8, 1)]:
            value = apply(outer, [a, apply(inner, [b, c]), d])
            assert evaluate(expr(outer, a, inner, b, c, "]", d, "]")) == value
            assert int(np.median([a, apply(inner, [b, c]), d])) == apply("MED", [a, apply(inner, [b, c]), d])


def test_malformed_sequences_are_errors():
    for bad in (expr("MAX", 1, 2), expr("]"), expr(1, 2), expr("MIN", "]"), [QUERY]):
        with pytest.raises(SeqzooError, match="malformed"):
            evaluate(bad)


def test_generated_sequences_follow_the_lra_definition():
    task = ListOps(seed=3)
    rng = np.random.default_rng(0)
    lengths = []
    for _ in range(20):
        tokens = task.sample(rng)
        lengths.append(len(tokens))
        assert 500 < len(tokens) < 2000
        assert depth_of(tokens) <= 10
        assert all(0 <= t <= CLOSE for t in tokens)
        evaluate(tokens)                                          # well formed
    assert max(lengths) - min(lengths) > 100                      # lengths vary over the window


def test_batches_are_deterministic_left_padded_and_scored_at_the_query():
    task = ListOps(min_length=20, max_length=60, seed=1)
    batch = task.get_batch("train", 4, 6)
    again = task.get_batch("train", 4, 6)
    assert all(torch.equal(batch[k], again[k]) for k in batch)
    assert task.get_batch("val", 4, 6)["inputs"].tolist() != batch["inputs"].tolist()   # splits differ
    inputs, targets, mask = batch["inputs"], batch["targets"], batch["loss_mask"]
    assert (inputs[:, -1] == QUERY).all() and mask[:, -1].all() and mask.sum() == 6
    assert inputs.max() < VOCAB_SIZE
    for row, label in zip(inputs.tolist(), targets[:, -1].tolist()):
        body = [t for t in row[:-1] if t != PAD]
        assert row[:len(row) - 1 - len(body)] == [PAD] * (len(row) - 1 - len(body))   # padding on the left
        assert 20 < len(body) < 60 and evaluate(body) == label
    with pytest.raises(SeqzooError, match="valid: train, val, test"):
        task.get_batch("dev", 0, 2)
