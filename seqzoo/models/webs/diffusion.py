"""Models 1 and 2 of the spider-web paper: conditional analog diffusion over the same node tokens.

Paper: "Modeling and design of heterogeneous hierarchical bioinspired spider web structures using generative deep
learning and additive manufacturing", Lu, Lee and Buehler, PNAS 2023, arXiv 2304.05137: Model 1 is an analog
diffusion model over the sparse representation (xyz + neighbour indices), Model 2 a diffusion model over the full
representation (xyz + adjacency row). Both are :class:`GraphDiffusion` here; only the tokenizer variant differs.
The paper's abstract calls Model 2 "discrete"; its repository builds it like Model 1 on the full tensor, which is
what we do (analog diffusion on ±1 adjacency entries, thresholded at 0 when decoding, in the spirit of
"Analog Bits", Chen, Zhang and Hinton, arXiv 2208.04202).

Forward process (continuous time t ∈ [0, 1], cosine schedule of Nichol and Dhariwal, arXiv 2102.09672):

    ᾱ(t) = cos²( (t + s)/(1 + s) · π/2 ) / cos²( s/(1 + s) · π/2 ),  s = 0.008
    z_t = √ᾱ(t) x₀ + √(1 − ᾱ(t)) ε,  ε ~ N(0, I)

Denoiser x̂₀ = f(z_t, t, c): tokens W_in z_t + P_k + MLP(PE(1000 t)), then blocks of bidirectional self-attention,
cross-attention to the condition tokens (the encoder of Model 3, null tokens always visible, condition dropped with
probability ``cond_drop_prob``) and FFN; loss ‖x̂₀ − x₀‖² (x₀-prediction, as the paper's ``pred_objective``
option allows).

Sampling: deterministic DDIM (Song, Meng and Ermon, arXiv 2010.02502) over ``steps`` times t_K = 1 > … > t_0 = 0:

    x̂₀ = clamp(f̃(z_t, t, c), −1.2, 1.2),  ε̂ = (z_t − √ᾱ_t x̂₀)/√(1 − ᾱ_t),  z_s = √ᾱ_s x̂₀ + √(1 − ᾱ_s) ε̂

with classifier-free guidance f̃ = f_∅ + w (f_c − f_∅) (Ho and Salimans, arXiv 2207.12598).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ...core.errors import SeqzooError
from .graph_transformer import ConditionEncoder, GraphBlock, check_model_shape, sinusoidal

SCHEDULE_OFFSET = 0.008


def alpha_bar(t: Tensor) -> Tensor:
    s = SCHEDULE_OFFSET
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return (f / math.cos(s / (1 + s) * math.pi / 2) ** 2).clamp(1e-5, 1.0)


class GraphDiffusion(nn.Module):
    """Conditional analog diffusion over node tokens ``[B, M, token_dim]`` (Models 1 and 2)."""

    kind = "diffusion"

    def __init__(self, token_dim: int, max_nodes: int, n_features: int = 14, d_model: int = 64, n_layers: int = 3,
                 n_heads: int = 4, ff_mult: int = 4, cond_drop_prob: float = 0.25):
        super().__init__()
        check_model_shape(d_model, n_heads, n_layers)
        if not 0.0 <= cond_drop_prob < 1.0:
            raise SeqzooError(f"cond_drop_prob must be in [0, 1), got {cond_drop_prob!r}")
        self.token_dim, self.max_nodes, self.n_features = token_dim, max_nodes, n_features
        self.cond_drop_prob, self.d_model = cond_drop_prob, d_model
        self.options = {"d_model": d_model, "n_layers": n_layers, "n_heads": n_heads, "ff_mult": ff_mult,
                        "cond_drop_prob": cond_drop_prob}
        self.cond = ConditionEncoder(n_features, d_model)
        self.inp = nn.Linear(token_dim, d_model)
        self.pos = nn.Parameter(torch.randn(max_nodes, d_model) * 0.02)
        self.time = nn.Sequential(nn.Linear(d_model, d_model), nn.GELU(), nn.Linear(d_model, d_model))
        self.blocks = nn.ModuleList(GraphBlock(d_model, n_heads, ff_mult, causal=False) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, token_dim)

    def forward(self, z: Tensor, t: Tensor, cond: Tensor, drop: Tensor | None = None) -> Tensor:
        """x̂₀ ``[B, M, token_dim]`` from the noisy tokens ``z``, times ``t [B]`` and the condition."""
        if z.ndim != 3 or z.shape[1:] != (self.max_nodes, self.token_dim):
            raise SeqzooError(f"noisy tokens must have shape [B, {self.max_nodes}, {self.token_dim}], got "
                              f"{list(z.shape)}")
        if cond.ndim != 2 or cond.shape != (z.shape[0], self.n_features):
            raise SeqzooError(f"the condition must have shape [{z.shape[0]}, {self.n_features}], got "
                              f"{list(cond.shape)}")
        batch = z.shape[0]
        if drop is None:
            drop = torch.zeros(batch, dtype=torch.bool, device=z.device)
        memory, visible = self.cond(cond, drop)
        h = self.inp(z) + self.pos.to(z.dtype) + self.time(sinusoidal(1000.0 * t, self.d_model).to(z.dtype))[:, None]
        for block in self.blocks:
            h = block(h, memory, visible)
        return self.out(self.norm(h))

    def loss(self, x0: Tensor, cond: Tensor, generator: torch.Generator | None = None) -> Tensor:
        batch = x0.shape[0]
        t = torch.rand(batch, generator=generator, device=x0.device, dtype=x0.dtype)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        ab = alpha_bar(t)[:, None, None]
        z = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        drop = torch.rand(batch, generator=generator, device=x0.device) < self.cond_drop_prob
        return ((self.forward(z, t, cond, drop) - x0) ** 2).mean()

    def guided(self, z: Tensor, t: Tensor, cond: Tensor, cond_scale: float = 1.0, drop_condition: bool = False):
        ones = torch.ones(z.shape[0], dtype=torch.bool, device=z.device)
        if drop_condition:
            return self.forward(z, t, cond, ones)
        cond_out = self.forward(z, t, cond)
        if cond_scale == 1.0:
            return cond_out
        null_out = self.forward(z, t, cond, ones)
        return null_out + cond_scale * (cond_out - null_out)

    @torch.no_grad()
    def generate(self, cond: Tensor, *, steps: int = 50, cond_scale: float = 1.0, drop_condition: bool = False,
                 generator: torch.Generator | None = None) -> Tensor:
        """Node tokens ``[B, M, token_dim]`` by DDIM from Gaussian noise (``generator`` fixes the noise)."""
        if not isinstance(steps, int) or steps < 1:
            raise SeqzooError(f"steps must be a positive int, got {steps!r}")
        batch = cond.shape[0]
        z = torch.randn(batch, self.max_nodes, self.token_dim, generator=generator, dtype=cond.dtype,
                        device=cond.device)
        times = torch.linspace(1.0, 0.0, steps + 1, dtype=cond.dtype, device=cond.device)
        x0 = z
        for t_now, t_next in zip(times[:-1], times[1:]):
            ab_now, ab_next = alpha_bar(t_now), alpha_bar(t_next)
            x0 = self.guided(z, t_now.expand(batch), cond, cond_scale, drop_condition).clamp(-1.2, 1.2)
            eps = (z - ab_now.sqrt() * x0) / (1 - ab_now).sqrt()
            z = ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps
        return x0


__all__ = ["GraphDiffusion", "alpha_bar"]
