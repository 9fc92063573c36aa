"""Induction-heads task: the final token repeats a unique trigger, and the target is what followed it before."""

from __future__ import annotations

import pytest
import torch

from seqzoo.core.errors import SeqzooError
from seqzoo.tasks.synthetic.induction_heads import InductionHeads


def test_shapes_mask_and_answer():
    task = InductionHeads(vocab_size=12, seq_len=20, seed=3)
    batch = task.get_batch("train", 0, 32)
    inputs, targets, mask = batch["inputs"], batch["targets"], batch["loss_mask"]
    assert inputs.shape == targets.shape == mask.shape == (32, 20)
    assert mask[:, -1].all() and mask.sum() == 32
    assert torch.equal(inputs[:, 1:], targets[:, :-1])  # targets are inputs shifted by one
    assert int(inputs.min()) >= 0 and int(inputs.max()) < 12
    for row, target in zip(inputs, targets):
        trigger = int(row[-1])
        earlier = (row[:-1] == trigger).nonzero().flatten().tolist()
        assert len(earlier) == 1  # the trigger occurs exactly once before the end: the answer is unambiguous
        assert int(row[earlier[0] + 1]) == int(target[-1]) != trigger


def test_deterministic_and_splits_differ():
    a, b = InductionHeads(seed=1), InductionHeads(seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a.get_batch("val", 2, 8).values(), b.get_batch("val", 2, 8).values()))
    assert not torch.equal(a.get_batch("train", 2, 8)["inputs"], a.get_batch("val", 2, 8)["inputs"])
    assert not torch.equal(a.get_batch("train", 0, 8)["inputs"], InductionHeads(seed=2).get_batch("train", 0, 8)["inputs"])


def test_bad_input_is_one_line_error():
    with pytest.raises(SeqzooError, match="vocab_size >= 3"):
        InductionHeads(vocab_size=2)
    with pytest.raises(SeqzooError, match="seq_len >= 3"):
        InductionHeads(seq_len=2)
    with pytest.raises(SeqzooError, match="unknown split"):
        InductionHeads().get_batch("dev", 0, 1)


def test_smallest_length_works():
    batch = InductionHeads(vocab_size=3, seq_len=3).get_batch("train", 0, 16)
    assert torch.equal(batch["inputs"][:, 0], batch["inputs"][:, 2])
    assert torch.equal(batch["targets"][:, 2], batch["inputs"][:, 1])
