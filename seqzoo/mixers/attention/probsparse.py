"""ProbSparse self-attention of Informer.

Paper: "Informer: Beyond Efficient Transformer for Long Sequence Time-Series Forecasting", Zhou, Zhang, Peng,
Zhang, Li, Xiong and Zhang, AAAI 2021, arXiv 2012.07436 (section "Efficient Self-attention Mechanism").

Per head, with scores ``s_ij = q_i · k_j / √d`` over ``L_K`` keys:

    sparsity measure      M(q_i, K) = max_j s_ij − (1/L_K) Σ_j s_ij                         (paper eq. 4)
    sampled estimate      M̄_i = max_{j ∈ S_i} s_ij − mean_{j ∈ S_i} s_ij,  |S_i| = U = c·⌈ln L_K⌉ keys
    active queries        A = top-u of M̄ over the block's queries,       u = c·⌈ln L_Q⌉       (c = ``factor``)
    output                o_i = Σ_j softmax_j(s_ij) v_j                    for i ∈ A   (exact attention)
                          o_i = (1/L_K) Σ_j v_j                            for i ∉ A   (encoder: mean of V)
                          o_i = (1/(p_i + 1)) Σ_{j ≤ p_i} v_j              for i ∉ A   (``masked``: running mean)

With ``masked`` (Informer's masked decoder self-attention) the active queries attend only to keys at or before
their own position ``p_i``. Work per head: ``L_Q·U`` sampled scores plus ``u·L_K`` scores for the active rows,
i.e. ``O(L ln L)`` for ``L_Q = L_K = L``, instead of ``L²`` (:attr:`ProbSparseInfo.score_entries` counts them).

Details checked against the reference implementation (``ProbAttention`` in thuml/Autoformer
``layers/SelfAttention_Family.py``, a copy of zhouhaoyi/Informer2020):

* ``U = factor·⌈ln L_K⌉`` and ``u = factor·⌈ln L_Q⌉``, both capped at ``L_K`` / ``L_Q``; here both are also at
  least 1 (the reference gives u = 0, i.e. no active query, for a one-token block);
* one set of sampled key indices ``[L_Q, U]`` (drawn with replacement) is shared by every batch row and head;
* the reference divides the sampled sum by ``L_K`` instead of ``U`` (a scaled sample mean); here the sample
  mean is used, the natural estimate of the paper's ``M``;
* lazy queries of masked attention get ``cumsum(V)`` in the reference, i.e. a running *sum*; here the running
  *mean* (what a uniform causal attention row gives, and the same scale as the active rows).

Contract (why ``causal = False``): which queries are active is decided by a top-u over *all* queries of a call,
and the measure of a query looks at all keys, so an output can change when later inputs change and feeding a
sequence in pieces does not give the one-call result. ProbSparse is therefore registered as a non-causal
mixer (an encoder / one-shot generative-decoder mechanism, as in Informer) even with ``causal=True``, which
only applies the decoder's causal mask inside a call. The state is a key/value cache: a later call's queries
also see the cached keys (positions continue after them), so feeding one token at a time with ``causal=True``
is exact causal softmax attention over the cache (a single query is always active) — a documented decode mode,
not equal to one-call ProbSparse.

Sampling: in training mode the key samples come from the global torch RNG (fresh samples every call, as in the
paper); in eval mode, or always when ``sample="fixed"``, from a generator seeded by ``seed`` so that inference is
deterministic and independent of the batch composition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ...core.errors import SeqzooError
from ...core.mixer import Mixer
from ...core.registry import register_mixer
from ...core.state import State
from ...ops._common import acc_dtype, check_tensor, fail, resolve_impl, resolve_scale
from .softmax import check_heads, check_impl

OP = "probsparse_attention"
_IMPLS = ("dense", "sparse")


def probsparse_counts(len_q: int, len_k: int, factor: float) -> tuple[int, int]:
    """``(U, u)``: keys sampled per query and active queries, ``c·⌈ln L⌉`` capped to ``[1, L]``."""
    def count(length: int) -> int:
        if length <= 0:
            return 0
        return max(1, min(length, int(factor * math.ceil(math.log(length)))))
    return count(len_k), count(len_q)


@dataclass
class ProbSparseInfo:
    """What one call of :func:`probsparse_attention` chose and computed.

    ``active``: ``[B, H, u]`` indices (within the block of queries) of the active queries, by decreasing measure;
    ``measure``: ``[B, H, L_Q]`` sampled sparsity measure M̄; ``sample_index``: ``[L_Q, U]`` sampled key indices;
    ``score_entries``: query–key scores computed per (batch row, head).
    """

    active: Tensor
    measure: Tensor
    sample_index: Tensor
    score_entries: int


def sparsity_measure(q: Tensor, k: Tensor, sample_index: Tensor, scale: float) -> Tensor:
    """Sampled measure ``M̄_i = max_{j∈S_i} s_ij − mean_{j∈S_i} s_ij`` from heads-first ``q [B,H,Lq,D]``,
    ``k [B,H,Lk,D]`` and ``sample_index [Lq, U]``; returns ``[B, H, Lq]``. Only the ``Lq·U`` sampled scores are
    computed."""
    sampled_k = k[:, :, sample_index]                                  # [B, H, Lq, U, D]
    scores = torch.einsum("bhqd,bhqud->bhqu", q, sampled_k) * scale
    return scores.amax(-1) - scores.mean(-1)


def lazy_output(v: Tensor, query_pos: Tensor, masked: bool) -> Tensor:
    """Output of the lazy queries from heads-first ``v [B,H,Lk,Dv]``: ``mean(V)`` for every query, or with
    ``masked`` the running mean over keys ``0 … p_i`` (``query_pos [Lq]``); returns ``[B, H, Lq, Dv]``."""
    if not masked:
        return v.mean(2, keepdim=True).expand(-1, -1, query_pos.numel(), -1)
    running = v.cumsum(2).index_select(2, query_pos)
    return running / (query_pos + 1).to(v.dtype)[:, None]


def _visible(query_pos: Tensor, len_k: int) -> Tensor:
    """``[*query_pos.shape, len_k]``: True where key j is at or before the query's position."""
    return torch.arange(len_k, device=query_pos.device) <= query_pos[..., None]


