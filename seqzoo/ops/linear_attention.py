"""Causal linear attention (no feature map, no normaliser): the matrix-state recurrence and its parallel forms.

Paper: "Transformers are RNNs: Fast Autoregressive Transformers with Linear Attention", Katharopoulos, Vyas,
Pappas and Fleuret, 2020, arXiv 2006.16236 (eq. 4-6 and 16-20: causal linear attention as an RNN with a matrix
state). The chunkwise form follows "Gated Linear Attention Transformers with Hardware-Efficient Training",
Yang, Wang, Shen, Panda and Kim, 2023, arXiv 2312.06635 (sec. 2.2, the chunkwise parallel form).

Row-vector convention, with ``q_t, k_t`` of size K, ``v_t`` of size V and the state ``S_t`` of shape ``[K, V]``:

    S_t = S_{t-1} + k_tᵀ v_t                     (S_0 = initial_state, zeros by default)
    o_t = (scale · q_t) S_t

Forms (``impl``):

* ``"recurrent"``: the equations above, one step at a time (the reference).
* ``"parallel"``: O = (Q Kᵀ ⊙ M) V + Q S_0 with M the causal mask (s ≤ t), fully materialised T × T;
  S_T = S_0 + Kᵀ V.
* ``"chunk"`` (default): split T into chunks of C positions. For chunk c with incoming state S_[c]:
  O_c = (Q_c K_cᵀ ⊙ M) V_c + Q_c S_[c] and S_[c+1] = S_[c] + K_cᵀ V_c, so the states entering the chunks are
  S_0 plus the sum of K_c'ᵀ V_c' over the earlier chunks. Cost O(T C (K + V) + T K V).

* ``"triton"``: the chunk form as fused Triton kernels, forward and backward
  (:mod:`seqzoo.ops.triton.chunk_linear`); ``"auto"`` picks it for CUDA tensors when Triton is installed.

Feature maps (elu + 1, ...) and normalisers belong to the mixers that use this op.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.errors import SeqzooError
from ._common import AUTO_RECURRENT_MAX_T, MatrixOpInputs, causal_mask, matmul_add_, no_autocast, pad_time

OP = "linear_attention"


def triton_selected(impl, q, k, v, chunk_size) -> bool:
    """Whether a call goes to the Triton kernels: ``impl="triton"``, or ``"auto"`` on CUDA tensors that they support
    (Triton installed, 16/32-bit floats, K ≤ 128, chunk size 16…128, more than a few steps)."""
    if impl == "triton":
        return True
    if impl != "auto" or not all(isinstance(t, Tensor) and t.is_cuda for t in (q, k, v)):
        return False
    from .triton import triton_usable

    if q.dim() != 4 or q.shape[1] <= AUTO_RECURRENT_MAX_T or not triton_usable(q, k, v):
        return False
    from .triton.chunk_linear import supports

    return supports(q, k, v, chunk_size)


def _recurrent(q: Tensor, k: Tensor, v: Tensor, S: Tensor, scale: float, chunk_size: int):
    outputs = []
    for q_t, k_t, v_t in zip((q * scale).unbind(2), k.unbind(2), v.unbind(2)):   # [B, H, D] per step
        S = S + k_t[..., :, None] * v_t[..., None, :]              # S_t = S_{t-1} + k_tᵀ v_t
        outputs.append((q_t[..., None, :] @ S).squeeze(-2))       # o_t = q_t S_t
    return torch.stack(outputs, dim=2), S


def _parallel(q: Tensor, k: Tensor, v: Tensor, S: Tensor, scale: float, chunk_size: int):
    q = q * scale
    scores = (q @ k.transpose(-1, -2)).masked_fill(~causal_mask(q.shape[2], q.device), 0.0)
    o = scores @ v + q @ S
    return o, S + k.transpose(-1, -2) @ v


def _chunk(q: Tensor, k: Tensor, v: Tensor, S: Tensor, scale: float, chunk_size: int):
    T, C = q.shape[2], chunk_size
    # zero keys / values in the padding leave the state unchanged; the padded outputs are dropped
    q, k, v = (pad_time(x, C, dim=2).unflatten(2, (-1, C)) for x in (q, k, v))      # [B, H, n, C, D]
    kv = k.transpose(-1, -2) @ v                                                    # [B, H, n, K, V]
    states = []                                        # S_[c] = S_0 + Σ_{c' < c} K_c'ᵀ V_c'
    for c in range(kv.shape[2]):
        states.append(S)
        S = S + kv[:, :, c]
    scores = (q @ k.transpose(-1, -2)).tril_()                                       # Q Kᵀ ⊙ M
    o = matmul_add_(scores @ v, q, torch.stack(states, dim=2), scale)               # scale (… + Q S_[c])
    return o.flatten(2, 3)[:, :, :T], S


_IMPLS = {"recurrent": _recurrent, "chunk": _chunk, "parallel": _parallel}


def linear_attention(q: Tensor, k: Tensor, v: Tensor, *, scale: float | None = None,
                     initial_state: Tensor | None = None, impl: str = "auto",
                     chunk_size: int = 64) -> tuple[Tensor, Tensor]:
    """Causal linear attention ``S_t = S_{t-1} + k_tᵀ v_t``, ``o_t = (scale·q_t) S_t``.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``.
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

        return chunk_linear_attention(q, k, v, None, scale=scale, initial_state=initial_state,
                                      chunk_size=chunk_size, op=OP)
    x = MatrixOpInputs(OP, q, k, v, {}, scale=scale, initial_state=initial_state, impl=impl,
                       chunk_size=chunk_size, valid=tuple(_IMPLS) + ("triton",), auto="chunk")
    if x.empty:
        return x.output(x.v), x.state
    with no_autocast(x.q):
        o, state = _IMPLS[x.impl](x.q, x.k, x.v, x.state, x.scale, x.chunk_size)
    return x.output(o), state
