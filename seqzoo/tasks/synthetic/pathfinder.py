"""Pathfinder as used by the Long Range Arena (LRA): are the two dots joined by a dashed path?

Papers: "Learning long-range spatial dependencies with horizontal gated recurrent units", Linsley, Kim,
Veerabadran, Windolf, Serre, NeurIPS 2018, arXiv 1805.08315 (the Pathfinder task); "Long Range Arena: A Benchmark
for Efficient Transformers", Tay et al., ICLR 2021, arXiv 2011.04006 (its 32×32 version, read as a sequence of
1024 pixels, two classes).

This is a simplified renderer written from the task's description, not the authors' generator (which draws
anti-aliased "paddles" and is not installed here). An image (``side × side``, background 0, strokes 1) holds:

* two main *snakes* of the same length and ``distractors`` shorter ones. A snake is a curvy random walk of unit
  steps, θ_{k+1} = θ_k + U(−κ, κ) (up to U(−4κ, 4κ) when the next pixel is taken, off the canvas or too close to
  another snake), rasterised to a chain of distinct pixels p_0 … p_n with each p_{k+1} in the
  8-neighbourhood of p_k, and drawn *dashed*: ``dash`` pixels on, ``gap`` pixels off, repeating, its two end
  pixels always on;
* two *dots*, 3×3 squares centred on snake ends. Positive (label 1): the two ends of main snake A. Negative
  (label 0): one end of A and one end of B. Both classes draw the same snakes, so counting pixels tells nothing.

Connectivity is defined on the rendered pixels. Two lit pixels are *linked* when their Chebyshev distance is at
most ``reach = gap + 1`` (this bridges a dash gap); the label is 1 exactly when a chain of links joins the two
dots (:func:`dots_connected`, a flood fill). The generator keeps every pixel of a snake at Chebyshev distance
≥ ``reach + 2`` from every pixel of any other snake (the +1 beyond ``reach`` leaves room for a dot's radius), so a
flood fill never jumps between snakes; every image is also checked by the flood fill before it is returned, and
redrawn in the rare case the two disagree, so the label is always the flood-fill label.

Batches (causal sequence classification, the same layout as :class:`~seqzoo.tasks.synthetic.listops.ListOps`):
``inputs [B, side² + 1]`` = the pixels row by row as tokens (``round(value · (levels − 1))``, so 0 and
``levels − 1`` here) followed by a ``QUERY`` token, ``targets`` = the label (token id 0 or 1) at the query
position, ``loss_mask`` True only there. ``pixel_batch`` gives the same images as floats in [−1, 1]
(``[B, side², 1]``) with ``labels [B]``, for models with a continuous pixel encoder. Labels are balanced within
every batch (an even batch is exactly half positive). Deterministic from ``(seed, split, index)``.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import torch

from ...core.errors import SeqzooError

SPLITS = {"train": 0, "val": 1, "test": 2}


def dots_connected(image: np.ndarray, a: tuple[int, int], b: tuple[int, int], reach: int) -> bool:
    """True when lit pixels (> 0) link pixel ``a`` to pixel ``b``, where two lit pixels are linked if their
    Chebyshev distance is at most ``reach`` (a breadth-first flood fill)."""
    lit = image > 0
    if not (lit[a] and lit[b]):
        return False
    side_r, side_c = lit.shape
    seen = np.zeros_like(lit)
    seen[a] = True
    queue = deque([a])
    while queue:
        r, c = queue.popleft()
        if (r, c) == tuple(b):
            return True
        r0, r1, c0, c1 = max(0, r - reach), min(side_r, r + reach + 1), max(0, c - reach), min(side_c, c + reach + 1)
        window = lit[r0:r1, c0:c1] & ~seen[r0:r1, c0:c1]
        for dr, dc in zip(*np.nonzero(window)):
            seen[r0 + dr, c0 + dc] = True
            queue.append((r0 + int(dr), c0 + int(dc)))
    return False


class Pathfinder:
    """LRA-style Pathfinder images (see the module docstring). ``vocab_size`` = ``levels`` + 1 (the query).

    Options: ``side`` (32 in LRA); ``snake_length`` (pixels in a main snake; default ``0.75·side``);
    ``distractors`` (number of shorter snakes, each half as long); ``dash``/``gap`` (pixels on/off along a snake);
    ``curvature`` κ (radians per unit step); ``levels`` (grey levels of the pixel tokens, 256 as LRA's images).
    """

    num_classes = 2

    def __init__(self, *, side: int = 32, snake_length: int | None = None, distractors: int = 2, dash: int = 2,
                 gap: int = 1, curvature: float = 0.5, levels: int = 256, seed: int = 0):
        def whole(name, value, low):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise SeqzooError(f"Pathfinder {name} must be an int >= {low}, got {value!r}")

        whole("side", side, 12)
        snake_length = (3 * side) // 4 if snake_length is None else snake_length
        whole("snake_length", snake_length, 4)
        whole("distractors", distractors, 0)
        whole("dash", dash, 1)
        whole("gap", gap, 0)
        whole("levels", levels, 2)
        if snake_length > 2 * side:
            raise SeqzooError(f"Pathfinder snake_length must be <= 2·side = {2 * side}, got {snake_length}")
        if not (isinstance(curvature, (int, float)) and 0 <= curvature <= math.pi):
            raise SeqzooError(f"Pathfinder curvature must lie in [0, π], got {curvature!r}")
        self.side, self.snake_length, self.distractors = side, snake_length, distractors
        self.dash, self.gap, self.curvature, self.levels, self.seed = dash, gap, float(curvature), levels, seed
        self.reach = gap + 1
        self.separation = self.reach + 2
        self.seq_len = side * side + 1          # the pixels and the query token
        self.query = levels
        self.vocab_size = levels + 1

    # -- drawing ------------------------------------------------------------------------------------------------
    def _snake(self, length: int, blocked: np.ndarray, rng: np.random.Generator) -> list[tuple[int, int]] | None:
        """A chain of ``length`` distinct, 8-connected pixels avoiding ``blocked`` and the 1-pixel border (the
        dots need it), or None when the walk gets stuck."""
        lo, hi = 1, self.side - 2
        free = np.argwhere(~blocked[lo:hi + 1, lo:hi + 1]) + lo
        if len(free) == 0:
            return None
        r, c = free[rng.integers(len(free))]
        pixels = [(int(r), int(c))]
        pos = np.array([r, c], dtype=np.float64)
        theta = rng.uniform(0, 2 * math.pi)
        seen = {pixels[0]}
        while len(pixels) < length:
            for attempt in range(16):        # tries to find a free next pixel, turning harder after each 4
                spread = min(math.pi, self.curvature * (1 + attempt // 4) if self.curvature else 0.5 * (attempt // 4))
                turn = theta + rng.uniform(-spread, spread)
                nxt = pos + (math.sin(turn), math.cos(turn))
                cell = (int(math.floor(nxt[0] + 0.5)), int(math.floor(nxt[1] + 0.5)))
                if cell == pixels[-1]:       # sub-pixel move: keep walking from the new point
                    pos, theta = nxt, turn
                    continue
                inside = lo <= cell[0] <= hi and lo <= cell[1] <= hi
                if inside and cell not in seen and not blocked[cell]:
                    pos, theta = nxt, turn
                    pixels.append(cell)
                    seen.add(cell)
                    break
            else:
                return None
        return pixels

    def _block(self, blocked: np.ndarray, pixels: list[tuple[int, int]]) -> None:
        """Forbid every pixel closer than ``separation`` (Chebyshev) to ``pixels`` to the later snakes."""
        d = self.separation - 1
        for r, c in pixels:
            blocked[max(0, r - d):r + d + 1, max(0, c - d):c + d + 1] = True

    def _render_strokes(self, snakes: list[list[tuple[int, int]]]) -> np.ndarray:
        image = np.zeros((self.side, self.side), dtype=np.float32)
        period = self.dash + self.gap
        for pixels in snakes:
            for k, (r, c) in enumerate(pixels):
                if k % period < self.dash or k == len(pixels) - 1:
                    image[r, c] = 1.0
        return image

    def draw(self, label: int, rng: np.random.Generator) -> tuple[np.ndarray, tuple, tuple]:
        """One ``[side, side]`` image of class ``label`` (1: the dots are joined) and its two dot centres."""
        if label not in (0, 1):
            raise SeqzooError(f"Pathfinder label must be 0 or 1, got {label!r}")
        lengths = [self.snake_length] * 2 + [max(4, self.snake_length // 2)] * self.distractors
        for _ in range(1000):
            blocked = np.zeros((self.side, self.side), dtype=bool)
            snakes = []
            for length in lengths:
                pixels = self._snake(length, blocked, rng)
                if pixels is None:
                    break
                snakes.append(pixels)
                self._block(blocked, pixels)
            if len(snakes) < len(lengths):
                continue
            a_ends, b_ends = (snakes[0][0], snakes[0][-1]), (snakes[1][0], snakes[1][-1])
            first = a_ends[rng.integers(2)]
            second = (a_ends[1] if first == a_ends[0] else a_ends[0]) if label == 1 else b_ends[rng.integers(2)]
            image = self._render_strokes(snakes)
            for r, c in (first, second):
                image[r - 1:r + 2, c - 1:c + 2] = 1.0
            if dots_connected(image, first, second, self.reach) == bool(label):
                return image, first, second
        raise SeqzooError(f"Pathfinder could not place {len(lengths)} snakes of length {self.snake_length} on a "
                          f"{self.side}×{self.side} canvas; use fewer distractors or a shorter snake_length")

    # -- batches ------------------------------------------------------------------------------------------------
    def images(self, split: str, index: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """``(images [B, side, side] float32 in {0, 1}, labels [B] int64)`` of batch ``index`` of ``split``."""
        if split not in SPLITS:
            raise SeqzooError(f"unknown split {split!r}; valid: train, val, test")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise SeqzooError(f"batch_size must be a positive int, got {batch_size!r}")
        rng = np.random.default_rng([self.seed, SPLITS[split], index])
        labels = rng.permutation(np.arange(batch_size) % 2) if batch_size > 1 else rng.integers(0, 2, 1)
        images = np.stack([self.draw(int(y), rng)[0] for y in labels])
        return images, labels.astype(np.int64)

    def get_batch(self, split: str, index: int, batch_size: int) -> dict[str, torch.Tensor]:
        images, labels = self.images(split, index, batch_size)
        tokens = np.rint(images.reshape(batch_size, -1) * (self.levels - 1)).astype(np.int64)
        inputs = np.concatenate([tokens, np.full((batch_size, 1), self.query, dtype=np.int64)], axis=1)
        targets = np.zeros_like(inputs)
        targets[:, -1] = labels
        mask = torch.zeros(batch_size, self.seq_len, dtype=torch.bool)
        mask[:, -1] = True
        return {"inputs": torch.from_numpy(inputs), "targets": torch.from_numpy(targets), "loss_mask": mask}

    def pixel_batch(self, split: str, index: int, batch_size: int) -> dict[str, torch.Tensor]:
        """The same images as :meth:`get_batch` as floats in [−1, 1], ``inputs [B, side², 1]``, ``labels [B]``."""
        images, labels = self.images(split, index, batch_size)
        values = images.reshape(batch_size, -1, 1) * 2.0 - 1.0
        return {"inputs": torch.from_numpy(values.astype(np.float32)), "labels": torch.from_numpy(labels)}


__all__ = ["Pathfinder", "dots_connected"]