def draw_sample_index(len_q: int, len_k: int, n_sample: int, generator: torch.Generator | None = None,
                      device=None) -> Tensor:
    """``[len_q, n_sample]`` key indices drawn uniformly with replacement (CPU generator, moved to ``device``)."""
    return torch.randint(len_k, (len_q, n_sample), generator=generator).to(device)


def probsparse_attention(q: Tensor, k: Tensor, v: Tensor, *, factor: float = 5.0, masked: bool = False,
                         scale: float | None = None, sample_index: Tensor | None = None,
                         generator: torch.Generator | None = None,
                         impl: str = "auto") -> tuple[Tensor, ProbSparseInfo]:
    """ProbSparse attention (see the module docstring for the equations).

    Args:
        q: ``[B, L_Q, H, D]``; k: ``[B, L_K, H, D]``; v: ``[B, L_K, H, Dv]`` (``L_K ≥ L_Q`` when ``masked``;
            any ``L_K ≥ 1`` otherwise, e.g. Informer's cross-attention to the distilled encoder). With ``masked`` the
            queries are the last ``L_Q`` positions of the keys (earlier keys are a cache), so query i sits at
            position ``L_K − L_Q + i``.
        factor: the sampling factor c (> 0).
        sample_index: ``[L_Q, U]`` int64 key indices for the measure; drawn with ``generator`` when None.
        impl: ``"sparse"`` (auto; only the sampled and the active scores are computed) or ``"dense"`` (the
            reference: full attention for every query, then active rows kept and lazy rows replaced).

    Returns:
        ``(o, info)``: o ``[B, L_Q, H, Dv]`` in the dtype of v, and a :class:`ProbSparseInfo`.
    """
    check_tensor(OP, "q", q, "B, L_Q, H, D")
    check_tensor(OP, "k", k, "B, L_K, H, D")
    check_tensor(OP, "v", v, "B, L_K, H, Dv")
    B, Lq, H, D = q.shape
    Lk = k.shape[1]
    if k.shape[0] != B or k.shape[2:] != (H, D):
        raise fail(OP, f"k must have shape [B, L_K, H, D] with B, H, D = {B}, {H}, {D}, got {list(k.shape)}")
    if tuple(v.shape[:3]) != tuple(k.shape[:3]):
        raise fail(OP, f"v must have shape [B, L_K, H, Dv] with [B, L_K, H] = {list(k.shape[:3])}, "
                       f"got {list(v.shape)}")
    if masked and Lk < Lq:
        raise fail(OP, f"masked attention needs at least as many keys as queries (L_K ≥ L_Q), got L_K = {Lk}, "
                       f"L_Q = {Lq}")
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
        raise fail(OP, f"factor must be a positive number, got {factor!r}")
    impl = resolve_impl(OP, impl, _IMPLS, "sparse")
    scale = resolve_scale(OP, scale, D)
    n_sample, n_top = probsparse_counts(Lq, Lk, factor)
    if sample_index is None:
        sample_index = draw_sample_index(Lq, Lk, n_sample, generator, q.device)
    elif (sample_index.dtype != torch.int64 or tuple(sample_index.shape) != (Lq, n_sample)
          or (Lq and (sample_index.min() < 0 or sample_index.max() >= Lk))):
        raise fail(OP, f"sample_index must be int64 of shape [L_Q, U] = [{Lq}, {n_sample}] with values in "
                       f"[0, {Lk}), got {sample_index.dtype} {list(sample_index.shape)}")
    dtype = acc_dtype(q, k, v)
    qh, kh, vh = (t.transpose(1, 2).to(dtype) for t in (q, k, v))
    query_pos = torch.arange(Lk - Lq, Lk, device=q.device)
    if Lq == 0:
        empty = torch.zeros(B, H, 0, dtype=torch.int64, device=q.device)
        return v.new_zeros(B, 0, H, v.shape[3]), ProbSparseInfo(empty, qh.new_zeros(B, H, 0), sample_index, 0)

    measure = sparsity_measure(qh, kh, sample_index, scale)             # [B, H, Lq]
    active = measure.topk(n_top, dim=-1).indices                        # [B, H, u]
    lazy = lazy_output(vh, query_pos, masked)                           # [B, H, Lq, Dv]
    if impl == "sparse":
        q_top = qh.gather(2, active[..., None].expand(-1, -1, -1, D))   # [B, H, u, D]
        scores = (q_top @ kh.transpose(-1, -2)) * scale                 # [B, H, u, Lk]
        if masked:
            scores = scores.masked_fill(~_visible(query_pos[active], Lk), float("-inf"))
        o_top = torch.softmax(scores, dim=-1) @ vh                      # [B, H, u, Dv]
        out = lazy.scatter(2, active[..., None].expand(-1, -1, -1, vh.shape[-1]), o_top)
        entries = Lq * n_sample + n_top * Lk
    else:
        scores = (qh @ kh.transpose(-1, -2)) * scale                    # [B, H, Lq, Lk]
        if masked:
            scores = scores.masked_fill(~_visible(query_pos, Lk), float("-inf"))
        full = torch.softmax(scores, dim=-1) @ vh
        is_active = torch.zeros(B, H, Lq, dtype=torch.bool, device=q.device).scatter(2, active, True)
        out = torch.where(is_active[..., None], full, lazy)
        entries = Lq * n_sample + Lq * Lk
    info = ProbSparseInfo(active=active, measure=measure.detach(), sample_index=sample_index,
                          score_entries=entries)
    return out.transpose(1, 2).to(v.dtype).contiguous(), info


