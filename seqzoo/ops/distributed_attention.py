"""Sequence-parallel (ring) softmax attention across processes, exact, through ``torch.distributed``.

Papers: "A Unified View of Long-Sequence Models towards Modeling Million-Scale Dependencies", Hè and Kabic 2023,
arXiv 2302.06218 (distributed multi-head attention as the building block of a system for million-token
dependencies); the ring schedule of K/V blocks is that of "Ring Attention with Blockwise Transformers for
Near-Infinite Context", Liu, Zaharia and Abbeel 2023, arXiv 2310.01889, and the log-sum-exp merge is the
online softmax of "Self-attention Does Not Need O(n²) Memory", Rabe and Staats 2021, arXiv 2112.05682.

Layout: rank r of a process group of P ranks holds a contiguous shard of the sequence — its queries, keys and
values ``q [B, T_r, H, D]``, ``k [B, T_r, Hkv, D]``, ``v [B, T_r, Hkv, Dv]`` (shards in rank order; lengths may
differ; H a multiple of Hkv) — and gets back the attention output of its own queries.

A *partial* result of a set of queries over one block of keys J is the pair (normalised output, log-sum-exp):

    s_ij = scale · q_i · k_j  (−∞ where masked),    ℓ_i = log Σ_{j∈J} exp(s_ij),    o_i = Σ_{j∈J} exp(s_ij − ℓ_i) v_j

and two partials over disjoint key blocks merge exactly (associative and commutative):

    ℓ = log(exp ℓ_a + exp ℓ_b),    o = exp(ℓ_a − ℓ) o_a + exp(ℓ_b − ℓ) o_b

(a block in which query i sees no key has ℓ_i = −∞ and drops out). The forward pass runs P steps: at step s rank r
computes the partial of its queries over the K/V block of rank ``(r − s) mod P`` (causal mask by *global*
positions; a block wholly in the future is skipped) and merges it into its running result, while passing the
block on to rank ``r + 1`` (send/receive overlap the compute). Each rank thus holds at most two K/V blocks: memory
is O(T/P) per rank, traffic (P − 1)·T/P keys and values per rank.

The backward pass (a custom autograd function) recomputes the probabilities from the saved log-sum-exp,
``p_ij = exp(s_ij − ℓ_i)``, and runs the ring again; the key/value gradients travel with their block and reach
their owner after one more hop:

    dv_j = Σ_i p_ij do_i,   dp_ij = do_i · v_j,   ds_ij = p_ij (dp_ij − do_i · o_i),
    dq_i = scale Σ_j ds_ij k_j,   dk_j = scale Σ_i ds_ij q_i

Without an initialised process group (or with one rank) this is ordinary attention in one process.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from ._common import acc_dtype, check_tensor, fail, resolve_scale
from .attention import _expand_heads

OP = "distributed_softmax_attention"


# -- the math of partial results (single process) -----------------------------------------------------------------
def attention_partial(q: Tensor, k: Tensor, v: Tensor, scale: float,
                      visible: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Partial attention of heads-first ``q [B,H,Tq,D]`` over one key block ``k [B,H,Tk,D]``, ``v [B,H,Tk,Dv]``.

    ``visible``: None or a boolean ``[Tq, Tk]`` mask. Returns ``(o [B,H,Tq,Dv], lse [B,H,Tq])``; rows that see
    no key get ``o = 0`` and ``lse = −∞``.
    """
    scores = (q @ k.transpose(-1, -2)) * scale
    if visible is not None:
        scores = scores.masked_fill(~visible, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    finite = torch.isfinite(lse)
    probs = torch.exp(scores - torch.where(finite, lse, torch.zeros_like(lse))[..., None])
    return probs @ v, lse


def merge_partials(o_a: Tensor, lse_a: Tensor, o_b: Tensor, lse_b: Tensor) -> tuple[Tensor, Tensor]:
    """Merge two partial results over disjoint key blocks (``o [..., Tq, Dv]``, ``lse [..., Tq]``) exactly."""
    lse = torch.logaddexp(lse_a, lse_b)
    finite = torch.isfinite(lse)
    base = torch.where(finite, lse, torch.zeros_like(lse))
    w_a = torch.where(finite, torch.exp(lse_a - base), torch.zeros_like(lse))
    w_b = torch.where(finite, torch.exp(lse_b - base), torch.zeros_like(lse))
    return w_a[..., None] * o_a + w_b[..., None] * o_b, lse


def _visible(q_start: int, q_len: int, k_start: int, k_len: int, causal: bool, device) -> Tensor | None:
    """Causal mask by global positions (None when every key is visible)."""
    if not causal or k_start + k_len - 1 <= q_start:
        return None
    q_pos = torch.arange(q_start, q_start + q_len, device=device)[:, None]
    k_pos = torch.arange(k_start, k_start + k_len, device=device)[None, :]
    return k_pos <= q_pos


# -- the process group --------------------------------------------------------------------------------------------
class _Ring:
    """Rank, size, neighbours and shard offsets of a process group (a single process when none is set up)."""

    def __init__(self, group, local_len: int):
        self.group = group
        self.active = dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1
        if not self.active:
            self.rank, self.size, self.lengths = 0, 1, [local_len]
        else:
            self.rank, self.size = dist.get_rank(group), dist.get_world_size(group)
            comm_device = torch.device("cuda", torch.cuda.current_device()) \
                if dist.get_backend(group) == "nccl" else torch.device("cpu")
            mine = torch.tensor([local_len], dtype=torch.int64, device=comm_device)
            every = [torch.zeros_like(mine) for _ in range(self.size)]
            dist.all_gather(every, mine, group=group)
            self.lengths = [int(t.item()) for t in every]
        self.offsets = [sum(self.lengths[:r]) for r in range(self.size)]

    def peer(self, group_rank: int) -> int:
        return dist.get_global_rank(self.group, group_rank) if self.group is not None else group_rank

    def start_shift(self, flat: Tensor, incoming_numel: int) -> tuple[Tensor, list]:
        """Start sending ``flat`` to the next rank and receiving ``incoming_numel`` elements from the previous one;
        returns ``(receive buffer, requests)`` — call :meth:`finish` before reading the buffer."""
        recv = torch.empty(incoming_numel, dtype=flat.dtype, device=flat.device)
        ops = [dist.P2POp(dist.isend, flat, self.peer((self.rank + 1) % self.size), self.group),
               dist.P2POp(dist.irecv, recv, self.peer((self.rank - 1) % self.size), self.group)]
        return recv, dist.batch_isend_irecv(ops)

    @staticmethod
    def finish(requests: list) -> None:
        for request in requests:
            request.wait()


def _numel(shapes: list[tuple[int, ...]]) -> int:
    total = 0
    for shape in shapes:
        n = 1
        for s in shape:
            n *= s
        total += n
    return total


def _pack(*tensors: Tensor) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _unpack(flat: Tensor, shapes: list[tuple[int, ...]]) -> list[Tensor]:
    out, start = [], 0
    for shape in shapes:
        n = _numel([shape])
        out.append(flat[start:start + n].view(shape))
        start += n
    return out


def _block_shapes(k: Tensor, v: Tensor, length: int) -> list[tuple[int, ...]]:
    B, Hkv, _, D = k.shape
    return [(B, Hkv, length, D), (B, Hkv, length, v.shape[-1])]


class _RingAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale, causal, group):
        # q [B,H,T,D], k [B,Hkv,T,D], v [B,Hkv,T,Dv]: heads-first, accumulation dtype
        ring = _Ring(group, q.shape[2])
        groups = q.shape[1] // k.shape[1]
        q_start, q_len = ring.offsets[ring.rank], q.shape[2]
        o = q.new_zeros(*q.shape[:3], v.shape[-1])
        lse = q.new_full(q.shape[:3], float("-inf"))
        k_cur, v_cur, src = k, v, ring.rank
        for step in range(ring.size):
            if step < ring.size - 1:  # pass the block on while computing with it
                prev = (src - 1) % ring.size
                prev_shapes = _block_shapes(k, v, ring.lengths[prev])
                sending = _pack(k_cur, v_cur)
                received, requests = ring.start_shift(sending, _numel(prev_shapes))
            k_start = ring.offsets[src]
            if not (causal and k_start > q_start + q_len - 1) and k_cur.shape[2] > 0 and q_len > 0:
                visible = _visible(q_start, q_len, k_start, k_cur.shape[2], causal, q.device)
                o_b, lse_b = attention_partial(q, _expand_heads(k_cur, groups), _expand_heads(v_cur, groups),
                                               scale, visible)
                o, lse = merge_partials(o, lse, o_b, lse_b)
            if step < ring.size - 1:
                ring.finish(requests)
                src = prev
                k_cur, v_cur = _unpack(received, prev_shapes)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.scale, ctx.causal, ctx.group = scale, causal, group
        ctx.mark_non_differentiable(lse)
        return o, lse

    @staticmethod
    def backward(ctx, grad_o, grad_lse):
        q, k, v, o, lse = ctx.saved_tensors
        scale, causal = ctx.scale, ctx.causal
        ring = _Ring(ctx.group, q.shape[2])
        groups = q.shape[1] // k.shape[1]
        B, Hkv = k.shape[:2]
        q_start, q_len = ring.offsets[ring.rank], q.shape[2]
        grad_o = grad_o.to(q.dtype)
        delta = (grad_o * o).sum(-1)                                            # do_i · o_i
        lse_safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
        dq = torch.zeros_like(q)
        k_cur, v_cur, dk_cur, dv_cur, src = k, v, torch.zeros_like(k), torch.zeros_like(v), ring.rank
        for step in range(ring.size):
            k_start, k_len = ring.offsets[src], k_cur.shape[2]
            if not (causal and k_start > q_start + q_len - 1) and k_len > 0 and q_len > 0:
                kx, vx = _expand_heads(k_cur, groups), _expand_heads(v_cur, groups)
                scores = (q @ kx.transpose(-1, -2)) * scale
                visible = _visible(q_start, q_len, k_start, k_len, causal, q.device)
                if visible is not None:
                    scores = scores.masked_fill(~visible, float("-inf"))
                probs = torch.exp(scores - lse_safe[..., None])                  # [B, H, Tq, Tk]
                dvx = probs.transpose(-1, -2) @ grad_o
                dscores = probs * (grad_o @ vx.transpose(-1, -2) - delta[..., None])
                dq = dq + (dscores @ kx) * scale
                dkx = (dscores.transpose(-1, -2) @ q) * scale
                dk_cur = dk_cur + dkx.view(B, Hkv, groups, k_len, -1).sum(2)
                dv_cur = dv_cur + dvx.view(B, Hkv, groups, k_len, -1).sum(2)
            if ring.size > 1:  # pass the block and its gradients on; after P hops they are back with the owner
                prev = (src - 1) % ring.size
                shapes = _block_shapes(k, v, ring.lengths[prev])
                last = step == ring.size - 1
                payload = _pack(dk_cur, dv_cur) if last else _pack(k_cur, v_cur, dk_cur, dv_cur)
                wanted = shapes if last else shapes + shapes
                received, requests = ring.start_shift(payload, _numel(wanted))
                ring.finish(requests)
                parts = _unpack(received, wanted)
                src = prev
                if last:
                    dk_cur, dv_cur = parts
                else:
                    k_cur, v_cur, dk_cur, dv_cur = parts
        return dq, dk_cur, dv_cur, None, None, None


