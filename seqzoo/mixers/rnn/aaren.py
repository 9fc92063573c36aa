"""Aaren: attention with a learned, input-independent query, computed as an RNN or by a parallel prefix scan.

Paper: "Attention as an RNN", Leo Feng, Frederick Tung, Hossein Hajimirsadeghi, Mohamed Osama Ahmed, Yoshua Bengio
and Greg Mori, 2024, arXiv 2405.13956 (sec. 3.3, "Aaren: Attention as a Recurrent Neural Network").

Per head ``h`` (``H`` heads of width ``d = d_model / H``), for the tokens x_1 … x_t seen so far:

    k_i = x_i W_K^h,   v_i = x_i W_V^h,   s_i = q_h · k_i / √d        (q_h: a learned vector, the same for every input)
    o_t^h = Σ_{i≤t} exp(s_i) v_i / Σ_{i≤t} exp(s_i)                    (softmax attention of q_h over the prefix)
    y_t = concat_h(o_t^h) W_O

Unlike a Transformer, the query is not one of the tokens: Aaren's query token q is learned by back-propagation,
so every output o_t is the attention of the same query over a longer prefix — the many-to-many output of an RNN
whose state is the triple (m, u, w) of :func:`seqzoo.ops.prefix_attention` (running max of the scores, sum of
exponentials, exponentially weighted sum of the values). Training uses the parallel prefix scan (log depth),
decoding the recurrence (constant memory and O(d) work per token and head).

Stacking (the paper's "Aarens are stacked like Transformer layers": the outputs of one Aaren become the tokens of
the next, with residual connections and feed-forward blocks): that is :class:`seqzoo.models.CausalLM` with
``mixer="aaren"`` (pre-norm residual blocks with an FFN), so no separate model is needed.

There is no positional encoding inside the mixer: with a constant query, o_t depends on the *set* of prefix
tokens; order enters only through which prefix each output sees (and, in a stack, through the earlier layers).

Options: ``n_heads``; ``impl`` in ``IMPLS`` (``"recurrent"``: the reference, one token at a time;
``"parallel"``: the Hillis–Steele scan) or ``"auto"`` (the scan; the recurrence for one token); ``chunk_size``
(None: one scan over the whole call; an int: scan blocks of that length, carrying the state, to bound memory);
``bias`` on the projections.

State: ``{"m": [B, H], "u": [B, H], "w": [B, H, d]}`` in float32 (float64 for float64 inputs); its size,
H·(d + 2) numbers per sequence, does not depend on the number of tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...core.errors import SeqzooError
from ...core.mixer import Mixer
from ...core.registry import register_mixer
from ...core.state import State, state_dtype
from ...ops import prefix_attention
from ...ops.prefix_attention import STATE_KEYS, empty_state
from ..attention.softmax import check_heads, check_impl


@register_mixer("aaren", paper="Attention as an RNN", arxiv="2405.13956")
class Aaren(Mixer):
    """Aaren (Feng et al. 2024, arXiv 2405.13956): multi-head softmax attention of a learned constant query q_h over
    every prefix, ``o_t = Σ_{i≤t} exp(q_h·k_i/√d) v_i / Σ_{i≤t} exp(q_h·k_i/√d)``, by a parallel prefix scan of
    (max, sum, weighted sum) triples or as an RNN with a constant-size state."""

    IMPLS: tuple[str, ...] = ("recurrent", "parallel")
    constant_state = True

    def __init__(self, d_model: int, n_heads: int = 4, impl: str = "auto", chunk_size: int | None = None,
                 bias: bool = False):
        super().__init__(d_model)
        self.head_dim = check_heads(d_model, n_heads)
        self.n_heads = n_heads
        self.impl = check_impl(impl, self.IMPLS, "aaren")
        if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                       or chunk_size <= 0):
            raise SeqzooError(f"chunk_size must be a positive int or None (one scan per call), got {chunk_size!r}")
        self.chunk_size = chunk_size
        self.query = nn.Parameter(torch.randn(n_heads, self.head_dim))     # the learned query token, per head
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.o_proj = nn.Linear(d_model, d_model, bias=bias)

    # -- contract -----------------------------------------------------------------------------------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None) -> State:
        dtype = state_dtype(dtype if dtype is not None else torch.get_default_dtype())
        return empty_state(batch_size, self.n_heads, self.head_dim, dtype=dtype, device=device)

    def state_size(self, seq_len: int) -> int:
        return self.n_heads * (self.head_dim + 2)

    def _mix(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        missing = [key for key in STATE_KEYS if key not in state]
        if missing:
            raise SeqzooError(f"aaren state lacks {missing[0]!r}; expected keys: m, u, w "
                              f"(use init_state or the state returned by a previous call)")
        k, v = self.project(x)
        impl = self.impl if self.impl != "auto" else ("recurrent" if x.shape[1] == 1 else "parallel")
        o, new_state = prefix_attention(self.query, k, v, initial_state=dict(state), impl=impl,
                                        chunk_size=self.chunk_size)
        return self.o_proj(o.reshape(x.shape).to(x.dtype)), new_state

    # -- pieces (used by the property tests) ----------------------------------------------------------------------
    def project(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values ``[B, T, H, d]``."""
        shape = (x.shape[0], x.shape[1], self.n_heads, self.head_dim)
        return self.k_proj(x).view(shape), self.v_proj(x).view(shape)

    def scores(self, x: Tensor) -> Tensor:
        """The attention scores ``s_i = q_h · k_i / √d`` as ``[B, T, H]``."""
        k, _ = self.project(x)
        return torch.einsum("bthk,hk->bth", k, self.query.to(k.dtype)) * self.head_dim ** -0.5

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_heads={self.n_heads}, impl={self.impl!r}, chunk_size={self.chunk_size}"


__all__ = ["Aaren"]
