"""Universal RPE-based attention (URPE): softmax attention multiplied, after the softmax, by a learnable Toeplitz
matrix.

Paper: "Your Transformer May Not be as Powerful as You Expect", Luo, Li, Zheng, Liu, Wang and He, NeurIPS 2022,
arXiv 2205.13401 (official code: github.com/lsj2408/URPE).

The paper shows that transformers whose only positional information is a relative positional encoding (RPE)
placed inside the softmax are not universal approximators: the softmax makes every attention matrix row-stochastic,
so for example a sequence of identical tokens is mapped to identical outputs at every layer, whatever the RPE.
URPE attention breaks this by an element-wise product with a learnable Toeplitz matrix *after* the softmax
(paper eq. 8), for head ``h`` with head width ``d``:

    A^h  = softmax(Q^h K^hᵀ / √d + B^h + M)          B^h_ij = b^h_{δ(i, j)}   (RPE bias, optional)
    O^h  = (A^h ⊙ C^h) V^h                          C^h_ij = c^h_{δ(i, j)}   (learnable, per head)
    y    = concat_h(O^h) W_o

with ``M`` the causal mask (``−∞`` for j > i) and the relative distance clipped at ``max_len − 1``:
``δ(i, j) = min(i − j, max_len − 1)`` (distances beyond share the last parameter). ``A ⊙ C`` is no longer
row-stochastic, so URPE can represent position-dependent functions of a constant input.

Choices (checked against the official code, ``fairseq/modules/multihead_attention.py``: the post-softmax table is
multiplied into the probabilities after the softmax and before dropout; ``transformer_sentence_encoder.py``: one
table per head, indexed by relative position buckets, or by exact distances with ``ur_attn_unique``):

* exact distances with clipping, ``max_len`` parameters per head (the code's "unique" option; the default there
  is T5-style log buckets over a bidirectional encoder);
* one table per mixer (layer); the code shares one table across the layers of its encoder;
* ``c`` starts at 1 and ``b`` at 0, so an untrained URPE layer equals plain softmax attention (the code's
  embedding tables start random); both tables are exempt from weight decay (decay would pull ``c`` to 0);
* the RPE inside the softmax is the learnable bias ``b`` (``rpe_bias=True``, as in the paper) and/or RoPE
  (``rope=True``, arXiv 2104.09864). Both are relative, so the layer carries no absolute position.

The state is the KV cache plus a position counter (for RoPE), so any split of a sequence (prefill, then one token
at a time) gives the outputs of one call:

    {"k": [B, L, H, d], "v": [B, L, H, d]   (cached, rotated keys and values, in the compute dtype),
     "pos": int64 [B]}

The math is explicit (the probabilities are needed before they meet ``V``), in float32 (float64 for float64
inputs).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...core.errors import SeqzooError
from ...core.mixer import Mixer, set_optim
from ...core.registry import register_mixer
from ...core.state import State, state_dtype
from .rope import Rotary
from .softmax import check_heads


def toeplitz(table: Tensor, n_queries: int, n_keys: int) -> Tensor:
    """``T[h, i, j] = table[h, min(i' − j, L − 1)]`` for ``table`` ``[H, L]``, the last ``n_queries`` of ``n_keys``
    positions (``i' = n_keys − n_queries + i``) and all keys j: ``[H, n_queries, n_keys]``. Entries with j > i'
    (never visible) hold ``table[h, 0]``. Built from strided windows over one row of values, not a gather."""
    last = table.shape[-1] - 1
    # values along the distances n_keys − 1, n_keys − 2, …, −(n_queries − 1)
    distances = torch.arange(n_keys - 1, -n_queries, -1, device=table.device).clamp(0, last)
    windows = table[:, distances].unfold(-1, n_keys, 1)                  # window w starts at distance n_keys−1−w
    return windows[:, :n_queries].flip(1)                                # row i starts at distance i'


def causal_visible(n_queries: int, n_keys: int, device=None) -> Tensor:
    """Boolean ``[n_queries, n_keys]``: key j is visible from the query at position ``n_keys − n_queries + i``."""
    return torch.ones(n_queries, n_keys, dtype=torch.bool, device=device).tril(n_keys - n_queries)


@register_mixer("urpe", paper="Your Transformer May Not be as Powerful as You Expect", arxiv="2205.13401")
class URPEAttention(Mixer):
    """Universal RPE-based attention (Luo et al. 2022, arXiv 2205.13401): ``(softmax(QKᵀ/√d + B) ⊙ C) V`` with
    learnable per-head Toeplitz matrices ``B`` (inside the softmax) and ``C`` (after it); the state is a KV cache.

    Options: ``n_heads``; ``max_len`` (number of relative distances with their own parameter; longer distances
    share the last one); ``rpe_bias`` (the learnable bias ``B``); ``rope`` and ``rope_base`` (rotary encoding of
    q and k); ``bias`` on the projections.
    """

    IMPLS: tuple[str, ...] = ("math",)
    constant_state = False  # the KV cache grows with the sequence

    def __init__(self, d_model: int, n_heads: int = 4, max_len: int = 512, rpe_bias: bool = True,
                 rope: bool = False, rope_base: float = 10000.0, bias: bool = False):
        super().__init__(d_model)
        self.head_dim = check_heads(d_model, n_heads)
        self.n_heads = n_heads
        if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
            raise SeqzooError(f"max_len must be a positive int (relative distances with their own parameter), "
                              f"got {max_len!r}")
        if rope and self.head_dim % 2:
            raise SeqzooError(f"rope needs an even head width, got d_model/n_heads = {self.head_dim}; "
                              f"choose n_heads so that d_model/n_heads is even, or rope=False")
        self.max_len = max_len
        self.rotary = Rotary(self.head_dim, rope_base) if rope else None
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.o_proj = nn.Linear(d_model, d_model, bias=bias)
        # c^h_δ (post-softmax Toeplitz) and b^h_δ (pre-softmax RPE), δ = 0 … max_len − 1
        self.toeplitz = nn.Parameter(torch.ones(n_heads, max_len))
        self.rpe = nn.Parameter(torch.zeros(n_heads, max_len)) if rpe_bias else None
        for table in (self.toeplitz, self.rpe):    # weight decay would pull C towards 0 (not towards 1)
            if table is not None:
                set_optim(table, weight_decay=0.0)

    # -- contract -----------------------------------------------------------------------------------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None) -> State:
        dtype = dtype if dtype is not None else torch.get_default_dtype()
        empty = torch.zeros(batch_size, 0, self.n_heads, self.head_dim, device=device, dtype=dtype)
        return {"k": empty, "v": empty.clone(), "pos": torch.zeros(batch_size, dtype=torch.int64, device=device)}

    def state_size(self, seq_len: int) -> int:
        return 2 * seq_len * self.d_model + 1

    def _mix(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        missing = [key for key in ("k", "v", "pos") if key not in state]
        if missing:
            raise SeqzooError(f"urpe state lacks {missing[0]!r}; expected keys: k, v, pos "
                              f"(use init_state or the state returned by a previous call)")
        batch, length, _ = x.shape
        q, k, v = self.project(x, state["pos"])
        k = torch.cat([state["k"].to(x.dtype), k], dim=1)
        v = torch.cat([state["v"].to(x.dtype), v], dim=1)
        work = state_dtype(x.dtype)
        mixing = self.mixing(q.to(work), k.to(work))                           # A ⊙ C: [B, H, Tq, L + Tq]
        o = mixing @ v.to(work).transpose(1, 2)                               # [B, H, Tq, d]
        y = self.o_proj(o.transpose(1, 2).reshape(batch, length, self.d_model).to(x.dtype))
        return y, {"k": k, "v": v, "pos": state["pos"] + length}

    # -- pieces (also used by the tests) ------------------------------------------------------------------------
    def project(self, x: Tensor, pos: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``q, k, v`` as ``[B, T, H, d]`` (q and k rotated at positions ``pos[b] + t`` when ``rope``)."""
        batch, length, _ = x.shape
        shape = (batch, length, self.n_heads, self.head_dim)
        q, k, v = self.q_proj(x).view(shape), self.k_proj(x).view(shape), self.v_proj(x).view(shape)
        if self.rotary is not None:
            q, k = self.rotary(q, pos), self.rotary(k, pos)
        return q, k, v

    def toeplitz_matrices(self, n_queries: int, n_keys: int, dtype=None) -> tuple[Tensor, Tensor | None]:
        """``C`` and ``B`` (None without ``rpe_bias``) as ``[H, n_queries, n_keys]``, for the last ``n_queries``
        of ``n_keys`` positions; entries above the diagonal are those of distance 0 (they are masked anyway)."""
        c = toeplitz(self.toeplitz.to(dtype), n_queries, n_keys)
        b = None if self.rpe is None else toeplitz(self.rpe.to(dtype), n_queries, n_keys)
        return c, b

    def mixing(self, q: Tensor, k: Tensor) -> Tensor:
        """The URPE mixing matrix ``softmax(QKᵀ/√d + B + M) ⊙ C`` as ``[B, H, Tq, Tk]`` for queries ``q``
        ``[B, Tq, H, d]`` that are the last ``Tq`` of the ``Tk`` positions of ``k`` ``[B, Tk, H, d]``."""
        n_queries, n_keys = q.shape[1], k.shape[1]
        scores = (q.transpose(1, 2) @ k.transpose(1, 2).transpose(-1, -2)) * self.head_dim ** -0.5
        c, b = self.toeplitz_matrices(n_queries, n_keys, scores.dtype)
        if b is not None:
            scores = scores + b
        scores = scores.masked_fill(~causal_visible(n_queries, n_keys, scores.device), float("-inf"))
        return torch.softmax(scores, dim=-1) * c

    def mixing_matrix(self, x: Tensor) -> Tensor:
        """``A ⊙ C`` of a whole sequence ``x`` (from an empty state): ``[B, H, T, T]``, so that the per-head
        outputs (before ``W_o``) are ``mixing_matrix(x) @ V``."""
        q, k, _ = self.project(x, torch.zeros(x.shape[0], dtype=torch.int64, device=x.device))
        work = state_dtype(x.dtype)
        return self.mixing(q.to(work), k.to(work))

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, n_heads={self.n_heads}, max_len={self.max_len}, "
                f"rpe_bias={self.rpe is not None}, rope={self.rotary is not None}")


__all__ = ["URPEAttention", "toeplitz", "causal_visible"]