def distributed_softmax_attention(q: Tensor, k: Tensor, v: Tensor, *, causal: bool = True,
                                  scale: float | None = None, group=None) -> tuple[Tensor, Tensor]:
    """Exact (causal) softmax attention over a sequence sharded across the ranks of ``group``.

    Args:
        q: ``[B, T_r, H, D]`` this rank's queries; k: ``[B, T_r, Hkv, D]``; v: ``[B, T_r, Hkv, Dv]`` this rank's
            keys and values (the same positions as the queries; rank r's shard follows rank r − 1's).
        causal: mask keys after each query's global position.
        scale: None means ``D ** -0.5``.
        group: a ``torch.distributed`` process group (None: the default group; no group initialised: one
            process).

    Returns:
        ``(o, lse)``: o ``[B, T_r, H, Dv]`` in the dtype of v (differentiable, gradients flow to this rank's q, k
        and v), and the log-sum-exp of each query's scores ``[B, T_r, H]`` (float32/float64, not
        differentiable), with which the result can be merged with attention over further keys.
    """
    check_tensor(OP, "q", q, "B, T, H, D")
    check_tensor(OP, "k", k, "B, T, Hkv, D")
    check_tensor(OP, "v", v, "B, T, Hkv, Dv")
    B, T, H, D = q.shape
    if k.shape[0] != B or k.shape[1] != T or k.shape[3] != D:
        raise fail(OP, f"k must have shape [B, T, Hkv, D] = [{B}, {T}, Hkv, {D}] (this rank's shard), "
                       f"got {list(k.shape)}")
    if k.shape[2] == 0 or H % k.shape[2]:
        raise fail(OP, f"the query heads H = {H} must be a multiple of the key/value heads Hkv = {k.shape[2]}")
    if tuple(v.shape[:3]) != tuple(k.shape[:3]):
        raise fail(OP, f"v must have shape [B, T, Hkv, Dv] with [B, T, Hkv] = {list(k.shape[:3])}, "
                       f"got {list(v.shape)}")
    if not isinstance(causal, bool):
        raise fail(OP, f"causal must be True or False, got {causal!r}")
    scale = resolve_scale(OP, scale, D)
    dtype = acc_dtype(q, k, v)
    qh, kh, vh = (t.transpose(1, 2).to(dtype) for t in (q, k, v))
    o, lse = _RingAttention.apply(qh, kh, vh, scale, causal, group)
    return o.transpose(1, 2).to(v.dtype), lse.transpose(1, 2)


__all__ = ["distributed_softmax_attention", "attention_partial", "merge_partials"]
