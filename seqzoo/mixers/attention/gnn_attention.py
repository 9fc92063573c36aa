"""Causal multi-headed graph attention: softmax attention whose attention matrix is reused as the weighted adjacency
of a small graph convolutional network (GCN) over each head's values.

Paper: "Generative Pretrained Autoregressive Transformer Graph Neural Network applied to the Analysis and Discovery
of Novel Proteins", M. J. Buehler, J. Appl. Phys. 2023, arXiv 2305.04934 (the "MaterioFormer"). Checked against
the official code (lamm-mit/MateriomicTransformer, ``AttentionQKV`` with ``GNN_layers > 0`` and
``GraphConvLayers``/``GCNLayer``); the notation below is ours.

For query head ``h`` (head width ``d``, keys/values of the key/value head it reads, as in
:class:`~seqzoo.mixers.attention.softmax.SoftmaxAttention`, RoPE on q and k):

    A      = softmax(q kᵀ / √d + M)                     (M: 0 where key position ≤ query position, −∞ otherwise)
    Â      = process(A)                                 (optional: + I then clamp to [0, 1]; entries < θ_min → 0;
                                                         entries > θ_max → 1)
    N      = diag(Â 1)⁻¹ Â                              (row normalisation: each node averages its in-neighbours;
                                                         N = A when Â = A, whose rows already sum to one)
    H⁰     = V
    Hˡ     = GELU( N (Hˡ⁻¹ Wₗ + bₗ) + s · Hˡ⁻¹ ),   l = 1 … L     (s = 1 with ``gnn_skip``, else 0)
    o      = A V + Hᴸ W_out + b_out                     (the usual head output plus the GCN read-out)
    y      = concat_h(o_h) W_o

``Wₗ, bₗ, W_out, b_out`` (``d × d``) are shared by all heads, as in the official code. With ``gnn_layers = 0`` the
GCN is absent and the mixer *is* causal softmax attention (same parameters, same arithmetic, bit for bit).

Causality: A and Â are lower-triangular (Â's identity and thresholds act entry-wise, so they keep zeros above the
diagonal: a threshold ``θ_max < 1`` raises only entries already > θ_max > 0), hence row ``i`` of every Hˡ depends
on rows ≤ i of Hˡ⁻¹ only. A symmetrised adjacency ``(A + Aᵀ)/2`` would leak the future (a test shows it).

Incremental decoding (the mixer contract): the rows of Hˡ of earlier tokens never change when tokens are appended,
so the state keeps, besides the KV cache and the position counter, the GCN messages ``Pˡ = Hˡ W_{l+1} + b_{l+1}``
(l = 0 … L−1) of every earlier token and query head:

    {"k": [B, T, H_kv, d], "v": [B, T, H_kv, d], "pos": int64 [B],  "gnn": [B, T, L, H, d]   (only when L > 0)}

Precision: A, the GCN and its read-out are computed in float32 (float64 for float64 inputs) whatever the input
dtype, also under autocast (the trainer's bf16 autocast on a GPU would otherwise round the scores, the adjacency and
the GCN messages to bf16 in training while generation runs them in float32); only the projections follow autocast.

Deliberate differences from the official code: RoPE instead of additive sinusoidal positions (the CausalLM has
no positional embedding); no dropout inside the GCN; a row of Â whose entries were all thresholded away gives a
zero message (instead of a division by zero); no null key/value (the README's configuration has none).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...core.errors import SeqzooError
from ...core.registry import register_mixer
from ...core.state import State
from ...ops import softmax_attention
from .softmax import SoftmaxAttention


def process_adjacency(attn: Tensor, diagonal: Tensor | None, *, add_identity: bool, clamp_after_identity: bool,
                      threshold_min: float, threshold_max: float) -> Tensor:
    """Â from attention weights ``attn [..., Tq, Tk]``; ``diagonal`` is a boolean ``[Tq, Tk]`` marking each query's
    own key (needed for ``add_identity``). Entry-wise only, so zeros above the diagonal stay zeros."""
    adj = attn
    if add_identity:
        adj = adj + diagonal.to(adj.dtype)
        if clamp_after_identity:
            adj = adj.clamp(0.0, 1.0)
    if threshold_min > 0:
        adj = adj.masked_fill(adj < threshold_min, 0.0)
    if threshold_max < 1:
        adj = adj.masked_fill(adj > threshold_max, 1.0)
    return adj


def row_normalise(adj: Tensor) -> Tensor:
    """``diag(Â 1)⁻¹ Â``; an all-zero row stays zero."""
    total = adj.sum(-1, keepdim=True)
    return adj / torch.where(total > 0, total, torch.ones_like(total))


def _full_precision(device: torch.device):
    """Switch autocast off for the explicit attention weights and the GCN: under the trainer's bf16 autocast a
    matmul would otherwise round the scores q·k/√d (before the softmax), the adjacency and every GCN message to
    bf16, although these are meant to be computed in float32 (float64 for float64 inputs), as generation computes
    them."""
    return torch.autocast(device_type=device.type, enabled=False)


def _linear(layer: nn.Linear, h: Tensor) -> Tensor:
    """``layer(h)`` computed in ``h``'s dtype (the GCN runs in float32 for half-precision inputs)."""
    bias = None if layer.bias is None else layer.bias.to(h.dtype)
    return F.linear(h, layer.weight.to(h.dtype), bias)


