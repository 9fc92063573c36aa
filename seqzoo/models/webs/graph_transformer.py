"""Model 3 of the spider-web paper: a conditional autoregressive transformer over continuous node tokens.

Paper: "Modeling and design of heterogeneous hierarchical bioinspired spider web structures using generative deep
learning and additive manufacturing", Lu, Lee and Buehler, PNAS 2023, arXiv 2304.05137 (Model 3; the official
``GraphWebTransformer``: dim 128, depth 3, 8 heads, ff ×4, ``cond_drop_prob = 0.25``, 14 conditioning scalars).
Classifier-free guidance: "Classifier-Free Diffusion Guidance", Ho and Salimans, arXiv 2207.12598.

Condition encoder (one token per design target f = 1..14, standardised scalar c_f):

    m_f = W_o [ GELU(w_f c_f + b_f) ; PE(f) ],   PE = sinusoidal code of the feature index
    memory = [ m_null (learned, ``n_null`` tokens) ; m_1 … m_14 ]

Decoder over node tokens t_0..t_{M−1} (``WebTokenizer``), input h_0 = s (learned start), h_k = W_in t_{k−1} + P_k:

    h ← h + CausalSelfAttn(LN h)                 (seqzoo ``attention`` mixer, :func:`seqzoo.ops.softmax_attention`)
    h ← h + CrossAttn(LN h, memory, visible)     (null tokens always visible; the 14 targets unless dropped)
    h ← h + FFN(LN h)
    t̂_k = W_out LN h_k,    loss = mean_k ‖t̂_k − t_k‖²          (continuous outputs, MSE, as the paper)

Training drops the condition (only the null tokens stay visible) with probability ``cond_drop_prob``. Sampling
mixes the two predictions, t̂ = t̂_∅ + w (t̂_c − t̂_∅) with guidance scale w (w = 1 is the conditional forward).
Generation runs M steps, feeding each prediction back (``snap=True`` first rounds the node flag to ±1 and writes
exact padding into rows that are not nodes, so the model sees inputs of the training form).

Output head: ``head="mse"`` is the paper's (continuous prediction, MSE, deterministic generation). Regressing the
coordinates of the next node to its conditional mean shrinks generated webs (our first run: edge lengths
collapsed to ≈ the mean), so ``head="gaussian"`` also predicts log σ of the three coordinates (σ ≥ 0.01 so the
likelihood cannot run away, σ ≤ e²). It replaces, in the MSE head's loss, the squared error of each coordinate of a
real node by that coordinate's Gaussian negative log-likelihood, and changes nothing else: one mean over all
B·T·D token channels (flag, 3 coordinates, adjacency), each channel c of row k contributing

    ℓ_kc = ½ ((x_kc − μ_kc)/σ_kc)² + log σ_kc − log 0.01    (a coordinate of a real node)
    ℓ_kc = (t̂_kc − t_kc)²                                   (the flag, the adjacency row, padding coordinates)

so that with σ² = ½ (where the NLL is the squared error plus a constant) it is exactly the MSE head's loss, with
the same gradients. (An earlier version averaged the flag + adjacency channels and the three coordinates
separately and added the two means: each coordinate then weighed (1 + M)/3 ≈ 11 times a flag channel before the
1/σ² of the likelihood, the coordinate gradient swamped the stop flag, and the model never learned to stop —
it emitted 32 nodes for most targets. A test pins the reduction to the MSE head.)
At generation it samples x = μ + τ σ ε (τ = ``temperature``) with the same clamped σ as in training.

``causal=False`` swaps the causal self-attention for a bidirectional one; it exists only so the causality probe
can show that it fails (a perturbation at token j then changes predictions at earlier tokens).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ...core.errors import SeqzooError
from ...core.registry import build_mixer
from ..fit import CrossAttention


def sinusoidal(positions: Tensor, dim: int) -> Tensor:
    """``[..., dim]`` sinusoidal code of (possibly fractional) positions (Vaswani et al., arXiv 1706.03762)."""
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device, dtype=torch.float64) / half)
    angle = positions.to(torch.float64)[..., None] * freq
    return torch.cat([angle.sin(), angle.cos()], -1).to(torch.get_default_dtype() if not positions.is_floating_point()
                                                         else positions.dtype)


HEADS = ("mse", "gaussian")
LOG_SIGMA_MIN = math.log(0.01)   # σ ≥ 0.01 in token units


class ConditionEncoder(nn.Module):
    """14 standardised scalars → 14 memory tokens, plus ``n_null`` learned null tokens that are always visible."""

    def __init__(self, n_features: int, d_model: int, d_embed: int = 64, n_null: int = 1):
        super().__init__()
        self.n_features, self.d_embed = n_features, d_embed
        self.weight = nn.Parameter(torch.randn(n_features, d_embed) * 0.5)
        self.bias = nn.Parameter(torch.zeros(n_features, d_embed))
        self.out = nn.Linear(2 * d_embed, d_model)
        self.null = nn.Parameter(torch.randn(n_null, d_model) * 0.02)

    def forward(self, cond: Tensor, drop: Tensor) -> tuple[Tensor, Tensor]:
        """``(memory [B, n_null + F, D], visible [B, 1, 1, n_null + F])`` for ``cond [B, F]`` and ``drop [B]``."""
        if cond.ndim != 2 or cond.shape[1] != self.n_features:
            raise SeqzooError(f"the condition must have shape [B, {self.n_features}] (one value per design "
                              f"target), got {list(cond.shape)}")
        batch = cond.shape[0]
        per = torch.nn.functional.gelu(cond[..., None] * self.weight + self.bias)          # [B, F, E]
        code = sinusoidal(torch.arange(self.n_features, device=cond.device), self.d_embed).to(cond.dtype)
        tokens = self.out(torch.cat([per, code.expand(batch, -1, -1)], -1))
        memory = torch.cat([self.null.to(cond.dtype).expand(batch, -1, -1), tokens], 1)
        visible = torch.ones(batch, memory.shape[1], dtype=torch.bool, device=cond.device)
        visible[:, self.null.shape[0]:] = ~drop[:, None]
        return memory, visible[:, None, None, :]


class BidirectionalSelfAttention(nn.Module):
    """Self-attention without a mask (every token sees every token) — the variant that must fail the probe."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.attn = CrossAttention(d_model, n_heads)

    def forward(self, x: Tensor) -> Tensor:
        return self.attn(x, x)


