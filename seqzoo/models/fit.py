"""FIT: Far-reaching Interleaved Transformers, in its autoregressive (causal) form.

Paper: "FIT: Far-reaching Interleaved Transformers", Chen and Li 2023, arXiv 2305.12689.

The L data tokens are cut into G groups of n tokens (L = G·n); every group also owns m latent tokens. One FIT block:

    local     data of each group:   causal self-attention within the group (+ FFN)          cost G·n²
    read-in   latents of group g:   cross-attention to the data of group g (+ FFN)          cost G·m·n
    global    all G·m latents:      causal self-attention over the latent sequence (+ FFN)  cost (G·m)²
    read-out  data of group g:      cross-attention to the latents of group g − 1          cost L·m

so the attention cost is O(L·n + (L·m/n)²) (paper §2), not O(L²). Masking rule of the causal variant (our
specification; the paper describes FIT as an encoder / diffusion decoder and only sketches the AR use):

* latents of group g read all data of group g — they are seen only by later groups;
* the global layer is causal over the latent sequence (group-major order), so a latent sees latents of earlier
  groups and earlier latents of its own group;
* data of group g read the latents of group g − 1 only (one-group shift; after the global layer those summarise
  every group < g), plus a learned null latent that every token sees (so group 0 has something to attend to).

Hence the output at position t depends only on tokens ≤ t (tested by perturbation). With one group and no latents,
FIT is exactly a plain causal Transformer (tested). :meth:`FIT.attention_cost` gives the number of attention scores
one forward computes, and the test counts them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.errors import SeqzooError
from .causal_lm import Block, masked_token_loss
from .config import ModelConfig
from .layers import build_ffn


class CrossAttention(nn.Module):
    """Multi-head attention of ``queries [B, Q, D]`` over ``memory [B, K, D]`` with a boolean ``visible [Q, K]``."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.kv_proj = nn.Linear(d_model, 2 * d_model, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, queries: Tensor, memory: Tensor, visible: Tensor | None = None) -> Tensor:
        batch, n_q, d = queries.shape
        heads = lambda t: t.view(batch, t.shape[1], self.n_heads, d // self.n_heads).transpose(1, 2)  # noqa: E731
        k, v = self.kv_proj(memory).chunk(2, dim=-1)
        o = F.scaled_dot_product_attention(heads(self.q_proj(queries)), heads(k), heads(v), attn_mask=visible)
        return self.o_proj(o.transpose(1, 2).reshape(batch, n_q, d))


class _CrossBlock(nn.Module):
    """norm → cross-attention → residual; norm → GLU FFN → residual."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.q_norm, self.m_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps), nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = CrossAttention(cfg.d_model, cfg.mixer_options["attention"]["n_heads"])
        self.ffn = build_ffn(cfg.ffn, cfg.d_model, cfg.ffn_hidden)
        self.ffn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)

    def forward(self, x: Tensor, memory: Tensor, visible: Tensor | None) -> Tensor:
        x = x + self.attn(self.q_norm(x), self.m_norm(memory), visible)
        return x + self.ffn(self.ffn_norm(x))


class FIT(nn.Module):
    """Causal FIT language model over token ids ``[B, L]`` with ``L`` a multiple of ``group_size``."""

    def __init__(self, vocab_size: int = 256, d_model: int = 128, n_heads: int = 4, n_blocks: int = 2,
                 local_layers: int = 1, group_size: int = 32, n_latents: int = 4):
        super().__init__()
        if group_size <= 0 or n_latents < 0 or n_blocks <= 0 or local_layers <= 0:
            raise SeqzooError(f"FIT needs group_size > 0, n_latents >= 0, n_blocks > 0, local_layers > 0; got "
                              f"{group_size}, {n_latents}, {n_blocks}, {local_layers}")
        self.group_size, self.n_latents = group_size, n_latents
        self.cfg = ModelConfig(vocab_size=vocab_size, d_model=d_model, n_layers=1, mixer="attention",
                               mixer_options={"attention": {"n_heads": n_heads}})
        self.embed = nn.Embedding(vocab_size, d_model)
        self.local = nn.ModuleList(nn.ModuleList(Block(self.cfg, "attention") for _ in range(local_layers))
                                   for _ in range(n_blocks))
        if n_latents:
            self.latent_init = nn.Parameter(torch.randn(n_latents, d_model) * 0.02)
            self.null_latent = nn.Parameter(torch.randn(1, d_model) * 0.02)
            self.read_in = nn.ModuleList(_CrossBlock(self.cfg) for _ in range(n_blocks))
            self.global_ = nn.ModuleList(Block(self.cfg, "attention") for _ in range(n_blocks))
            self.read_out = nn.ModuleList(_CrossBlock(self.cfg) for _ in range(n_blocks))
        self.norm = nn.RMSNorm(d_model, eps=self.cfg.norm_eps)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.head.weight, std=0.02)

    def forward(self, tokens: Tensor) -> Tensor:
        batch, length = tokens.shape
        n, m = self.group_size, self.n_latents
        if length % n:
            raise SeqzooError(f"FIT needs a sequence length that is a multiple of group_size={n}, got {length}")
        groups = length // n
        x = self.embed(tokens)                                                     # [B, L, D]
        self.scores_computed = 0  # attention scores per sequence (and head), counted from the actual shapes

        def count(q: Tensor, k: Tensor) -> None:
            self.scores_computed += (q.shape[0] // batch) * q.shape[1] * k.shape[1]
        d = x.shape[-1]
        if m:
            latents = self.latent_init.repeat(groups, 1).expand(batch, -1, -1)     # [B, G·m, D], group-major
            # read-out: the data of group g see the latents of group g − 1 (which, after the global layer, summarise
            # all groups < g) and a null latent; group 0 sees the null latent only
            read_out_mask = torch.ones(groups, 1, 1, m + 1, dtype=torch.bool, device=x.device)
            read_out_mask[0, ..., 1:] = False
            read_out_mask = read_out_mask.repeat(batch, 1, 1, 1)                  # [B·G, 1, 1, m + 1]
        for b, local_blocks in enumerate(self.local):
            h = x.reshape(batch * groups, n, d)
            for block in local_blocks:                                             # causal within each group
                count(h, h)
                h, _ = block(h)
            x = h.reshape(batch, length, d)
            if not m:
                continue
            # read-in: the m latents of each group attend to that group's n data tokens (all of them)
            queries, data = latents.reshape(batch * groups, m, d), x.reshape(batch * groups, n, d)
            count(queries, data)
            lat = self.read_in[b](queries, data, None).reshape(batch, groups * m, d)
            count(lat, lat)
            latents, _ = self.global_[b](lat)                                      # causal over latents
            previous = torch.cat([torch.zeros_like(latents[:, :m]), latents[:, :-m]], dim=1)  # group g ← g − 1
            memory = torch.cat([self.null_latent.expand(batch * groups, 1, d),
                                previous.reshape(batch * groups, m, d)], dim=1)
            data = x.reshape(batch * groups, n, d)
            count(data, memory)
            x = self.read_out[b](data, memory, read_out_mask).reshape(batch, length, d)
        return self.head(self.norm(x))

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        return masked_token_loss(self(batch["inputs"]), batch["targets"], batch.get("loss_mask"))

    def attention_cost(self, length: int) -> int:
        """Attention scores one forward computes per sequence and head: blocks × (G·n² + G·m·n + (G·m)² + L·(m+1))."""
        n, m = self.group_size, self.n_latents
        groups = length // n
        per_block = len(self.local[0]) * groups * n * n
        if m:
            per_block += groups * m * n + (groups * m) ** 2 + length * (m + 1)
        return len(self.local) * per_block


__all__ = ["FIT", "CrossAttention"]