@register_mixer("probsparse", paper="Informer: Beyond Efficient Transformer for Long Sequence Time-Series "
                "Forecasting", arxiv="2012.07436")
class ProbSparseAttention(Mixer):
    """Informer's ProbSparse multi-head self-attention (Zhou et al. 2021, arXiv 2012.07436): the top-u queries
    by the sampled sparsity measure ``M̄ = max − mean`` of their scores get exact attention, the others mean(V)
    (running mean with ``causal=True``); ``O(L ln L)``. Non-causal in the contract sense (``causal = False``): the
    choice of active queries depends on the whole block.

    Options: ``n_heads``; ``factor`` (the c of ``U = c⌈ln L_K⌉``, ``u = c⌈ln L_Q⌉``; 5 in the paper);
    ``causal`` (the masked decoder form inside a call); ``sample`` (``"auto"``: random in training, fixed from
    ``seed`` in eval; ``"fixed"``: always from ``seed``; ``"random"``: always the global RNG); ``seed``; ``bias``
    on the query, value and output projections (a key bias would change nothing); ``impl`` in ``IMPLS`` or ``"auto"``.
    """

    IMPLS: tuple[str, ...] = ("dense", "sparse")
    constant_state = False  # the key/value cache grows with the sequence
    causal = False
    SAMPLES = ("auto", "fixed", "random")

    def __init__(self, d_model: int, n_heads: int = 4, factor: float = 5.0, causal: bool = False,
                 sample: str = "auto", seed: int = 0, bias: bool = True, impl: str = "auto"):
        super().__init__(d_model)
        self.head_dim = check_heads(d_model, n_heads)
        self.n_heads = n_heads
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
            raise SeqzooError(f"factor must be a positive number (5 in the paper), got {factor!r}")
        if not isinstance(causal, bool):
            raise SeqzooError(f"causal must be True or False, got {causal!r}")
        if sample not in self.SAMPLES:
            raise SeqzooError(f"unknown sample {sample!r} for probsparse; valid: {', '.join(self.SAMPLES)}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise SeqzooError(f"seed must be an int, got {seed!r}")
        self.factor = float(factor)
        self.masked = causal
        self.sample = sample
        self.seed = seed
        self.impl = check_impl(impl, self.IMPLS, "probsparse")
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        # no key bias: it adds the same q·b to every score of a query, which both the softmax and max − mean ignore
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.o_proj = nn.Linear(d_model, d_model, bias=bias)
        self.last_info: ProbSparseInfo | None = None  # what the latest call chose (for inspection and tests)

    # -- contract -----------------------------------------------------------------------------------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None) -> State:
        dtype = dtype if dtype is not None else torch.get_default_dtype()
        empty = torch.zeros(batch_size, 0, self.n_heads, self.head_dim, device=device, dtype=dtype)
        return {"k": empty, "v": empty.clone()}

    def state_size(self, seq_len: int) -> int:
        return 2 * seq_len * self.n_heads * self.head_dim

    def _mix(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        missing = [key for key in ("k", "v") if key not in state]
        if missing:
            raise SeqzooError(f"probsparse state lacks {missing[0]!r}; expected keys: k, v "
                              f"(use init_state or the state returned by a previous call)")
        batch, length, _ = x.shape
        q, k, v = self.project(x)
        k = torch.cat([state["k"].to(k.dtype), k], dim=1)
        v = torch.cat([state["v"].to(v.dtype), v], dim=1)
        o, self.last_info = probsparse_attention(q, k, v, factor=self.factor, masked=self.masked,
                                                 sample_index=self.sample_index(length, k.shape[1], x.device),
                                                 impl=self.impl)
        return self.o_proj(o.reshape(batch, length, self.d_model).to(x.dtype)), {"k": k, "v": v}

    # -- pieces -------------------------------------------------------------------------------------------------
    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Heads ``q, k, v: [B, T, H, d]``."""
        shape = (*x.shape[:2], self.n_heads, self.head_dim)
        return self.q_proj(x).view(shape), self.k_proj(x).view(shape), self.v_proj(x).view(shape)

    def sample_index(self, len_q: int, len_k: int, device=None) -> Tensor:
        """The ``[len_q, U]`` key samples of the measure for a call (see ``sample`` in the class docstring)."""
        n_sample, _ = probsparse_counts(len_q, len_k, self.factor)
        fixed = self.sample == "fixed" or (self.sample == "auto" and not self.training)
        generator = torch.Generator().manual_seed(self.seed) if fixed else None
        return draw_sample_index(len_q, len_k, n_sample, generator, device)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, n_heads={self.n_heads}, factor={self.factor:g}, causal={self.masked}, "
                f"sample={self.sample!r}, seed={self.seed}, impl={self.impl!r}")


__all__ = ["ProbSparseAttention", "ProbSparseInfo", "probsparse_attention", "probsparse_counts",
           "sparsity_measure", "lazy_output", "draw_sample_index"]