class GraphBlock(nn.Module):
    """Pre-norm: self-attention (causal mixer or bidirectional), cross-attention to the condition, GELU FFN."""

    def __init__(self, d_model: int, n_heads: int, ff_mult: int = 4, causal: bool = True):
        super().__init__()
        self.causal = causal
        self.self_attn = (build_mixer("attention", d_model, n_heads=n_heads, rope=False) if causal
                          else BidirectionalSelfAttention(d_model, n_heads))
        self.cross = CrossAttention(d_model, n_heads)
        hidden = ff_mult * d_model
        self.ffn = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, d_model))
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(3))

    def forward(self, x: Tensor, memory: Tensor, visible: Tensor) -> Tensor:
        h = self.norms[0](x)
        x = x + (self.self_attn(h)[0] if self.causal else self.self_attn(h))
        x = x + self.cross(self.norms[1](x), memory, visible)
        return x + self.ffn(self.norms[2](x))


def check_model_shape(d_model: int, n_heads: int, n_layers: int) -> None:
    for name, v in (("d_model", d_model), ("n_heads", n_heads), ("n_layers", n_layers)):
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise SeqzooError(f"{name} must be a positive int, got {v!r}")
    if d_model % n_heads:
        raise SeqzooError(f"n_heads={n_heads} does not divide d_model={d_model}; valid: a divisor of {d_model}")


