"""Helpers shared by several forecasters: reversible instance normalisation and patching.

RevIN: "Reversible Instance Normalization for Accurate Time-Series Forecasting Against Distribution Shift", Kim et
al., ICLR 2022 (no arXiv id; OpenReview cGDAkQo1C0p), in its non-affine form as Time-Series-Library's
``use_norm``: per sequence and variate, over the lookback,

    x̃ = (x − μ) / σ,   σ = sqrt(Var(x) + 1e−5)   (biased variance),   ŷ = ỹ σ + μ.

Patching (PatchTST, arXiv 2211.14730): the series is padded at the end with ``stride`` copies of its last value
and cut into windows of ``patch_len`` every ``stride`` steps, giving ``(L + stride − patch_len) // stride + 1``
patches.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...core.errors import SeqzooError


def instance_normalize(x: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor, Tensor]:
    """``x [B, L, C]`` → ``(x̃, μ [B, 1, C], σ [B, 1, C])`` with statistics over L."""
    mean = x.mean(1, keepdim=True).detach()
    std = torch.sqrt(x.var(1, keepdim=True, unbiased=False) + eps).detach()
    return (x - mean) / std, mean, std


def instance_denormalize(y: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    return y * std + mean


def num_patches(length: int, patch_len: int, stride: int) -> int:
    return (length + stride - patch_len) // stride + 1


def check_patching(owner: str, length: int, patch_len: int, stride: int) -> None:
    for name, value in (("patch_len", patch_len), ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise SeqzooError(f"{owner}: {name} must be a positive int, got {value!r}")
    if patch_len > length + stride:
        raise SeqzooError(f"{owner}: patch_len={patch_len} is longer than seq_len + stride = {length + stride}")


def patchify(x: Tensor, patch_len: int, stride: int) -> Tensor:
    """``x [..., L]`` → ``[..., P, patch_len]`` (end-padded with the last value, PatchTST's ``padding_patch``)."""
    padded = torch.cat([x, x[..., -1:].expand(*x.shape[:-1], stride)], dim=-1)
    return padded.unfold(-1, patch_len, stride)


__all__ = ["instance_normalize", "instance_denormalize", "num_patches", "check_patching", "patchify"]


def forecast_channel_independent(x: Tensor, pred_len: int, generate, instance_norm: bool) -> Tensor:
    """Channel-independent forecasting shared by the point-wise foundation models (Time-MoE, GPHT): every variate
    of ``x [B, L, C]`` becomes one univariate series, optionally standardised over its lookback (statistics kept
    in the graph), ``generate(series [B·C, L], pred_len) -> [B·C, pred_len]`` forecasts it, and the result is
    mapped back to ``[B, pred_len, C]`` in the original scale."""
    batch, length, n_vars = x.shape
    series = x.permute(0, 2, 1).reshape(batch * n_vars, length)
    if instance_norm:
        mean = series.mean(1, keepdim=True)
        std = series.var(1, keepdim=True, unbiased=False).add(1e-5).sqrt()
        series = (series - mean) / std
    y = generate(series, pred_len)
    if instance_norm:
        y = y * std + mean
    return y.reshape(batch, n_vars, pred_len).permute(0, 2, 1)
