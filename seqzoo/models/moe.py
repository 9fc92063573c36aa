"""Sparse mixture-of-experts feed-forward layer, as in Time-MoE, usable as the FFN of any block.

Papers:

* "Time-MoE: Billion-Scale Time Series Foundation Models with Mixture of Experts", Shi et al., ICLR 2025,
  arXiv 2409.16040 (sec. 3.2: top-k softmax routing, a shared expert gated by a sigmoid, the auxiliary
  load-balancing loss with α = 0.02).
* "Switch Transformers: Scaling to Trillion Parameter Models with Simple and Efficient Sparsity", Fedus, Zoph and
  Shazeer, 2021, arXiv 2101.03961 (the load-balancing loss, expert capacity and the capacity factor).
* "GLU Variants Improve Transformer", Shazeer 2020, arXiv 2002.05202 (SwiGLU experts).

Equations, for a token ``h`` (a row of ``x``) with ``E`` experts and ``k`` chosen per token:

    s = softmax(h W_r)                                    router probabilities, s ∈ R^E (W_r: d × E, no bias)
    g_e = s_e  if e ∈ TopK(s, k)  else 0                  (with ``renormalize``: g_e / Σ_{e'∈TopK} s_e')
    y = Σ_e g_e · FFN_e(h)  +  σ(h w_s) · FFN_shared(h)   (shared expert optional)
    FFN_e(h) = W_2,e (SiLU(h W_1,e) ⊙ h W_3,e)            SwiGLU expert (seqzoo.models.layers.GLUFeedForward)

Time-MoE keeps the top-k probabilities as they are (no renormalisation); that is the default here.

Load-balancing loss over the T tokens of a forward call (Time-MoE eq. 7, the Switch form extended to top-k):

    f_e = (1 / (k T)) Σ_t 1[e ∈ TopK(s_t, k)]             fraction of the k·T assignments sent to expert e
    P_e = (1 / T) Σ_t s_{t,e}                             mean router probability of expert e
    L_aux = α · E · Σ_e f_e P_e

Under uniform routing (P_e = 1/E) the loss is exactly α; when routing collapses onto one expert it approaches
α·E. (Mixtral-style code that sums f over the k choice slots without dividing by k gives k times this value.)

Expert capacity (Switch sec. 2.2): with a ``capacity_factor`` c, each expert processes at most
``C = ceil(c · k · T / E)`` token assignments per call, taken in token order (row-major over the flattened batch).
Assignments past the C-th are dropped: that expert contributes nothing to that token, which then passes through
the block's residual connection (its other chosen experts and the shared expert still apply). ``None`` means no
capacity limit (the default; then every token is independent of the others, so batch rows do not interact). The
numbers of dropped assignments of the last call are kept in ``last_dropped`` (per expert).

After each forward the module keeps ``aux_loss`` (the α-weighted scalar above) and ``last_topk`` (the chosen expert
indices ``[T, k]``); :func:`moe_aux_loss` sums ``aux_loss`` over every MoE layer inside a model.

Expert sizes (Time-MoE code convention): each routed expert has ``hidden // k`` hidden units and the shared expert
``hidden``, so that the activated FFN width stays close to a dense FFN of width ``hidden`` (plus the shared one);
``expert_hidden`` / ``shared_hidden`` override them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.errors import SeqzooError
from .layers import GLUFeedForward


def _positive_int(name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise SeqzooError(f"{name} must be a positive int, got {value!r}")
    return value


class SparseMoE(nn.Module):
    """Top-k routed SwiGLU experts with an optional sigmoid-gated shared expert, a load-balancing loss and an
    optional expert capacity (see the module docstring for the equations)."""

    def __init__(self, d_model: int, hidden: int | None = None, *, n_experts: int = 8, top_k: int = 2,
                 shared_expert: bool = True, aux_weight: float = 0.02, capacity_factor: float | None = None,
                 renormalize: bool = False, expert_hidden: int | None = None, shared_hidden: int | None = None):
        super().__init__()
        _positive_int("d_model", d_model)
        _positive_int("n_experts", n_experts)
        _positive_int("top_k", top_k)
        if top_k > n_experts:
            raise SeqzooError(f"top_k={top_k} exceeds n_experts={n_experts}; valid: 1 … {n_experts}")
        if isinstance(aux_weight, bool) or not isinstance(aux_weight, (int, float)) or aux_weight < 0:
            raise SeqzooError(f"aux_weight must be a non-negative number, got {aux_weight!r}")
        if capacity_factor is not None and (isinstance(capacity_factor, bool)
                                            or not isinstance(capacity_factor, (int, float)) or capacity_factor <= 0):
            raise SeqzooError(f"capacity_factor must be a positive number or None, got {capacity_factor!r}")
        hidden = hidden or 8 * ((8 * d_model // 3 + 7) // 8)
        expert_hidden = expert_hidden or max(1, hidden // top_k)
        self.d_model, self.n_experts, self.top_k = d_model, n_experts, top_k
        self.aux_weight = float(aux_weight)
        self.capacity_factor = None if capacity_factor is None else float(capacity_factor)
        self.renormalize = bool(renormalize)
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.experts = nn.ModuleList(GLUFeedForward(d_model, expert_hidden) for _ in range(n_experts))
        if shared_expert:
            self.shared_expert = GLUFeedForward(d_model, shared_hidden or hidden)
            self.shared_gate = nn.Linear(d_model, 1, bias=False)
        else:
            self.shared_expert, self.shared_gate = None, None
        self.aux_loss: Tensor | None = None
        self.last_topk: Tensor | None = None
        self.last_dropped: Tensor | None = None

    def capacity(self, n_tokens: int) -> int | None:
        """Assignments each expert may take in a call over ``n_tokens`` tokens (None: unlimited)."""
        if self.capacity_factor is None:
            return None
        return max(1, math.ceil(self.capacity_factor * self.top_k * n_tokens / self.n_experts))

    def route(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Router probabilities ``[T, E]`` (float32 or float64), top-k gates ``[T, k]`` and indices ``[T, k]``."""
        probs = F.softmax(self.router(h).to(torch.promote_types(h.dtype, torch.float32)), dim=-1)
        gates, idx = probs.topk(self.top_k, dim=-1)
        if self.renormalize:
            gates = gates / gates.sum(-1, keepdim=True)
        return probs, gates, idx

    def balance_loss(self, probs: Tensor, idx: Tensor) -> Tensor:
        """α · E · Σ_e f_e P_e (module docstring)."""
        n_tokens = probs.shape[0]
        counts = torch.zeros(self.n_experts, dtype=probs.dtype, device=probs.device)
        counts.index_add_(0, idx.reshape(-1), torch.ones(idx.numel(), dtype=probs.dtype, device=probs.device))
        fraction = counts / (self.top_k * n_tokens)
        return self.aux_weight * self.n_experts * (fraction * probs.mean(0)).sum()

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.d_model:
            raise SeqzooError(f"SparseMoE expects inputs [..., {self.d_model}], got {list(x.shape)}")
        shape = x.shape
        h = x.reshape(-1, self.d_model)
        n_tokens = h.shape[0]
        probs, gates, idx = self.route(h)
        self.aux_loss = self.balance_loss(probs, idx) if n_tokens else h.new_zeros(())
        self.last_topk = idx.detach()
        out = torch.zeros_like(h)
        capacity = self.capacity(n_tokens)
        dropped = torch.zeros(self.n_experts, dtype=torch.int64, device=h.device)
        flat_expert = idx.reshape(-1)                       # assignment a = t·k + j, in token order
        flat_token = torch.arange(n_tokens, device=h.device).repeat_interleave(self.top_k)
        flat_gate = gates.reshape(-1)
        for e, expert in enumerate(self.experts):
            chosen = (flat_expert == e).nonzero(as_tuple=True)[0]
            if capacity is not None and chosen.numel() > capacity:
                dropped[e] = chosen.numel() - capacity
                chosen = chosen[:capacity]
            if chosen.numel() == 0:
                continue
            tokens = flat_token[chosen]
            y = expert(h[tokens]) * flat_gate[chosen, None]
            out.index_add_(0, tokens, y.to(out.dtype))
        self.last_dropped = dropped
        if self.shared_expert is not None:
            out = out + torch.sigmoid(self.shared_gate(h)) * self.shared_expert(h)
        return out.to(x.dtype).reshape(shape)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, n_experts={self.n_experts}, top_k={self.top_k}, "
                f"shared_expert={self.shared_expert is not None}, aux_weight={self.aux_weight}, "
                f"capacity_factor={self.capacity_factor}, renormalize={self.renormalize}")


def moe_aux_loss(model: nn.Module) -> Tensor | None:
    """Sum of the ``aux_loss`` of every :class:`SparseMoE` inside ``model`` from its latest forward (None if none)."""
    losses = [m.aux_loss for m in model.modules() if isinstance(m, SparseMoE) and m.aux_loss is not None]
    if not losses:
        return None
    return torch.stack([loss.float() for loss in losses]).sum()


__all__ = ["SparseMoE", "moe_aux_loss"]