class GraphWebTransformer(nn.Module):
    """Conditional AR generator of node-token sequences ``[B, M, token_dim]`` (Model 3)."""

    kind = "transformer"

    def __init__(self, token_dim: int, max_nodes: int, n_features: int = 14, d_model: int = 64, n_layers: int = 3,
                 n_heads: int = 4, ff_mult: int = 4, cond_drop_prob: float = 0.25, causal: bool = True,
                 head: str = "mse"):
        super().__init__()
        check_model_shape(d_model, n_heads, n_layers)
        if head not in HEADS:
            raise SeqzooError(f"unknown output head {head!r}; valid: {', '.join(HEADS)}")
        self.head = head
        if not 0.0 <= cond_drop_prob < 1.0:
            raise SeqzooError(f"cond_drop_prob must be in [0, 1), got {cond_drop_prob!r}")
        self.token_dim, self.max_nodes, self.n_features = token_dim, max_nodes, n_features
        self.cond_drop_prob = cond_drop_prob
        self.options = {"d_model": d_model, "n_layers": n_layers, "n_heads": n_heads, "ff_mult": ff_mult,
                        "cond_drop_prob": cond_drop_prob, "causal": causal, "head": head}
        self.cond = ConditionEncoder(n_features, d_model)
        self.start = nn.Parameter(torch.randn(d_model) * 0.02)
        self.inp = nn.Linear(token_dim, d_model)
        self.pos = nn.Parameter(torch.randn(max_nodes, d_model) * 0.02)
        self.blocks = nn.ModuleList(GraphBlock(d_model, n_heads, ff_mult, causal) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, token_dim + (3 if head == "gaussian" else 0))

    def _check(self, tokens: Tensor, cond: Tensor) -> None:
        if tokens.ndim != 3 or tokens.shape[2] != self.token_dim or tokens.shape[1] > self.max_nodes:
            raise SeqzooError(f"node tokens must have shape [B, T <= {self.max_nodes}, {self.token_dim}], got "
                              f"{list(tokens.shape)}")
        if cond.ndim != 2 or cond.shape[1] != self.n_features or cond.shape[0] != tokens.shape[0]:
            raise SeqzooError(f"the condition must have shape [{tokens.shape[0]}, {self.n_features}], got "
                              f"{list(cond.shape)}")

    def forward(self, tokens: Tensor, cond: Tensor, drop: Tensor | None = None) -> Tensor:
        """Teacher-forced predictions ``[B, T, token_dim]``: output k predicts token k from tokens < k."""
        return self.raw(tokens, cond, drop)[..., :self.token_dim]

    def raw(self, tokens: Tensor, cond: Tensor, drop: Tensor | None = None) -> Tensor:
        """The head's full output: the predictions, then (``head="gaussian"``) log σ of the 3 coordinates."""
        self._check(tokens, cond)
        batch, length, _ = tokens.shape
        if drop is None:
            drop = torch.zeros(batch, dtype=torch.bool, device=cond.device)
        memory, visible = self.cond(cond, drop)
        start = self.start.to(tokens.dtype).expand(batch, 1, -1)
        h = torch.cat([start, self.inp(tokens[:, :length - 1])], 1) + self.pos[:length].to(tokens.dtype)
        for block in self.blocks:
            h = block(h, memory, visible)
        return self.out(self.norm(h))

    def guided(self, tokens: Tensor, cond: Tensor, cond_scale: float = 1.0) -> Tensor:
        """Classifier-free guided prediction t̂_∅ + w (t̂_c − t̂_∅); w = 1 is the plain conditional forward."""
        cond_out = self.forward(tokens, cond)
        if cond_scale == 1.0:
            return cond_out
        null_out = self.forward(tokens, cond, torch.ones(cond.shape[0], dtype=torch.bool, device=cond.device))
        return null_out + cond_scale * (cond_out - null_out)

    def loss(self, tokens: Tensor, cond: Tensor, generator: torch.Generator | None = None) -> Tensor:
        drop = torch.rand(tokens.shape[0], generator=generator, device=tokens.device) < self.cond_drop_prob
        out = self.raw(tokens, cond, drop)
        if self.head == "mse":
            return ((out - tokens) ** 2).mean()
        # The MSE head's loss with each real node's coordinate squared errors replaced by their Gaussian NLL; one
        # mean over every channel, so each channel weighs as in the MSE head (see the module docstring).
        sq = (out[..., :self.token_dim] - tokens) ** 2
        log_sigma = out[..., self.token_dim:].clamp(LOG_SIGMA_MIN, 2.0)
        nll = 0.5 * sq[..., 1:4] * torch.exp(-2.0 * log_sigma) + log_sigma - LOG_SIGMA_MIN   # ≥ 0
        is_node = (tokens[..., :1] > 0).expand_as(nll)          # padding rows: plain MSE towards (0, 0, 0)
        coords = torch.where(is_node, nll, sq[..., 1:4])
        return torch.cat([sq[..., :1], coords, sq[..., 4:]], -1).mean()

    @torch.no_grad()
    def generate(self, cond: Tensor, *, cond_scale: float = 1.0, snap: bool = True, drop_condition: bool = False,
                 temperature: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
        """Node tokens ``[B, M, token_dim]`` for the standardised targets ``cond [B, F]`` (deterministic with the
        MSE head; the Gaussian head samples the coordinates with σ·``temperature`` from ``generator``)."""
        batch = cond.shape[0]
        none = torch.zeros(batch, dtype=torch.bool, device=cond.device)
        ones = torch.ones(batch, dtype=torch.bool, device=cond.device)
        out = torch.zeros(batch, 0, self.token_dim, dtype=cond.dtype, device=cond.device)
        for _ in range(self.max_nodes):
            padded = torch.cat([out, out.new_zeros(batch, 1, self.token_dim)], 1)
            if drop_condition:
                pred = self.forward(padded, cond, torch.ones(batch, dtype=torch.bool, device=cond.device))[:, -1:]
            else:
                pred = self.guided(padded, cond, cond_scale)[:, -1:]
            if self.head == "gaussian" and temperature > 0:
                log_sigma = self.raw(padded, cond, ones if drop_condition else none)[:, -1:, self.token_dim:]
                noise = torch.randn(pred[..., 1:4].shape, generator=generator, dtype=pred.dtype, device=pred.device)
                sigma = log_sigma.clamp(LOG_SIGMA_MIN, 2.0).exp()
                pred = torch.cat([pred[..., :1], pred[..., 1:4] + temperature * sigma * noise, pred[..., 4:]], -1)
            if snap:
                pred = snap_tokens(pred)
            out = torch.cat([out, pred], 1)
        return out


def snap_tokens(tokens: Tensor) -> Tensor:
    """Round the node flag to ±1 and write exact padding (0 coordinates, −1 elsewhere) into non-node rows."""
    out = tokens.clone()
    is_node = tokens[..., 0] > 0
    out[..., 0] = torch.where(is_node, 1.0, -1.0)
    pad = torch.full_like(tokens, -1.0)
    pad[..., 1:4] = 0.0
    return torch.where(is_node[..., None], out, pad)


__all__ = ["BidirectionalSelfAttention", "ConditionEncoder", "GraphBlock", "GraphWebTransformer", "check_model_shape",
           "sinusoidal", "snap_tokens"]
