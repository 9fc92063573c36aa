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
