"""Pathfinder generator (seqzoo/tasks/synthetic/pathfinder.py).

Verification (reference notes, LRA §29): the label agrees 100 % with a flood fill on the rendered pixels; labels
are balanced; sequence lengths follow the canvas; batches are deterministic and scored only at the query token.
"""

import numpy as np
import pytest
import torch

from seqzoo.arena.tasks import get_task
from seqzoo.core.errors import SeqzooError
from seqzoo.tasks.synthetic.pathfinder import Pathfinder, dots_connected


def test_flood_fill_bridges_dash_gaps_only_within_reach():
    image = np.zeros((12, 12), dtype=np.float32)
    image[5, [1, 2, 4, 5, 7, 8, 10]] = 1.0                     # dashes with one-pixel gaps
    assert dots_connected(image, (5, 1), (5, 10), reach=2)
    assert not dots_connected(image, (5, 1), (5, 10), reach=1)  # a gap is not bridged by adjacency alone
    other = np.zeros((12, 12), dtype=np.float32)
    other[2, 1:11] = other[8, 1:11] = 1.0                       # two parallel lines five rows apart
    assert not dots_connected(other, (2, 1), (8, 10), reach=2)
    assert dots_connected(other, (2, 1), (2, 10), reach=2)
    assert not dots_connected(other, (2, 1), (5, 5), reach=2)  # an unlit target is never reached


@pytest.mark.parametrize("side,distractors", [(32, 2), (16, 1)])
def test_labels_agree_with_a_flood_fill_and_dots_sit_on_snake_ends(side, distractors):
    task = Pathfinder(side=side, distractors=distractors, seed=1)
    rng = np.random.default_rng(0)
    for i in range(24):
        label = i % 2
        image, a, b = task.draw(label, rng)
        assert image.shape == (side, side) and set(np.unique(image)) <= {0.0, 1.0}
        assert dots_connected(image, a, b, task.reach) == bool(label)
        for r, c in (a, b):                                       # 3×3 dots, fully inside the canvas
            assert image[r - 1:r + 2, c - 1:c + 2].min() == 1.0
        assert np.hypot(a[0] - b[0], a[1] - b[1]) >= 1.0


def test_snakes_are_dashed_and_kept_apart():
    task = Pathfinder(side=32, distractors=2, seed=0)
    rng = np.random.default_rng(3)
    lengths = [task.snake_length] * 2 + [task.snake_length // 2] * 2
    blocked = np.zeros((32, 32), dtype=bool)
    snakes = []
    for length in lengths:
        pixels = None
        while pixels is None:
            pixels = task._snake(length, blocked, rng)
        snakes.append(pixels)
        task._block(blocked, pixels)
    for pixels, length in zip(snakes, lengths):
        assert len(pixels) == length == len(set(pixels))
        steps = np.abs(np.diff(np.array(pixels), axis=0)).max(1)
        assert steps.max() == 1                                   # an 8-connected chain
    for i in range(len(snakes)):
        for j in range(i + 1, len(snakes)):
            gaps = np.abs(np.array(snakes[i])[:, None] - np.array(snakes[j])[None]).max(-1)
            assert gaps.min() >= task.separation
    image = task._render_strokes(snakes[:1])
    assert 0 < image.sum() < len(snakes[0])                       # dashed: some pixels of the chain are off


def test_batches_are_deterministic_balanced_and_scored_at_the_query():
    task = Pathfinder(side=16, distractors=1, seed=7)
    a, b = task.get_batch("train", 3, 8), task.get_batch("train", 3, 8)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["inputs"].shape == (8, 16 * 16 + 1) == a["targets"].shape == a["loss_mask"].shape
    assert task.seq_len == 257 and task.vocab_size == 257
    assert bool((a["inputs"][:, -1] == task.query).all())
    assert set(a["inputs"][:, :-1].unique().tolist()) <= {0, 255}
    assert a["loss_mask"].sum() == 8 and bool(a["loss_mask"][:, -1].all())
    labels = a["targets"][:, -1]
    assert int(labels.sum()) == 4                                 # exactly balanced
    assert not torch.equal(task.get_batch("val", 3, 8)["inputs"], a["inputs"])
    pixels = task.pixel_batch("train", 3, 8)
    assert pixels["inputs"].shape == (8, 256, 1) and torch.equal(pixels["labels"], labels)
    assert torch.equal((pixels["inputs"][..., 0] > 0).long() * 255, a["inputs"][:, :-1])


def test_classes_do_not_differ_in_ink():
    task = Pathfinder(side=32, seed=2)
    images, labels = task.images("train", 0, 64)
    ink = images.reshape(64, -1).sum(1)
    assert abs(ink[labels == 1].mean() - ink[labels == 0].mean()) < 0.1 * ink.mean()


def test_bad_options_are_one_line_errors():
    with pytest.raises(SeqzooError, match="side must be an int >= 12"):
        Pathfinder(side=8)
    with pytest.raises(SeqzooError, match="curvature"):
        Pathfinder(curvature=5.0)
    with pytest.raises(SeqzooError, match="valid: train, val, test"):
        Pathfinder(side=16, distractors=0).get_batch("dev", 0, 2)
    with pytest.raises(SeqzooError, match="could not place"):
        Pathfinder(side=12, snake_length=24, distractors=6).draw(1, np.random.default_rng(0))


def test_registered_as_an_arena_task():
    task = get_task("pathfinder")
    source = task.build(256, 0)
    assert source.seq_len == 257 and source.vocab_size == 257
    assert source.get_batch("train", 0, 2)["inputs"].shape == (2, 257)
    with pytest.raises(SeqzooError, match="perfect square"):
        task.build(200, 0)
