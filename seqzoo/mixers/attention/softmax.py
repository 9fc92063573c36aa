"""Multi-head causal softmax attention with RoPE, grouped-query heads and an optional sliding window.

Papers:

* "Attention Is All You Need", Vaswani et al. 2017, arXiv 1706.03762 (scaled dot-product, multi-head).
* "GQA: Training Generalized Multi-Query Transformer Models from Multi-Head Checkpoints", Ainslie et al. 2023,
  arXiv 2305.13245 (``n_kv_heads`` key/value heads shared by groups of query heads; 1 = multi-query).
* "RoFormer: Enhanced Transformer with Rotary Position Embedding", Su et al. 2021, arXiv 2104.09864 (RoPE).
* Sliding-window (local) attention as in Longformer / Mistral: each query sees the ``window`` most recent keys.

Equations, for head ``h`` (query heads ``H``, key/value heads ``H_kv``, head width ``d = d_model / H``, query head
``h`` reads key/value head ``⌊h / (H / H_kv)⌋``):

    q_t = R_{p_t} (x_t W_q^h),   k_t = R_{p_t} (x_t W_k^g),   v_t = x_t W_v^g       (R_p: RoPE at position p)
    o_t^h = Σ_{s ∈ S(t)} softmax_s(q_t · k_s / √d) v_s,   S(t) = {s ≤ t} or {t − w < s ≤ t} with a window w
    y_t = concat_h(o_t^h) W_o

The state is the KV cache plus a position counter, so a sequence can be fed in any split (prefill, then one
token at a time) and RoPE positions continue across calls:

    {"k": [B, L, H_kv, d], "v": [B, L, H_kv, d]   (rotated keys and values, in the compute dtype),
     "pos": int64 [B]                              (tokens seen so far; the RoPE position of the next token)}

With a window the cache keeps only the last ``window`` keys, so the state is bounded by ``window`` tokens.
The arithmetic is done by :func:`seqzoo.ops.softmax_attention` (``impl="sdpa"``: PyTorch's fused kernel;
``"math"``: the explicit masked softmax, the reference).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...core.errors import SeqzooError
from ...core.mixer import Mixer
from ...core.registry import register_mixer
from ...core.state import State
from ...ops import softmax_attention
from .rope import Rotary


def check_heads(d_model: int, n_heads: int, n_kv_heads: int | None = None) -> int:
    """Validate a head layout and return the head width (one-line :class:`SeqzooError` otherwise)."""
    if not isinstance(n_heads, int) or isinstance(n_heads, bool) or n_heads <= 0:
        raise SeqzooError(f"n_heads must be a positive int, got {n_heads!r}")
    if d_model % n_heads:
        raise SeqzooError(f"n_heads={n_heads} does not divide d_model={d_model}; "
                          f"valid: a divisor of {d_model}")
    if n_kv_heads is not None:
        if not isinstance(n_kv_heads, int) or isinstance(n_kv_heads, bool) or n_kv_heads <= 0:
            raise SeqzooError(f"n_kv_heads must be a positive int or None, got {n_kv_heads!r}")
        if n_heads % n_kv_heads:
            raise SeqzooError(f"n_kv_heads={n_kv_heads} does not divide n_heads={n_heads}; "
                              f"valid: a divisor of {n_heads} or None")
    return d_model // n_heads


def check_impl(impl: str, impls: tuple[str, ...], owner: str) -> str:
    valid = ("auto",) + tuple(impls)
    if impl not in valid:
        raise SeqzooError(f"unknown impl {impl!r} for {owner}; valid: {', '.join(valid)}")
    return impl


@register_mixer("attention", paper="Attention Is All You Need", arxiv="1706.03762")
class SoftmaxAttention(Mixer):
    """Multi-head causal softmax attention (Vaswani et al. 2017, arXiv 1706.03762), with RoPE (arXiv 2104.09864),
    grouped-query heads (arXiv 2305.13245) and an optional sliding window; the state is the KV cache.

    Options: ``n_heads`` query heads; ``n_kv_heads`` key/value heads (None = ``n_heads``; must divide it);
    ``rope`` and ``rope_base``; ``window`` (None = full causal attention, else each token sees the ``window``
    most recent tokens including itself); ``bias`` on the projections; ``impl`` in ``IMPLS`` or ``"auto"``.
    """

    IMPLS: tuple[str, ...] = ("math", "sdpa")
    constant_state = False  # the KV cache grows with the sequence (bounded by ``window`` when one is set)

    def __init__(self, d_model: int, n_heads: int = 4, n_kv_heads: int | None = None, rope: bool = True,
                 rope_base: float = 10000.0, window: int | None = None, bias: bool = False,
                 impl: str = "auto"):
        super().__init__(d_model)
        self.head_dim = check_heads(d_model, n_heads, n_kv_heads)
        self.n_heads = n_heads
        self.n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window <= 0):
            raise SeqzooError(f"window must be a positive int or None, got {window!r}")
        if rope and self.head_dim % 2:
            raise SeqzooError(f"rope needs an even head width, got d_model/n_heads = {self.head_dim}; "
                              f"choose n_heads so that d_model/n_heads is even, or rope=False")
        self.window = window
        self.impl = check_impl(impl, self.IMPLS, "attention")
        self.rotary = Rotary(self.head_dim, rope_base) if rope else None
        kv_width = self.n_kv_heads * self.head_dim
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, kv_width, bias=bias)
        self.v_proj = nn.Linear(d_model, kv_width, bias=bias)
        self.o_proj = nn.Linear(d_model, d_model, bias=bias)

    # -- contract -----------------------------------------------------------------------------------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None) -> State:
        dtype = dtype if dtype is not None else torch.get_default_dtype()
        empty = torch.zeros(batch_size, 0, self.n_kv_heads, self.head_dim, device=device, dtype=dtype)
        return {"k": empty, "v": empty.clone(),
                "pos": torch.zeros(batch_size, dtype=torch.int64, device=device)}

    def state_size(self, seq_len: int) -> int:
        kept = seq_len if self.window is None else min(seq_len, self.window)
        return 2 * kept * self.n_kv_heads * self.head_dim + 1

    def prepare(self, x: Tensor, state: State) -> tuple[Tensor, Tensor, Tensor, dict | None]:
        """Check the state, project ``x`` to rotated heads and return ``(q, k, v, cache)`` (cache None if empty);
        shared by the attention variants that build on this mixer."""
        missing = [key for key in ("k", "v", "pos") if key not in state]
        if missing:
            raise SeqzooError(f"{self.registry_name or 'attention'} state lacks {missing[0]!r}; expected keys: "
                              f"k, v, pos (use init_state or the state returned by a previous call)")
        q, k, v = self.project(x, state["pos"])
        cache = None
        if state["k"].shape[1] > 0:
            cache = {"k": state["k"].to(x.dtype), "v": state["v"].to(x.dtype)}
        return q, k, v, cache

    def _mix(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        batch, length, _ = x.shape
        q, k, v, cache = self.prepare(x, state)
        o, new_cache = softmax_attention(q, k, v, cache=cache, window=self.window, impl=self.impl)
        y = self.o_proj(o.reshape(batch, length, self.d_model).to(x.dtype))
        return y, {"k": new_cache["k"], "v": new_cache["v"], "pos": state["pos"] + length}

    def forward_packed(self, x: Tensor, cu_seqlens: Tensor) -> Tensor:
        """Packed variable-length input ``x [1, total, D]`` with boundaries ``cu_seqlens`` (ByteTransformer; see
        :mod:`seqzoo.models.packing`): projections over the whole stream, attention within each sequence.
        Returns None for subclasses that change the attention itself (they take the generic per-sequence path)."""
        from ...models.packing import attention_forward_packed

        if type(self)._mix is not SoftmaxAttention._mix:
            return None
        return attention_forward_packed(self, x, cu_seqlens)

    # -- pieces (also used by tests and by mixers that build on this one) -------------------------------------------
    def project(self, x: Tensor, pos: Tensor, positions: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Heads ``q [B,T,H,d]``, ``k, v [B,T,H_kv,d]`` with RoPE applied at positions ``pos[b] + t`` (or at the
        explicit ``positions [B, T]`` when given, e.g. restarting at every sequence of a packed stream)."""
        batch, length, _ = x.shape
        q = self.q_proj(x).view(batch, length, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(batch, length, self.n_kv_heads, self.head_dim)
        v = self.v_proj(x).view(batch, length, self.n_kv_heads, self.head_dim)
        if self.rotary is not None:
            if positions is None:
                q, k = self.rotary(q, pos), self.rotary(k, pos)
            else:
                q, k = self.rotary.rotate_at(q, positions), self.rotary.rotate_at(k, positions)
        return q, k, v

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads}, "
                f"rope={self.rotary is not None}, window={self.window}, impl={self.impl!r}")


__all__ = ["SoftmaxAttention", "check_heads", "check_impl"]
