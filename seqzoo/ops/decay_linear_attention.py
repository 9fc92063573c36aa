"""Linear attention with a data-dependent scalar decay per head and step (retention / gated linear attention).

Papers: "Retentive Network: A Successor to Transformer for Large Language Models", Sun et al., 2023,
arXiv 2307.08621 (eq. 1-8: recurrent, parallel and chunkwise retention, constant decay γ = exp(g) per head);
"Gated Linear Attention Transformers with Hardware-Efficient Training", Yang et al., 2023, arXiv 2312.06635
(sec. 3-4: data-dependent gates and the chunkwise form computed with cumulative log-gates);
"Transformers are SSMs" (Mamba-2), Dao and Gu, 2024, arXiv 2405.21060 (sec. 6: the stable "segsum" of
log-decays under the causal mask).

Row-vector convention, ``g_t ≤ 0`` the log-decay of step t (per batch and head), state ``S_t: [K, V]``:

    S_t = exp(g_t) S_{t-1} + k_tᵀ v_t
    o_t = (scale · q_t) S_t

With b_t = g_1 + ... + g_t (cumulative log-decay), unrolling gives
``o_t = exp(b_t) q_t S_0 + Σ_{s≤t} exp(b_t − b_s) (q_t · k_s) v_s``.

Forms (``impl``):

* ``"recurrent"``: the recurrence, one step at a time (the reference).
* ``"parallel"``: the unrolled sum as a T × T matrix D[t, s] = exp(Σ_{s<r≤t} g_r) for s ≤ t, 0 otherwise; the
  exponents are segment sums formed under the mask (masked cumulative sum, masked entries set to −inf before the
  exp), so no exp of a positive number is ever taken.
* ``"chunk"`` (default): within a chunk with local cumulative sums b_t (restarting at 0),
  O = ((Q Kᵀ) ⊙ D) V + (exp(b) ⊙ Q) S_in with D[t, s] = exp(b_t − b_s) masked (−inf) before the exp;
  S_out = exp(b_C) S_in + (exp(b_C − b) ⊙ K)ᵀ V. Every exponent is ≤ 0, so the form is stable for strongly
  negative g (e.g. −20 per step); the chunk states are carried by a loop over chunks.

* ``"triton"``: the chunk form as fused Triton kernels, forward and backward
  (:mod:`seqzoo.ops.triton.chunk_linear`); ``"auto"`` picks it for CUDA tensors when Triton is installed.

``g`` must be ≤ 0 (a decay, not a growth); this is the caller's responsibility and is not checked on the hot path.
With g = 0 the op equals :func:`seqzoo.ops.linear_attention`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.errors import SeqzooError
from ._common import MatrixOpInputs, causal_mask, matmul_add_, pad_time, no_autocast
from .linear_attention import triton_selected

OP = "decay_linear_attention"


def _recurrent(q: Tensor, k: Tensor, v: Tensor, g: Tensor, S: Tensor, scale: float, chunk_size: int):
    outputs = []
    for q_t, k_t, v_t, g_t in zip((q * scale).unbind(2), k.unbind(2), v.unbind(2), g.unbind(2)):
        decay = torch.exp(g_t)[..., None, None]
        S = decay * S + k_t[..., :, None] * v_t[..., None, :]     # S_t = exp(g_t) S_{t-1} + k_tᵀ v_t
        outputs.append((q_t[..., None, :] @ S).squeeze(-2))       # o_t = q_t S_t
    return torch.stack(outputs, dim=2), S


def _segment_decay(g: Tensor) -> Tensor:
    """``D[..., t, s] = exp(g_{s+1} + ... + g_t)`` for s ≤ t and 0 above the diagonal, from g ``[..., T]``.

    The sums are taken only over the terms that belong to each entry (no difference of two long cumulative sums),
    and the masked entries are −inf before the exp.
    """
    T = g.shape[-1]
    strict = causal_mask(T, g.device, strict=True)                     # r > s: g_r belongs to column s
    terms = g.unsqueeze(-1).expand(*g.shape, T).masked_fill(~strict, 0.0)  # [..., r, s]
    segsum = terms.cumsum(dim=-2)                                      # [..., t, s] = Σ_{s<r≤t} g_r
    return segsum.masked_fill(~causal_mask(T, g.device), float("-inf")).exp()


def _parallel(q: Tensor, k: Tensor, v: Tensor, g: Tensor, S: Tensor, scale: float, chunk_size: int):
    q = q * scale
    decay = _segment_decay(g)                                           # [B, H, T, T]
    b = g.cumsum(dim=-1)
    o = ((q @ k.transpose(-1, -2)) * decay) @ v + (q * b.exp().unsqueeze(-1)) @ S
    to_end = decay[..., -1, :].unsqueeze(-1)                            # exp(b_T − b_s)
    return o, b[..., -1, None, None].exp() * S + (k * to_end).transpose(-1, -2) @ v


def _chunk(q: Tensor, k: Tensor, v: Tensor, g: Tensor, S: Tensor, scale: float, chunk_size: int):
    T, C = q.shape[2], chunk_size
    # padding: zero keys/values and g = 0 (no decay) leave the final state unchanged
    q, k, v = (pad_time(x, C, dim=2).unflatten(2, (-1, C)) for x in (q, k, v))   # [B, H, n, C, D]
    b = pad_time(g, C, dim=2).unflatten(2, (-1, C)).cumsum(dim=-1)              # [B, H, n, C], ≤ 0
    mask = causal_mask(C, q.device)
    decay = (b.unsqueeze(-1) - b.unsqueeze(-2)).masked_fill_(~mask, float("-inf")).exp_()  # exp(b_t − b_s)
    q_in = q * b.exp().unsqueeze(-1)                                            # reads the incoming state
    kv = (k * (b[..., -1:] - b).exp().unsqueeze(-1)).transpose(-1, -2) @ v      # [B, H, n, K, V]
    chunk_decay = b[..., -1].exp()                                              # [B, H, n]
    states = []                                                                # state entering each chunk
    for c in range(kv.shape[2]):
        states.append(S)
        S = chunk_decay[:, :, c, None, None] * S + kv[:, :, c]
    scores = (q @ k.transpose(-1, -2)).mul_(decay)                              # within-chunk part
    o = matmul_add_(scores @ v, q_in, torch.stack(states, dim=2), scale)      # scale (… + Q_in S_[c])
    return o.flatten(2, 3)[:, :, :T], S


_IMPLS = {"recurrent": _recurrent, "chunk": _chunk, "parallel": _parallel}


def decay_linear_attention(q: Tensor, k: Tensor, v: Tensor, g: Tensor, *, scale: float | None = None,
                           initial_state: Tensor | None = None, impl: str = "auto",
                           chunk_size: int = 64) -> tuple[Tensor, Tensor]:
    """Linear attention with log-decay g: ``S_t = exp(g_t) S_{t-1} + k_tᵀ v_t``, ``o_t = (scale·q_t) S_t``.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``; g: ``[B, T, H]`` log-decays, which must be ≤ 0 (not checked).
        scale: multiplies q; None means ``K ** -0.5``.
        initial_state: ``[B, H, K, V]`` or None (zeros).
        impl: "auto" ("triton" for CUDA tensors when Triton is installed, else "chunk"; "recurrent" for T ≤ 4,
            i.e. decoding), "recurrent", "chunk", "parallel" or "triton".
        chunk_size: chunk length of the "chunk" form; T need not be a multiple of it.

    Returns:
        ``(o, final_state)``: o ``[B, T, H, V]`` in the dtype of v; final_state ``[B, H, K, V]`` in float32
        (float64 for float64 inputs).
    """
    if triton_selected(impl, q, k, v, chunk_size):
        from .triton import HAS_TRITON

        if not HAS_TRITON:
            raise SeqzooError(f"{OP}: impl='triton' needs the triton package, which is not installed")
        from .triton.chunk_linear import chunk_linear_attention

        return chunk_linear_attention(q, k, v, g, scale=scale, initial_state=initial_state,
                                      chunk_size=chunk_size, op=OP)
    x = MatrixOpInputs(OP, q, k, v, {"g": g}, scale=scale, initial_state=initial_state, impl=impl,
                       chunk_size=chunk_size, valid=tuple(_IMPLS) + ("triton",), auto="chunk")
    if x.empty:
        return x.output(x.v), x.state
    with no_autocast(x.q):
        o, state = _IMPLS[x.impl](x.q, x.k, x.v, x.gates[0], x.state, x.scale, x.chunk_size)
    return x.output(o), state
