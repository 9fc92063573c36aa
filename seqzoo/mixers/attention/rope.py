"""Rotary position embedding (RoPE).

Paper: "RoFormer: Enhanced Transformer with Rotary Position Embedding", Su et al. 2021, arXiv 2104.09864.

A head vector ``x ∈ R^d`` (``d`` even) at absolute position ``m`` is rotated pairwise: for each of the ``d/2``
planes ``i`` with frequency ``θ_i``

    [x'_a, x'_b] = [x_a cos(m θ_i) − x_b sin(m θ_i),  x_a sin(m θ_i) + x_b cos(m θ_i)]

so that ``⟨R_m q, R_n k⟩ = ⟨q, R_{n−m} k⟩`` depends on the positions only through ``n − m`` (RoFormer eq. 16).

Conventions used here:

* planes pair dimension ``i`` with ``i + d/2`` ("rotate half"). RoFormer writes the pairs as ``(2i, 2i+1)``; the
  two differ by a fixed permutation of the head dimensions, which the learned projections absorb, and relative
  position dependence is identical.
* frequencies ``θ_i = base^(−2i/d)``, ``i = 0 … d/2 − 1`` (RoFormer, ``base = 10000``). ``spacing="retnet"``
  gives ``θ_i = base^(−i/(d/2 − 1))`` (``1 / base ** linspace(0, 1, d/2)``), which is what the RetNet reference
  code (microsoft/torchscale, ``RetNetRelPos``) uses for its rotation of ``q`` and ``k``.
* angles ``m θ_i`` are formed in float64 and only then cast, so the rotation of a token depends on its absolute
  position alone, never on how the sequence was split into calls (chunk invariance holds bit for bit).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...core.errors import SeqzooError

SPACINGS = ("roformer", "retnet")


def rope_frequencies(dim: int, base: float = 10000.0, *, spacing: str = "roformer",
                     device=None) -> Tensor:
    """The ``dim // 2`` rotation frequencies ``θ_i`` (float64)."""
    if dim <= 0 or dim % 2:
        raise SeqzooError(f"rotary embedding needs an even head dimension, got {dim}")
    if base <= 0:
        raise SeqzooError(f"rope_base must be positive, got {base}")
    half = dim // 2
    if spacing == "roformer":
        exponent = torch.arange(half, dtype=torch.float64, device=device) * (2.0 / dim)
    elif spacing == "retnet":
        exponent = torch.linspace(0.0, 1.0, half, dtype=torch.float64, device=device)
    else:
        raise SeqzooError(f"unknown rope spacing {spacing!r}; valid: {', '.join(SPACINGS)}")
    return torch.as_tensor(float(base), dtype=torch.float64, device=device) ** (-exponent)


def rope_positions(offset: Tensor, length: int) -> Tensor:
    """Absolute positions ``offset[b] + t`` for ``t < length`` as int64 ``[B, length]``."""
    offset = offset.to(torch.int64)
    return offset[:, None] + torch.arange(length, dtype=torch.int64, device=offset.device)[None, :]


def rope_cos_sin(positions: Tensor, freqs: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``cos(m θ)`` and ``sin(m θ)`` for integer ``positions`` ``[B, T]``: each ``[B, T, 1, d/2]`` in ``dtype``."""
    angle = positions.to(torch.float64)[..., None] * freqs.to(positions.device)  # [B, T, d/2]
    return angle.cos().to(dtype)[:, :, None, :], angle.sin().to(dtype)[:, :, None, :]


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x: [B, T, H, d]`` by the angles behind ``cos``/``sin`` (``[B, T, 1, d/2]``)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class Rotary(torch.nn.Module):
    """RoPE for heads of width ``dim``: ``rotary(x, offset)`` rotates ``x: [B, T, H, dim]`` at positions
    ``offset[b] + t`` (``offset``: int64 ``[B]``, the number of tokens each sequence has seen before)."""

    def __init__(self, dim: int, base: float = 10000.0, *, spacing: str = "roformer"):
        super().__init__()
        rope_frequencies(dim, base, spacing=spacing)  # validate now
        self.dim, self.base, self.spacing = dim, float(base), spacing
        self._freqs: dict[torch.device, Tensor] = {}

    def cos_sin(self, offset: Tensor, length: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        return self.cos_sin_at(rope_positions(offset, length), dtype)

    def cos_sin_at(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """``cos``/``sin`` at explicit integer ``positions [B, T]``."""
        # the d/2 float64 frequencies are kept per device outside the module's buffers, so module.to(dtype) never
        # casts them; the cache also keeps host-to-device copies out of CUDA-graph-captured decode steps
        freqs = self._freqs.get(positions.device)
        if freqs is None:
            freqs = self._freqs[positions.device] = rope_frequencies(self.dim, self.base, spacing=self.spacing,
                                                                     device=positions.device)
        return rope_cos_sin(positions, freqs, dtype)

    def forward(self, x: Tensor, offset: Tensor) -> Tensor:
        cos, sin = self.cos_sin(offset, x.shape[1], x.dtype)
        return apply_rope(x, cos, sin)

    def rotate_at(self, x: Tensor, positions: Tensor) -> Tensor:
        """Rotate ``x [B, T, H, dim]`` at explicit positions ``[B, T]`` (e.g. restarting inside a packed stream)."""
        cos, sin = self.cos_sin_at(positions, x.dtype)
        return apply_rope(x, cos, sin)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, base={self.base}, spacing={self.spacing!r}"
