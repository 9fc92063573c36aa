"""Combiner: full attention at sparse cost, by a structured factorisation of the attention distribution.

Paper: "Combiner: Full Attention Transformer with Sparse Computation Cost", Ren, Dai, Dai, Yang, Leskovec,
Schuurmans and Dai, NeurIPS 2021, arXiv 2107.05768 (official code: google-research/google-research, ``combiner/``).

Attention is a conditional expectation ``o_i = E_{p(j|i)}[v_j]`` over the support ``Ω_i`` (here: j ≤ i). Combiner
splits ``Ω_i`` into a part ``Ω_i^0`` attended directly and regions ``Ω_i^r`` reached through an abstraction, and
factorises ``p(j | i) = p(Ω_i^r | i) · q(j | Ω_i^r)`` for ``j ∈ Ω_i^r``, where the within-region distribution ``q``
does not depend on i (paper eq. 4–6). One softmax normalises the direct terms and the abstraction terms together:

    o_i = Σ_{j ∈ Ω_i^0} p(j | i) v_j + Σ_r p(Ω_i^r | i) v̄_r,          v̄_r = E_{q(j | Ω^r)}[v_j]
    p(j | i) ∝ exp(q_i · k_j / √d) for j ∈ Ω_i^0,    p(Ω_i^r | i) ∝ exp(q_i · k̄_r / √d)   (one joint normaliser)

so the implied dense matrix ``P_ij = p(j|i)`` (for ``j ∈ Ω_i^r``: ``p(Ω_i^r|i) · q(j|Ω_i^r)``) is a proper
distribution over *every* previous position: full attention support in one layer, at the cost of a sparse
pattern. Positions are cut into blocks of ``s`` (``block_size``); block ``n`` holds positions ``n s … n s + s − 1``.

``variant="fixed"`` (Combiner-Fixed, the "√L decomposition", paper sec. 4.1): ``Ω_i^0`` is the own block up to i;
every *earlier* block r is one region with

    k̄_r = pool_{j ∈ r}(k_j),   q̄_r = pool_{j ∈ r}(q_j),   q(j | r) = softmax_{j ∈ r}(q̄_r · k_j / √d)

(``pooling`` = "max" or "mean"; the code's default is max pooling of the raw vectors). Cost O(T (s + T/s)).

``variant="axial"`` (Combiner-Axial, sec. 4.2, causal row-major form): the sequence is a grid of rows of length
``s``; query ``i`` at (row n, column c) attends directly to its own row up to c, and each earlier row r is one
region reached through column c of that row:

    key of region r = k_{(r, c)},   q(j | r, c) = softmax_{j ∈ row r}(q_{(r, c)} · k_j / √d)

i.e. the abstraction of row r is the full-row attention output at (r, c), and the column attention picks it up
(as in the code's ``axial_rowmajor`` with ``row_summary="none"``, the plain key; its released LM config uses a
learned projection of the row output as that key instead). Cost O(T (s + T/s)).

Queries and keys are rotated with RoPE (arXiv 2104.09864) when ``rope`` is set, before pooling; the backbone has
no absolute positions, so this is what tells positions inside a block apart.

State (grows with T, so ``constant_state = False``): the queries, keys and values of the current, unfinished
block, and the summaries of the finished blocks:

    {"q", "k", "v": [B, n, H, d]  (n < s; rotated, in the compute dtype),
     "k_sum", "v_sum": [B, H, R, d] (fixed) or [B, H, R, s, d] (axial)   (R finished blocks; float32/float64),
     "pos": int64 [B]}

A block's summary is computed once, when its last position arrives, from the same vectors whatever the split, so
feeding a sequence in any split gives the outputs of one call. ``implied_attention(x)`` returns the dense matrix
``P`` (``[B, H, T, T]``) of a whole sequence; the per-head outputs equal ``P @ V``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...core.errors import SeqzooError
from ...core.mixer import Mixer
from ...core.registry import register_mixer
from ...core.state import State, state_dtype
from ...ops._common import causal_mask, pad_time
from .rope import Rotary
from .softmax import check_heads

VARIANTS = ("fixed", "axial")
POOLINGS = ("max", "mean")


@register_mixer("combiner", paper="Combiner: Full Attention Transformer with Sparse Computation Cost",
                arxiv="2107.05768")
class Combiner(Mixer):
    """Combiner attention (Ren et al. 2021, arXiv 2107.05768), Fixed or Axial factorisation, causal: direct
    attention inside the own block plus one abstraction per earlier block, under one softmax, so every previous
    position keeps non-zero probability.

    Options: ``n_heads``; ``block_size`` (s: block / row length); ``variant`` ("fixed" or "axial"); ``pooling``
    of the fixed variant's block summaries ("max" or "mean"); ``rope`` and ``rope_base``; ``bias`` on the
    projections.
    """

    IMPLS: tuple[str, ...] = ("math",)
    constant_state = False  # one summary per finished block: grows as T / block_size (axial: as T)

    def __init__(self, d_model: int, n_heads: int = 4, block_size: int = 8, variant: str = "fixed",
                 pooling: str = "max", rope: bool = True, rope_base: float = 10000.0, bias: bool = False):
        super().__init__(d_model)
        self.head_dim = check_heads(d_model, n_heads)
        self.n_heads = n_heads
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise SeqzooError(f"block_size must be a positive int, got {block_size!r}")
        if variant not in VARIANTS:
            raise SeqzooError(f"unknown combiner variant {variant!r}; valid: {', '.join(VARIANTS)}")
        if pooling not in POOLINGS:
            raise SeqzooError(f"unknown combiner pooling {pooling!r}; valid: {', '.join(POOLINGS)}")
        if rope and self.head_dim % 2:
            raise SeqzooError(f"rope needs an even head width, got d_model/n_heads = {self.head_dim}; "
                              f"choose n_heads so that d_model/n_heads is even, or rope=False")
        self.block_size, self.variant, self.pooling = block_size, variant, pooling
        self.rotary = Rotary(self.head_dim, rope_base) if rope else None
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.o_proj = nn.Linear(d_model, d_model, bias=bias)

    # -- contract -----------------------------------------------------------------------------------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None) -> State:
        dtype = dtype if dtype is not None else torch.get_default_dtype()
        partial = torch.zeros(batch_size, 0, self.n_heads, self.head_dim, device=device, dtype=dtype)
        summary_shape = (batch_size, self.n_heads, 0) + ((self.block_size,) if self.variant == "axial" else ())
        summary = torch.zeros(*summary_shape, self.head_dim, device=device, dtype=state_dtype(dtype))
        return {"q": partial, "k": partial.clone(), "v": partial.clone(), "k_sum": summary,
                "v_sum": summary.clone(), "pos": torch.zeros(batch_size, dtype=torch.int64, device=device)}

    def state_size(self, seq_len: int) -> int:
        finished, partial = divmod(seq_len, self.block_size)
        per_block = self.block_size if self.variant == "axial" else 1
        return 3 * partial * self.d_model + 2 * finished * per_block * self.d_model + 1

    def _mix(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        missing = [key for key in ("q", "k", "v", "k_sum", "v_sum", "pos") if key not in state]
        if missing:
            raise SeqzooError(f"combiner state lacks {missing[0]!r}; expected keys: q, k, v, k_sum, v_sum, pos "
                              f"(use init_state or the state returned by a previous call)")
        batch, length, _ = x.shape
        q, k, v = self.project(x, state["pos"])
        held = state["q"].shape[1]
        q, k, v = (torch.cat([state[name].to(x.dtype), new], dim=1) for name, new in zip("qkv", (q, k, v)))
        o, k_sum, v_sum, _ = self.combine(q, k, v, state["k_sum"], state["v_sum"])
        o = o[:, :, held:]                                                          # [B, H, T, d]
        y = self.o_proj(o.transpose(1, 2).reshape(batch, length, self.d_model).to(x.dtype))
        keep = (held + length) % self.block_size
        cut = held + length - keep
        return y, {"q": q[:, cut:], "k": k[:, cut:], "v": v[:, cut:], "k_sum": k_sum, "v_sum": v_sum,
                   "pos": state["pos"] + length}

    # -- pieces (also used by the tests) ------------------------------------------------------------------------
    def project(self, x: Tensor, pos: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``q, k, v`` as ``[B, T, H, d]`` (q and k rotated at positions ``pos[b] + t`` when ``rope``)."""
        batch, length, _ = x.shape
        shape = (batch, length, self.n_heads, self.head_dim)
        q, k, v = self.q_proj(x).view(shape), self.k_proj(x).view(shape), self.v_proj(x).view(shape)
        if self.rotary is not None:
            q, k = self.rotary(q, pos), self.rotary(k, pos)
        return q, k, v

    def _pool(self, x: Tensor, dim: int) -> Tensor:
        return x.amax(dim) if self.pooling == "max" else x.mean(dim)

    def combine(self, q: Tensor, k: Tensor, v: Tensor, k_sum: Tensor, v_sum: Tensor):
        """Combiner attention for ``q, k, v`` ``[B, n, H, d]`` that start at a block boundary, after the finished
        blocks summarised by ``k_sum, v_sum``.

        Returns ``(o, k_sum, v_sum, pieces)``: ``o`` ``[B, H, n, d]`` (float32/float64); the summaries extended by
        the blocks finished inside ``q, k, v``; ``pieces`` = (direct probabilities ``[B, H, N, s, s]``,
        abstraction probabilities ``[B, H, N, s, R]``, within-block weights ``q(j | r)``: ``[B, H, R, s]`` for
        fixed, ``[B, H, R, s, s]`` (row, column, position) for axial), with N the blocks in ``q`` and R all
        summaries.
        """
        s, n = self.block_size, q.shape[1]
        work = state_dtype(q.dtype)
        n_blocks, finished, before = -(-n // s), n // s, k_sum.shape[2]
        scale = self.head_dim ** -0.5

        def blocks(t: Tensor) -> Tensor:                       # [B, n, H, d] -> [B, H, N, s, d]
            t = pad_time(t.to(work), s, dim=1)
            return t.view(t.shape[0], n_blocks, s, self.n_heads, self.head_dim).permute(0, 3, 1, 2, 4)

        qb, kb, vb = blocks(q), blocks(k), blocks(v)
        # summaries of the blocks that are finished now
        qf, kf, vf = qb[:, :, :finished], kb[:, :, :finished], vb[:, :, :finished]
        if self.variant == "fixed":
            q_bar = self._pool(qf, 3)                                                # [B, H, F, d]
            weights = torch.softmax((q_bar[..., None, :] @ kf.transpose(-1, -2)).squeeze(-2) * scale, dim=-1)
            k_new, v_new = self._pool(kf, 3), (weights[..., None, :] @ vf).squeeze(-2)
        else:
            weights = torch.softmax((qf @ kf.transpose(-1, -2)) * scale, dim=-1)     # [B, H, F, s(col), s]
            k_new, v_new = kf, weights @ vf
        k_sum = torch.cat([k_sum.to(work), k_new], dim=2)
        v_sum = torch.cat([v_sum.to(work), v_new], dim=2)

        # one softmax over [own block up to i | abstractions of the earlier blocks]
        direct = (qb @ kb.transpose(-1, -2)) * scale                                  # [B, H, N, s, s]
        direct = direct.masked_fill(~causal_mask(s, direct.device), float("-inf"))
        pattern = "bhnsd,bhrd->bhnsr" if self.variant == "fixed" else "bhnsd,bhrsd->bhnsr"
        abstract = torch.einsum(pattern, qb, k_sum) * scale                           # [B, H, N, s, R]
        block_index = before + torch.arange(n_blocks, device=q.device)
        earlier = torch.arange(k_sum.shape[2], device=q.device)[None, :] < block_index[:, None]   # [N, R]
        abstract = abstract.masked_fill(~earlier[:, None, :], float("-inf"))
        probs = torch.softmax(torch.cat([direct, abstract], dim=-1), dim=-1)
        p_direct, p_abstract = probs.split([s, k_sum.shape[2]], dim=-1)
        pattern = "bhnsr,bhrd->bhnsd" if self.variant == "fixed" else "bhnsr,bhrsd->bhnsd"
        o = p_direct @ vb + torch.einsum(pattern, p_abstract, v_sum)
        o = o.reshape(o.shape[0], self.n_heads, n_blocks * s, self.head_dim)[:, :, :n]
        return o, k_sum, v_sum, (p_direct, p_abstract, weights)

    def implied_attention(self, x: Tensor) -> Tensor:
        """The dense attention matrix ``P`` ``[B, H, T, T]`` implied by the factorisation for a whole sequence ``x``
        (from an empty state): ``P_ij = p(j | i)`` for j in the own block, ``p(Ω^r | i) q(j | Ω^r)`` for j in an
        earlier block r. The per-head outputs (before ``W_o``) are ``P @ V``."""
        batch, length, _ = x.shape
        q, k, v = self.project(x, torch.zeros(batch, dtype=torch.int64, device=x.device))
        state = self.init_state(batch, device=x.device, dtype=x.dtype)
        _, _, _, (p_direct, p_abstract, weights) = self.combine(q, k, v, state["k_sum"], state["v_sum"])
        n_blocks, s, finished = p_direct.shape[2], self.block_size, weights.shape[2]
        eye = torch.eye(n_blocks, dtype=p_direct.dtype, device=x.device)
        dense = torch.einsum("bhnij,nm->bhnimj", p_direct, eye)                       # own block on the diagonal
        pattern = "bhnir,bhrj->bhnirj" if self.variant == "fixed" else "bhnir,bhrij->bhnirj"
        spread = torch.einsum(pattern, p_abstract, weights)                         # p(Ω^r|i) · q(j|Ω^r)
        dense = torch.cat([dense[:, :, :, :, :finished] + spread, dense[:, :, :, :, finished:]], dim=4)
        return dense.reshape(batch, self.n_heads, n_blocks * s, n_blocks * s)[:, :, :length, :length]

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, n_heads={self.n_heads}, block_size={self.block_size}, "
                f"variant={self.variant!r}, pooling={self.pooling!r}, rope={self.rotary is not None}")


__all__ = ["Combiner", "VARIANTS", "POOLINGS"]
