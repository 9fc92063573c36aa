"""CausalLM: the decoder-only backbone every causal mixer plugs into (DESIGN.md, Contract 3).

    h_0 = Embed(x)                                  (or a linear input adapter for continuous inputs)
    h_l = h_{l-1} + Mixer_l(RMSNorm(h_{l-1}))        (pre-norm residual; each layer may use a different mixer)
    h_l = h_l + FFN_l(RMSNorm(h_l))                  (GLU, MLP or a sparse mixture of experts)
    logits = RMSNorm(h_L) Eᵀ                         (tied embeddings, or an untied/continuous head)

RMSNorm: Zhang & Sennrich 2019, arXiv 1910.07467. The model state is the list of its layers' mixer states, so
``forward(x[:, :t]) → state`` then ``forward(x[:, t:], state)`` equals ``forward(x)`` whenever every mixer obeys
the contract (tested for every registered mixer).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.errors import SeqzooError
from ..core.registry import build_mixer
from .config import ModelConfig
from .layers import build_ffn
from .moe import moe_aux_loss


def masked_mean(per_token: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``per_token`` over the positions where ``mask`` is set (all positions when it is None)."""
    if mask is None:
        return per_token.mean()
    mask = mask.to(per_token.dtype)
    return (per_token * mask).sum() / mask.sum().clamp_min(1.0)


def masked_token_loss(logits: Tensor, targets: Tensor, mask: Tensor | None) -> Tensor:
    """Next-token cross-entropy (float32) averaged over the positions where ``mask`` is set."""
    per_token = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none")
    return masked_mean(per_token.view(targets.shape), mask)


def run_blocks(blocks, x: Tensor, state: list | None = None) -> tuple[Tensor, list]:
    """Thread ``x`` through ``blocks`` (each ``block(x, layer_state) -> (x, layer_state)``), one state per layer;
    ``state=None`` starts every layer fresh. Returns the output and the list of new layer states."""
    if state is None:
        state = [None] * len(blocks)
    elif len(state) != len(blocks):
        raise SeqzooError(f"state has {len(state)} layer states; this model has {len(blocks)} layers")
    new_state = []
    for block, layer_state in zip(blocks, state):
        x, layer_state = block(x, layer_state)
        new_state.append(layer_state)
    return x, new_state


class Block(nn.Module):
    """norm → mixer → residual; norm → FFN → residual."""

    def __init__(self, cfg: ModelConfig, mixer_name: str):
        super().__init__()
        self.mixer_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mixer = build_mixer(mixer_name, cfg.d_model, **cfg.mixer_options.get(mixer_name, {}))
        self.ffn = build_ffn(cfg.ffn, cfg.d_model, cfg.ffn_hidden, **cfg.ffn_options())
        self.ffn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps) if self.ffn is not None else None

    def forward(self, x: Tensor, state=None):
        h, state = self.mixer(self.mixer_norm(x), state)
        x = x + h
        if self.ffn is not None:
            x = x + self.ffn(self.ffn_norm(x))
        return x, state


class CausalLM(nn.Module):
    """Decoder-only language model over token ids (or continuous vectors) with per-layer mixer choice."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        if cfg.input_dim is None:
            self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        else:
            self.embed = nn.Linear(cfg.input_dim, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg, name) for name in cfg.layer_mixers())
        self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        out_dim = cfg.output_dim if cfg.output_dim is not None else cfg.vocab_size
        self.head = nn.Linear(cfg.d_model, out_dim, bias=False)
        self._init_weights()
        if cfg.tie_embeddings and cfg.input_dim is None and cfg.output_dim is None:
            self.head.weight = self.embed.weight

    def _init_weights(self) -> None:
        std = self.cfg.init_std
        for module in (self.embed, self.head):
            nn.init.normal_(module.weight, std=std)
            if getattr(module, "bias", None) is not None:
                # the continuous input adapter (nn.Linear) must not keep PyTorch's U(±1/√input_dim) bias beside a
                # 0.02-scale weight: with few input features the constant bias drowned the input signal
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            if block.ffn is not None:
                for lin in block.ffn.modules():
                    if isinstance(lin, nn.Linear):
                        nn.init.normal_(lin.weight, std=std)
                        if lin.bias is not None:
                            nn.init.zeros_(lin.bias)
                # GPT-2 style: scale the residual output projection(s) by 1/sqrt(2·n_layers)
                for name, lin in block.ffn.named_modules():
                    if name.endswith("w_down"):
                        lin.weight.data.mul_((2 * self.cfg.n_layers) ** -0.5)

    @property
    def continuous(self) -> bool:
        return self.cfg.input_dim is not None

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> list:
        return [b.mixer.init_state(batch_size, device=device, dtype=dtype) for b in self.blocks]

    def embed_inputs(self, inputs: Tensor) -> Tensor:
        """Validated token ids ``[B, T]`` (or continuous ``[B, T, input_dim]``) through the input embedding."""
        if self.continuous:
            if inputs.dim() != 3 or inputs.shape[-1] != self.cfg.input_dim:
                raise SeqzooError(f"inputs must be [B, T, {self.cfg.input_dim}] floats, got {list(inputs.shape)}")
        elif inputs.dim() != 2 or inputs.dtype not in (torch.int64, torch.int32):
            raise SeqzooError(f"inputs must be [B, T] integer token ids, got {list(inputs.shape)} {inputs.dtype}")
        return self.embed(inputs)

    def forward(self, inputs: Tensor, state: list | None = None) -> tuple[Tensor, list]:
        """``inputs``: token ids ``[B, T]`` (or ``[B, T, input_dim]``). Returns ``(logits, new_state)``."""
        x, new_state = run_blocks(self.blocks, self.embed_inputs(inputs), state)
        return self.head(self.norm(x)), new_state

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        """Mean next-token cross-entropy (or MSE for continuous outputs) over positions where ``loss_mask`` is set;
        in training mode, plus the load-balancing losses of mixture-of-experts FFNs (already α-weighted)."""
        logits, _ = self(batch["inputs"])
        if self.cfg.output_dim is None:
            loss = masked_token_loss(logits, batch["targets"], batch.get("loss_mask"))
        else:
            per_token = (logits.float() - batch["targets"].float()).pow(2).mean(-1)
            loss = masked_mean(per_token, batch.get("loss_mask"))
        aux = moe_aux_loss(self) if self.training else None
        return loss if aux is None else loss + aux

    def num_parameters(self) -> int:
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())

    def state_size(self, seq_len: int) -> int:
        return sum(b.mixer.state_size(seq_len) for b in self.blocks)