def graph_conv(norm_adj: Tensor, h0_all: Tensor, layers: nn.ModuleList, *, skip: bool,
               cached_messages: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Run the GCN for the ``Tq`` newest nodes.

    Args:
        norm_adj: ``[B, H, Tq, Tk]`` row-normalised adjacency (the last ``Tq`` of the ``Tk`` nodes are the new ones).
        h0_all: ``[B, H, Tk, d]`` node features H⁰ (the values) of all ``Tk`` nodes.
        layers: the ``L`` linear maps ``Wₗ, bₗ``.
        cached_messages: ``[B, H, Tk − Tq, L, d]`` messages ``Pˡ`` of the earlier nodes (None when there are none).

    Returns:
        ``(Hᴸ of the new nodes [B, H, Tq, d], messages of the new nodes [B, H, Tq, L, d])``.
    """
    tq, tk = norm_adj.shape[-2], norm_adj.shape[-1]
    h_new = h0_all[..., tk - tq:, :]
    new_messages = []
    with _full_precision(norm_adj.device):
        for layer_index, linear in enumerate(layers):
            msg_new = _linear(linear, h_new)
            new_messages.append(msg_new)
            if cached_messages is not None and cached_messages.shape[2] > 0:
                msg_all = torch.cat([cached_messages[..., layer_index, :], msg_new], dim=-2)
            else:
                msg_all = msg_new
            agg = norm_adj @ msg_all
            h_new = F.gelu(agg + h_new) if skip else F.gelu(agg)
    return h_new, torch.stack(new_messages, dim=-2)


@register_mixer("gpt_gnn_attention", paper="Generative Pretrained Autoregressive Transformer Graph Neural Network "
                                           "applied to the Analysis and Discovery of Novel Proteins",
                arxiv="2305.04934")
class GraphAttention(SoftmaxAttention):
    """Causal attention whose attention matrix is the adjacency of a per-head GCN over the values (Buehler 2023,
    arXiv 2305.04934); ``gnn_layers = 0`` is exactly causal softmax attention.

    Options: ``n_heads``, ``n_kv_heads``, ``rope``, ``rope_base``, ``bias`` (as ``attention``); ``gnn_layers`` (L ≥ 0;
    the paper's README uses 3); ``gnn_skip`` (Hˡ⁻¹ added inside the GELU); ``gnn_add_identity`` (+I on the
    adjacency) and ``gnn_clamp_after_identity``; ``gnn_threshold_min`` / ``gnn_threshold_max`` (entries below /
    above set to 0 / 1; 0 and 1 switch them off); ``impl``: ``"math"`` (explicit attention matrix, the reference) or
    ``"sdpa"`` (PyTorch's fused attention for A·V; the GCN still forms A explicitly).
    """

    IMPLS: tuple[str, ...] = ("math", "sdpa")
    constant_state = False

    def __init__(self, d_model: int, n_heads: int = 4, n_kv_heads: int | None = None, rope: bool = True,
                 rope_base: float = 10000.0, bias: bool = False, gnn_layers: int = 3, gnn_skip: bool = True,
                 gnn_add_identity: bool = False, gnn_clamp_after_identity: bool = True,
                 gnn_threshold_min: float = 0.0, gnn_threshold_max: float = 1.0, impl: str = "auto"):
        super().__init__(d_model, n_heads=n_heads, n_kv_heads=n_kv_heads, rope=rope, rope_base=rope_base,
                         window=None, bias=bias, impl=impl)
        if isinstance(gnn_layers, bool) or not isinstance(gnn_layers, int) or gnn_layers < 0:
            raise SeqzooError(f"gnn_layers must be an int >= 0 (0 = plain causal attention), got {gnn_layers!r}")
        for name, value in (("gnn_threshold_min", gnn_threshold_min), ("gnn_threshold_max", gnn_threshold_max)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise SeqzooError(f"{name} must be a number in [0, 1], got {value!r}")
        if gnn_threshold_min >= gnn_threshold_max:
            raise SeqzooError(f"gnn_threshold_min ({gnn_threshold_min}) must be below gnn_threshold_max "
                              f"({gnn_threshold_max})")
        self.gnn_layers = gnn_layers
        self.gnn_skip = bool(gnn_skip)
        self.gnn_add_identity = bool(gnn_add_identity)
        self.gnn_clamp_after_identity = bool(gnn_clamp_after_identity)
        self.gnn_threshold_min = float(gnn_threshold_min)
        self.gnn_threshold_max = float(gnn_threshold_max)
        d = self.head_dim
        self.gnn = nn.ModuleList(nn.Linear(d, d) for _ in range(gnn_layers))
        self.gnn_out = nn.Linear(d, d) if gnn_layers > 0 else None

    # -- contract -----------------------------------------------------------------------------------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None) -> State:
        state = super().init_state(batch_size, device=device, dtype=dtype)
        if self.gnn_layers > 0:
            dtype = dtype if dtype is not None else torch.get_default_dtype()
            state["gnn"] = torch.zeros(batch_size, 0, self.gnn_layers, self.n_heads, self.head_dim, device=device,
                                       dtype=dtype)
        return state

    def state_size(self, seq_len: int) -> int:
        return 2 * seq_len * self.n_kv_heads * self.head_dim + 1 + seq_len * self.gnn_layers * self.n_heads * \
            self.head_dim

    def _mix(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        if self.gnn_layers == 0:
            return super()._mix(x, state)
        if "gnn" not in state:
            raise SeqzooError("gpt_gnn_attention state lacks 'gnn'; expected keys: k, v, pos, gnn "
                              "(use init_state or the state returned by a previous call)")
        batch, length, _ = x.shape
        q, k, v, cache = self.prepare(x, state)
        attn, values = self.attention_weights(q, k, v, cache)  # A [B, H, Tq, Tk]; values [B, H, Tk, d]
        if self.impl == "sdpa":
            o, new_cache = softmax_attention(q, k, v, cache=cache, impl="sdpa")
            o = o.transpose(1, 2).to(attn.dtype)  # [B, H, Tq, d]
        else:
            with _full_precision(attn.device):
                o = attn @ values
            new_cache = {"k": k, "v": v} if cache is None else \
                {"k": torch.cat([cache["k"], k], dim=1), "v": torch.cat([cache["v"], v], dim=1)}
        adj = self.adjacency(attn)
        # the rows of a softmax already sum to one: normalise only an adjacency that was processed
        norm_adj = attn if adj is attn else row_normalise(adj)
        cached = state["gnn"].permute(0, 3, 1, 2, 4).to(attn.dtype) if state["gnn"].shape[1] > 0 else None
        h_last, messages = graph_conv(norm_adj, values, self.gnn, skip=self.gnn_skip,
                                      cached_messages=cached)
        with _full_precision(attn.device):
            o = o + _linear(self.gnn_out, h_last)
        y = self.o_proj(o.transpose(1, 2).reshape(batch, length, self.d_model).to(x.dtype))
        new_gnn = torch.cat([state["gnn"], messages.permute(0, 2, 3, 1, 4).to(state["gnn"].dtype)], dim=1)
        return y, {"k": new_cache["k"], "v": new_cache["v"], "pos": state["pos"] + length, "gnn": new_gnn}

    # -- pieces (tests override ``adjacency`` to build stubs) -------------------------------------------------------
    def attention_weights(self, q: Tensor, k: Tensor, v: Tensor, cache: dict | None) -> tuple[Tensor, Tensor]:
        """Explicit causal softmax weights ``A [B, H, Tq, Tk]`` over cached + new keys and the values expanded to
        query heads ``[B, H, Tk, d]``, in float32 (float64 for float64 inputs)."""
        dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
        if cache is not None:
            k, v = torch.cat([cache["k"], k], dim=1), torch.cat([cache["v"], v], dim=1)
        groups = self.n_heads // self.n_kv_heads
        with _full_precision(q.device):  # under autocast the matmul would round the scores to bf16
            qh = q.transpose(1, 2).to(dtype) * (1.0 / math.sqrt(self.head_dim))
            kh = k.transpose(1, 2).to(dtype).repeat_interleave(groups, dim=1)
            vh = v.transpose(1, 2).to(dtype).repeat_interleave(groups, dim=1)
            tq, tk = q.shape[1], k.shape[1]
            scores = qh @ kh.transpose(-1, -2)
            visible = self.visible(tq, tk, q.device)
            attn = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)
        return attn, vh

    @staticmethod
    def visible(tq: int, tk: int, device) -> Tensor:
        """Boolean ``[Tq, Tk]``: query i (absolute position Tk − Tq + i) sees key j iff j ≤ its position."""
        query_pos = torch.arange(tk - tq, tk, device=device)[:, None]
        return torch.arange(tk, device=device)[None, :] <= query_pos

    def adjacency(self, attn: Tensor) -> Tensor:
        """Â from the attention weights ``[B, H, Tq, Tk]`` (see :func:`process_adjacency`); ``attn`` itself when no
        processing is switched on."""
        if not (self.gnn_add_identity or self.gnn_threshold_min > 0 or self.gnn_threshold_max < 1):
            return attn
        tq, tk = attn.shape[-2], attn.shape[-1]
        diagonal = None
        if self.gnn_add_identity:
            diagonal = torch.arange(tk, device=attn.device)[None, :] == \
                torch.arange(tk - tq, tk, device=attn.device)[:, None]
        return process_adjacency(attn, diagonal, add_identity=self.gnn_add_identity,
                                 clamp_after_identity=self.gnn_clamp_after_identity,
                                 threshold_min=self.gnn_threshold_min, threshold_max=self.gnn_threshold_max)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads}, "
                f"rope={self.rotary is not None}, gnn_layers={self.gnn_layers}, skip={self.gnn_skip}, "
                f"add_identity={self.gnn_add_identity}, impl={self.impl!r}")


__all__ = ["GraphAttention", "graph_conv", "process_adjacency", "row_normalise"]
