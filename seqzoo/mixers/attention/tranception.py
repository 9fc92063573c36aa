"""Tranception attention: head groups with causal depthwise convolutions on Q, K and V, and grouped ALiBi.

Paper: "Tranception: protein fitness prediction with autoregressive transformers and inference-time retrieval",
Notin, Dias, Frazer, Marchena-Hurtado, Gomez, Marks and Gal, ICML 2022, arXiv 2205.13760 (sec. 3, Fig. 2).
ALiBi: "Train Short, Test Long: Attention with Linear Biases Enables Input Length Extrapolation", Press, Smith and
Lewis, 2021, arXiv 2108.12409.

Equations. The ``H`` heads (head width ``d = D / H``) are split into ``G = len(kernel_sizes)`` equal groups of
``H / G`` heads. After the projections ``q = x W_q``, ``k = x W_k``, ``v = x W_v``, group ``g`` with kernel size
``κ_g`` replaces each of its channels ``c`` of q, k and v (separately, each with its own weights) by a causal
depthwise convolution:

    q'_t[h, c] = Σ_{s=0}^{κ_g−1} w_q^g[c, s] · q_{t−κ_g+1+s}[h, c]      (q_τ = 0 for τ < 0; same for k, v)

with one kernel per head-dim channel ``c`` shared by the heads ``h`` of the group (as in the official code)

so position ``t`` reads only positions ``≤ t`` (left padding of ``κ_g − 1`` zeros; a symmetric "same" padding
would let ``t`` read ``t + ⌊κ/2⌋`` and breaks causality). Kernel size 1 means "unchanged" (no parameters), which
is group 0 of the paper (kernels 1, 3, 5, 7). The convolutions have no bias of their own (a bias on the keys
cancels in the softmax; the official code has one; ``bias=True`` puts one on the projections).
Attention per head ``h`` with grouped ALiBi:

    o_i^h = Σ_{j ≤ i} softmax_j( q'_i · k'_j / √d − m_h (i − j) ) v'_j,      y = concat_h(o^h) W_o

ALiBi slopes for ``n`` heads (n a power of two): ``m_h = 2^(−8h/n)``, h = 1 … n (other n: the closest power of two
below, then every other slope of the next power, as in the ALiBi paper). Grouped ALiBi computes the slopes for
``H / G`` heads and repeats them once per group, so every convolution group sees the same set of slopes;
``grouped_alibi=False`` gives standard ALiBi over all ``H`` heads.

The state (so a sequence can be fed in any split and decoded token by token) is

    {"k": [B, L, H, d], "v": [B, L, H, d]    (convolved keys/values of the L tokens seen: the KV cache),
     "tail": [B, κ_max − 1, 3·D]           (the last κ_max − 1 raw projections q|k|v; zeros before the start)}

kept in float32 (float64 for float64 inputs). ALiBi needs only relative positions, recovered from L.
``impl="math"`` is the explicit masked softmax (the reference); ``"sdpa"`` passes the ALiBi bias as a float mask to
:func:`torch.nn.functional.scaled_dot_product_attention`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...core.errors import SeqzooError
from ...core.mixer import Mixer
from ...core.registry import register_mixer
from ...core.state import State, state_dtype
from .softmax import check_heads, check_impl


def alibi_slopes(n_heads: int) -> list[float]:
    """ALiBi head slopes (Press et al. 2021): ``2^(−8h/n)`` for n a power of two, interpolated otherwise."""
    if n_heads <= 0:
        raise SeqzooError(f"ALiBi needs a positive number of heads, got {n_heads}")

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (h + 1) for h in range(n)]

    if math.log2(n_heads).is_integer():
        return power_of_two(n_heads)
    below = 2 ** math.floor(math.log2(n_heads))
    return power_of_two(below) + power_of_two(2 * below)[0::2][: n_heads - below]


def alibi_bias(slopes: Tensor, n_queries: int, n_cached: int) -> Tensor:
    """Additive scores ``[H, Tq, L + Tq]``: ``−m_h (i − j)`` for visible keys, ``−inf`` for future ones.
    Query ``i`` sits at absolute position ``L + i``; key ``j`` at ``j`` (cached keys first)."""
    q_pos = torch.arange(n_queries, device=slopes.device, dtype=slopes.dtype)[:, None] + n_cached
    k_pos = torch.arange(n_cached + n_queries, device=slopes.device, dtype=slopes.dtype)[None, :]
    distance = q_pos - k_pos
    bias = -slopes[:, None, None] * distance
    return bias.masked_fill(distance < 0, float("-inf"))


@register_mixer("tranception", paper="Tranception: protein fitness prediction with autoregressive transformers "
                                     "and inference-time retrieval", arxiv="2205.13760")
class TranceptionAttention(Mixer):
    """Tranception attention (Notin et al. 2022, arXiv 2205.13760): causal softmax attention whose head groups
    apply causal depthwise convolutions (kernels 1, 3, 5, 7) to Q, K and V, with grouped ALiBi positions.

    Options: ``n_heads`` (a multiple of the number of groups); ``kernel_sizes`` (one odd or even positive size per
    head group; 1 = unchanged); ``grouped_alibi`` (False: standard ALiBi over all heads); ``bias`` on the
    projections; ``impl`` in ``IMPLS`` or ``"auto"``. The state is the KV cache plus the convolution tail.
    """

    IMPLS: tuple[str, ...] = ("math", "sdpa")
    constant_state = False  # the KV cache grows with the sequence

    def __init__(self, d_model: int, n_heads: int = 4, kernel_sizes: tuple[int, ...] = (1, 3, 5, 7),
                 grouped_alibi: bool = True, bias: bool = False, impl: str = "auto"):
        super().__init__(d_model)
        self.head_dim = check_heads(d_model, n_heads)
        kernel_sizes = tuple(kernel_sizes) if isinstance(kernel_sizes, (tuple, list)) else (kernel_sizes,)
        if not kernel_sizes or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in kernel_sizes):
            raise SeqzooError(f"kernel_sizes must be a non-empty list of positive ints, got {kernel_sizes!r}")
        if n_heads % len(kernel_sizes):
            raise SeqzooError(f"n_heads={n_heads} must be a multiple of the number of head groups "
                              f"len(kernel_sizes)={len(kernel_sizes)}; valid: n_heads in "
                              f"{[len(kernel_sizes) * i for i in range(1, 5)]}")
        self.n_heads = n_heads
        self.kernel_sizes = kernel_sizes
        self.heads_per_group = n_heads // len(kernel_sizes)
        self.group_width = self.heads_per_group * self.head_dim
        self.max_kernel = max(kernel_sizes)
        self.grouped_alibi = bool(grouped_alibi)
        self.impl = check_impl(impl, self.IMPLS, "tranception")
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.o_proj = nn.Linear(d_model, d_model, bias=bias)
        # one depthwise kernel per (q/k/v, group) with size > 1, shared by the heads of the group as in the official
        # code: weight [d, 1, κ] (nn.Conv1d's layout and initialisation)
        self.conv_weights = nn.ParameterDict()
        for g, size in enumerate(kernel_sizes):
            if size > 1:
                for which in "qkv":
                    conv = nn.Conv1d(self.head_dim, self.head_dim, size, groups=self.head_dim, bias=False)
                    self.conv_weights[f"{which}{g}"] = conv.weight
        slopes = alibi_slopes(self.heads_per_group) * len(kernel_sizes) if self.grouped_alibi \
            else alibi_slopes(n_heads)
        self.register_buffer("slopes", torch.tensor(slopes, dtype=torch.float64), persistent=False)

    # -- contract -----------------------------------------------------------------------------------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None) -> State:
        dtype = state_dtype(dtype if dtype is not None else torch.get_default_dtype())
        empty = torch.zeros(batch_size, 0, self.n_heads, self.head_dim, device=device, dtype=dtype)
        tail = torch.zeros(batch_size, self.max_kernel - 1, 3 * self.d_model, device=device, dtype=dtype)
        return {"k": empty, "v": empty.clone(), "tail": tail}

    def state_size(self, seq_len: int) -> int:
        return 2 * seq_len * self.d_model + (self.max_kernel - 1) * 3 * self.d_model

    def _mix(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        missing = [key for key in ("k", "v", "tail") if key not in state]
        if missing:
            raise SeqzooError(f"tranception state lacks {missing[0]!r}; expected keys: k, v, tail "
                              "(use init_state or the state returned by a previous call)")
        batch, length, _ = x.shape
        acc = state_dtype(x.dtype)
        raw = torch.cat([self.q_proj(x), self.k_proj(x), self.v_proj(x)], dim=-1).to(acc)
        window = torch.cat([state["tail"].to(acc), raw], dim=1)  # [B, κ_max − 1 + T, 3D]
        q, k, v = self.convolve(window, length)
        k_all = torch.cat([state["k"].to(acc), k], dim=1)
        v_all = torch.cat([state["v"].to(acc), v], dim=1)
        o = self.attend(q, k_all, v_all)
        y = self.o_proj(o.reshape(batch, length, self.d_model).to(x.dtype))
        new_tail = window[:, window.shape[1] - (self.max_kernel - 1):]
        return y, {"k": k_all, "v": v_all, "tail": new_tail}

    # -- pieces -------------------------------------------------------------------------------------------------
    def combined_kernel(self, dtype) -> Tensor:
        """All depthwise kernels as one ``[3D, 1, κ_max]`` weight (q, k, v channels in order; shorter kernels
        left-padded with zeros; kernel size 1 is the delta ``[0, …, 0, 1]``)."""
        parts = []
        for which in "qkv":
            for g, size in enumerate(self.kernel_sizes):
                if size == 1:
                    w = torch.zeros(self.group_width, 1, self.max_kernel, dtype=dtype, device=self.slopes.device)
                    w[..., -1] = 1.0
                else:
                    w = nn.functional.pad(self.conv_weights[f"{which}{g}"].to(dtype), (self.max_kernel - size, 0))
                    w = w.repeat(self.heads_per_group, 1, 1)  # the same kernel for every head of the group
                parts.append(w)
        return torch.cat(parts, dim=0)

    def convolve(self, window: Tensor, length: int) -> tuple[Tensor, Tensor, Tensor]:
        """Causal depthwise convolutions of the last ``length`` positions of ``window`` ``[B, κ_max−1+T, 3D]``
        (earlier positions are the context); returns heads ``q, k, v`` ``[B, T, H, d]``."""
        batch = window.shape[0]
        out = F.conv1d(window.transpose(1, 2), self.combined_kernel(window.dtype), groups=3 * self.d_model)
        out = out.transpose(1, 2).reshape(batch, length, 3, self.n_heads, self.head_dim)
        return out[:, :, 0], out[:, :, 1], out[:, :, 2]

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """ALiBi softmax attention of new queries ``[B, T, H, d]`` over all keys ``[B, L+T, H, d]``."""
        length, total = q.shape[1], k.shape[1]
        bias = alibi_bias(self.slopes.to(q.dtype), length, total - length)  # [H, T, L+T]
        qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))
        scale = self.head_dim ** -0.5
        if self.impl == "math":
            scores = (qh @ kh.transpose(-1, -2)) * scale + bias
            o = torch.softmax(scores, dim=-1) @ vh
        else:
            o = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=bias.unsqueeze(0), scale=scale)
        return o.transpose(1, 2)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, n_heads={self.n_heads}, kernel_sizes={self.kernel_sizes}, "
                f"grouped_alibi={self.grouped_alibi}, impl={self.impl!r}")


__all__ = ["TranceptionAttention", "alibi_bias", "alibi_slopes"]
