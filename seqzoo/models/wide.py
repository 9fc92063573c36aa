"""Wide vs deep attention: transformer encoders whose aspect ratio (layers × heads per layer) is one config field.

Paper: "Wide Attention Is The Way Forward For Transformers?", Brown, Zhao, Shumailov and Mullins, 2022,
arXiv 2210.00640. The paper keeps the total number of attention heads A and every other hyper-parameter fixed and
trades depth for width: L layers of A/L heads each, down to a single layer of A heads.

Here the head width ``head_dim`` is fixed too, so the attention of a layer with H heads has inner width H·head_dim
(projected back to ``d_model``). With A = H·L fixed, every aspect ratio has the same attention parameters and the
same attention FLOPs in total; a shallower model has fewer FFNs and norms, hence fewer parameters and less compute.

Encoder layer l (pre-norm, as the rest of seqzoo), for input ``x [B, T, d_model]``:

    q_t^h, k_t^h = R_t (x_t W_q^h), R_t (x_t W_k^h),   v_t^h = x_t W_v^h          (h < H; R_t: RoPE at t)
    o_t^h = Σ_{s ∈ S(t)} softmax_s(q_t^h · k_s^h / √head_dim) v_s^h,  S(t) = all s (encoder) or s ≤ t (causal)
    x ← x + concat_h(o_t^h) W_o
    x ← x + FFN(RMSNorm(x))                                                    (GLU or MLP, as in CausalLM)

Classifier: ``logits = W_c · pool(RMSNorm(x)) + b_c`` with mean pooling over positions (encoder) or the last
position (causal). Parameters (no biases except the classifier's):

    V·d + L·(2d + 4·d·H·head_dim + FFN(d)) + d + d·C + C,   FFN(d) = 3·d·hidden (GLU) or 2·d·hidden + hidden + d (MLP)

:func:`aspect_ratio_configs` gives every aspect ratio of a base config (each divisor L of A); switching between the
wide and the deep model is ``cfg.with_layers(1)`` / ``cfg.with_layers(4)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.errors import SeqzooError
from ..mixers.attention.rope import Rotary
from .layers import build_ffn


@dataclass
class AspectRatioConfig:
    """An encoder (or causal) transformer classifier with ``total_heads`` heads spread over ``n_layers`` layers."""

    vocab_size: int = 256
    d_model: int = 64
    total_heads: int = 8
    n_layers: int = 1
    head_dim: int = 32
    n_classes: int = 2
    ffn: Literal["glu", "mlp"] = "glu"
    ffn_hidden: int | None = None
    causal: bool = False
    rope: bool = True
    norm_eps: float = 1e-5
    init_std: float = 0.02

    @property
    def heads_per_layer(self) -> int:
        return self.total_heads // self.n_layers

    def with_layers(self, n_layers: int) -> "AspectRatioConfig":
        """The same model with ``n_layers`` layers of ``total_heads / n_layers`` heads each."""
        cfg = dataclasses.replace(self, n_layers=n_layers)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        for key in ("vocab_size", "d_model", "total_heads", "n_layers", "head_dim", "n_classes"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise SeqzooError(f"aspect-ratio config: {key} must be a positive int, got {value!r}")
        if self.total_heads % self.n_layers:
            divisors = [n for n in range(1, self.total_heads + 1) if self.total_heads % n == 0]
            raise SeqzooError(f"n_layers={self.n_layers} does not divide total_heads={self.total_heads}; valid "
                              f"n_layers: {', '.join(map(str, divisors))}")
        if self.rope and self.head_dim % 2:
            raise SeqzooError(f"rope needs an even head_dim, got {self.head_dim}; use an even head_dim or rope=False")
        if self.ffn not in ("glu", "mlp"):
            raise SeqzooError(f"ffn {self.ffn!r} is not valid; valid: 'glu', 'mlp'")

    def ffn_width(self) -> int:
        if self.ffn_hidden is not None:
            return self.ffn_hidden
        return 8 * ((8 * self.d_model // 3 + 7) // 8) if self.ffn == "glu" else 4 * self.d_model

    def expected_parameters(self) -> int:
        """The parameter count from the formula in the module docstring (checked against the model in tests)."""
        d, hidden, inner = self.d_model, self.ffn_width(), self.heads_per_layer * self.head_dim
        ffn = 3 * d * hidden if self.ffn == "glu" else 2 * d * hidden + hidden + d
        per_layer = 2 * d + 4 * d * inner + ffn
        return self.vocab_size * d + self.n_layers * per_layer + d + d * self.n_classes + self.n_classes


def aspect_ratio_configs(base: AspectRatioConfig) -> list[AspectRatioConfig]:
    """Every aspect ratio of ``base``: one config per divisor L of ``total_heads`` (1 layer = widest)."""
    return [base.with_layers(n) for n in range(1, base.total_heads + 1) if base.total_heads % n == 0]


class MultiHeadAttention(nn.Module):
    """Softmax attention with ``n_heads`` heads of width ``head_dim`` (independent of ``d_model``), RoPE, and an
    all-to-all (encoder) or causal mask; the equations are in the module docstring."""

    def __init__(self, d_model: int, n_heads: int, head_dim: int, *, causal: bool = False, rope: bool = True):
        super().__init__()
        self.n_heads, self.head_dim, self.causal = n_heads, head_dim, causal
        inner = n_heads * head_dim
        self.q_proj = nn.Linear(d_model, inner, bias=False)
        self.k_proj = nn.Linear(d_model, inner, bias=False)
        self.v_proj = nn.Linear(d_model, inner, bias=False)
        self.o_proj = nn.Linear(inner, d_model, bias=False)
        self.rotary = Rotary(head_dim) if rope else None

    def forward(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        shape = (batch, length, self.n_heads, self.head_dim)
        q, k, v = self.q_proj(x).view(shape), self.k_proj(x).view(shape), self.v_proj(x).view(shape)
        if self.rotary is not None:
            offset = torch.zeros(batch, dtype=torch.int64, device=x.device)
            q, k = self.rotary(q, offset), self.rotary(k, offset)
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           is_causal=self.causal)
        return self.o_proj(o.transpose(1, 2).reshape(batch, length, -1))


class EncoderLayer(nn.Module):
    def __init__(self, cfg: AspectRatioConfig):
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = MultiHeadAttention(cfg.d_model, cfg.heads_per_layer, cfg.head_dim, causal=cfg.causal,
                                       rope=cfg.rope)
        self.ffn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.ffn = build_ffn(cfg.ffn, cfg.d_model, cfg.ffn_hidden)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.attn_norm(x))
        return x + self.ffn(self.ffn_norm(x))


class AspectRatioClassifier(nn.Module):
    """Sequence classifier over token ids: embedding → ``n_layers`` encoder layers → norm → pool → linear.

    ``model(inputs [B, T]) -> (logits [B, n_classes], None)``; ``loss(batch)`` is the cross-entropy against
    ``batch["targets"]`` (class ids ``[B]``).
    """

    def __init__(self, cfg: AspectRatioConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.classifier = nn.Linear(cfg.d_model, cfg.n_classes)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=cfg.init_std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        for layer in self.layers:  # GPT-2 style: residual output projections scaled by 1/sqrt(2·n_layers)
            for lin in (layer.attn.o_proj, [m for m in layer.ffn.modules() if isinstance(m, nn.Linear)][-1]):
                lin.weight.data.mul_((2 * cfg.n_layers) ** -0.5)

    def forward(self, inputs: Tensor, state=None) -> tuple[Tensor, None]:
        if inputs.dim() != 2 or inputs.dtype not in (torch.int64, torch.int32):
            raise SeqzooError(f"inputs must be [B, T] integer token ids, got {list(inputs.shape)} {inputs.dtype}")
        if state is not None:
            raise SeqzooError("the aspect-ratio classifier reads whole sequences; state must be None")
        x = self.embed(inputs)
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x)
        pooled = x[:, -1] if self.cfg.causal else x.mean(dim=1)
        return self.classifier(pooled), None

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        logits, _ = self(batch["inputs"])
        return F.cross_entropy(logits.float(), batch["targets"])

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


__all__ = ["AspectRatioConfig", "AspectRatioClassifier", "MultiHeadAttention", "aspect_ratio_configs"]
