"""Feed-forward layers shared by the backbones.

- GLU FFN (Shazeer 2020, "GLU Variants Improve Transformer", arXiv 2002.05202): FFN(x) = W_2 (SiLU(x W_1) ⊙ x W_3).
- MLP FFN (Vaswani et al. 2017): FFN(x) = W_2 GELU(x W_1).
- Sparse mixture of experts (``"moe"``): :class:`seqzoo.models.moe.SparseMoE` (Time-MoE, arXiv 2409.16040).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class GLUFeedForward(nn.Module):
    def __init__(self, d_model: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or 8 * ((8 * d_model // 3 + 7) // 8)
        self.w_gate_up = nn.Linear(d_model, 2 * hidden, bias=False)
        self.w_down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.w_gate_up(x).chunk(2, dim=-1)
        return self.w_down(F.silu(gate) * up)


class MLPFeedForward(nn.Module):
    def __init__(self, d_model: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or 4 * d_model
        self.w_up = nn.Linear(d_model, hidden)
        self.w_down = nn.Linear(hidden, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.w_down(F.gelu(self.w_up(x)))


def build_ffn(kind: str, d_model: int, hidden: int | None, **options) -> nn.Module | None:
    """The FFN of a block: ``"glu"``, ``"mlp"``, ``"moe"`` (``options`` go to SparseMoE) or None for ``"none"``."""
    if kind == "moe":
        from .moe import SparseMoE

        return SparseMoE(d_model, hidden, **options)
    if kind == "glu":
        return GLUFeedForward(d_model, hidden)
    if kind == "mlp":
        return MLPFeedForward(d_model, hidden)
    return None
