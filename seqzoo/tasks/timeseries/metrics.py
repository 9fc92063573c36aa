"""Forecast error metrics of Time-Series-Library (``utils/metrics.py``), over every window × step × variate:

    MSE = mean((ŷ − y)²)        MAE = mean(|ŷ − y|)

on the scaled data (the protocol's default). :class:`ErrorSum` accumulates them batch by batch in float64, so a
split of any size is scored exactly once per window with no dropped last batch.
"""

from __future__ import annotations

import numpy as np
import torch

from ...core.errors import SeqzooError


def _as_float64(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=np.float64)


def _pair(pred, true) -> tuple[np.ndarray, np.ndarray]:
    p, t = _as_float64(pred), _as_float64(true)
    if p.shape != t.shape:
        raise SeqzooError(f"prediction shape {list(p.shape)} does not match the truth's {list(t.shape)}")
    if p.size == 0:
        raise SeqzooError("cannot score an empty forecast")
    return p, t


def mse(pred, true) -> float:
    p, t = _pair(pred, true)
    return float(np.mean((p - t) ** 2))


def mae(pred, true) -> float:
    p, t = _pair(pred, true)
    return float(np.mean(np.abs(p - t)))


class ErrorSum:
    """Running sums of squared and absolute errors; :meth:`result` gives ``{"mse", "mae", "windows"}``."""

    def __init__(self):
        self.sq = self.abs = 0.0
        self.count = self.windows = 0

    def add(self, pred, true) -> None:
        p, t = _pair(pred, true)
        d = p - t
        self.sq += float(np.sum(d * d))
        self.abs += float(np.sum(np.abs(d)))
        self.count += d.size
        self.windows += d.shape[0]

    def result(self) -> dict:
        if self.count == 0:
            raise SeqzooError("no windows were scored")
        return {"mse": self.sq / self.count, "mae": self.abs / self.count, "windows": self.windows}
