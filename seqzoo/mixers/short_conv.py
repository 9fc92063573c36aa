"""Short causal depthwise convolution with a streaming state (used by DeltaNet, Mamba and others).

    y_t[c] = b[c] + Σ_{i=0}^{K-1} w[c, i] · x_{t-K+1+i}[c]

with zeros before the sequence start. The state is the last ``K-1`` inputs ``[B, K-1, C]``, so feeding a
sequence in any split gives the same output as one call (the conv half of Mamba's and DeltaNet's decoding state).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.errors import SeqzooError


class ShortConv(nn.Module):
    def __init__(self, channels: int, kernel_size: int = 4, bias: bool = True, activation: str | None = None):
        super().__init__()
        if kernel_size < 1:
            raise SeqzooError(f"conv kernel_size must be >= 1, got {kernel_size}")
        if activation not in (None, "silu"):
            raise SeqzooError(f"short conv activation {activation!r} is not valid; valid: None, 'silu'")
        self.channels, self.kernel_size, self.activation = channels, kernel_size, activation
        self.weight = nn.Parameter(torch.empty(channels, kernel_size))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        nn.init.uniform_(self.weight, -kernel_size ** -0.5, kernel_size ** -0.5)

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> Tensor:
        return torch.zeros(batch_size, self.kernel_size - 1, self.channels, device=device, dtype=dtype)

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``x: [B, T, C]`` → ``(y: [B, T, C], new_state: [B, K-1, C])``."""
        if state is None:
            state = self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
        padded = torch.cat([state.to(x.dtype), x], dim=1)  # [B, K-1+T, C]
        length = x.shape[1]
        weight = self.weight.to(x.dtype)
        # K shifted multiply-adds: cheaper than a depthwise conv1d for small K, in every dtype
        y = padded[:, :length] * weight[:, 0]
        for i in range(1, self.kernel_size):
            y = y + padded[:, i: i + length] * weight[:, i]
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        if self.activation == "silu":
            y = F.silu(y)
        new_state = padded[:, padded.shape[1] - (self.kernel_size - 1):]
        return y, new_state
