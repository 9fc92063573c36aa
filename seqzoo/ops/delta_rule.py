"""The delta rule (DeltaNet): linear attention whose state is corrected toward each new value, not just added to.

Papers: "Linear Transformers Are Secretly Fast Weight Programmers", Schlag, Irie and Schmidhuber, 2021,
arXiv 2102.11174 (sec. 4.2, the delta update rule); "Parallelizing Linear Transformers with the Delta Rule over
Sequence Length", Yang, Wang, Zhang, Shen and Kim, 2024, arXiv 2406.06484 (sec. 3: the chunkwise form with the
WY / UT representation of products of Householder-like matrices).

Row-vector convention, state ``S_t: [K, V]``, ``β_t`` the writing strength of step t (per batch and head):

    S_t = S_{t-1} + β_t k_tᵀ (v_t − k_t S_{t-1})  =  (I − β_t k_tᵀ k_t) S_{t-1} + β_t k_tᵀ v_t
    o_t = (scale · q_t) S_t

The caller normalises k: the recurrence is stable (each factor I − β k_tᵀ k_t has norm ≤ 1) for ‖k_t‖ = 1 and
β_t ∈ [0, 1]; neither is checked here. With β = 1 and a unit key, writing (k, v1) then (k, v2) leaves v2 stored
under k (the old value is overwritten), where plain linear attention would return v1 + v2.

Forms (``impl``):

* ``"recurrent"``: the recurrence, one step at a time (the reference).
* ``"chunk"`` (default): within a chunk of C steps with incoming state S, the pseudo-values
  ũ_t = β_t (v_t − k_t S_{t-1}) satisfy ũ_t = β_t (v_t − k_t S) − β_t Σ_{s<t} (k_t · k_s) ũ_s, i.e.

      (I + tril(diag(β) K Kᵀ, −1)) Ũ = diag(β) (V − K S)
      T = (I + tril(diag(β) K Kᵀ, −1))⁻¹ diag(β),   W = T K,   U = T V,   Ũ = U − W S

  (one unit-lower-triangular solve per chunk, batched over all chunks, in float32 / float64), then

      O = Q S + (Q Kᵀ ⊙ M) Ũ        (M: causal mask including the diagonal)
      S ← S + Kᵀ Ũ

  sequentially over chunks.
* ``"parallel"``: the same UT form with the whole sequence as one chunk (T × T, O(T³) solve); useful as a
  second reference and for short sequences.
* ``"triton"``: the chunk form as Triton kernels, forward and backward (:mod:`seqzoo.ops.triton.delta_rule`;
  chunks of 64 whatever ``chunk_size`` says; float32, bfloat16 or float16 inputs, K ≤ 128). ``"auto"`` picks it
  for CUDA tensors when Triton is installed; on CPU ``"auto"`` stays ``"chunk"``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._common import AUTO_RECURRENT_MAX_T, MatrixOpInputs, check_chunk_size, check_qkv, check_shape, fail, \
    matmul_add_, no_autocast, pad_time, resolve_scale, start_state
from .triton import triton_usable

OP = "delta_rule"


def _recurrent(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, S: Tensor, scale: float, chunk_size: int):
    outputs = []
    for q_t, k_t, v_t, beta_t in zip((q * scale).unbind(2), k.unbind(2), v.unbind(2), beta.unbind(2)):
        error = v_t - (k_t[..., None, :] @ S).squeeze(-2)                  # v_t − k_t S_{t-1}
        S = S + k_t[..., :, None] * (beta_t[..., None] * error)[..., None, :]   # S_t = S_{t-1} + β_t k_tᵀ (…)
        outputs.append((q_t[..., None, :] @ S).squeeze(-2))               # o_t = q_t S_t
    return torch.stack(outputs, dim=2), S


def _unit_lower_solve(lower: Tensor, rhs: Tensor) -> Tensor:
    """X = (I + lower)⁻¹ rhs for strictly lower-triangular ``lower``.

    Solved in its transposed form Xᵀ (I + lower)ᵀ = rhsᵀ, which LAPACK answers about twice as fast on CPU and
    which returns X row-major (the direct form returns it column-major, slowing every later use). Always solved
    in float32 or wider, outside autocast (CUDA has no bfloat16 triangular solve).
    """
    dtype = torch.promote_types(torch.promote_types(lower.dtype, rhs.dtype), torch.float32)
    with torch.autocast(lower.device.type, enabled=False):  # no bf16 triangular solve exists (and none is wanted)
        return torch.linalg.solve_triangular(lower.to(dtype).mT, rhs.to(dtype).mT, upper=True, left=False,
                                             unitriangular=True).mT


def _chunk(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, S: Tensor, scale: float, chunk_size: int):
    (B, H, T), C = q.shape[:3], chunk_size
    # padding with beta = 0 and zero keys/values is a no-op step: the final state is unchanged.
    # Batch and heads are merged so that every per-chunk product below is one batched BLAS call.
    q, k, v = (pad_time(x, C, dim=2).flatten(0, 1).unflatten(1, (-1, C)) for x in (q, k, v))   # [BH, n, C, D]
    beta = pad_time(beta, C, dim=2).flatten(0, 1).unflatten(1, (-1, C)).unsqueeze(-1)          # [BH, n, C, 1]
    S = S.flatten(0, 1)                                                                        # [BH, K, V]
    # (I + tril(diag(β) K Kᵀ, −1)) W = diag(β) K and (I + tril(diag(β) K Kᵀ, −1)) U = diag(β) V
    beta_k = beta * k
    lower = (beta_k @ k.transpose(-1, -2)).tril_(-1)
    w, u = _unit_lower_solve(lower, beta_k), _unit_lower_solve(lower, beta * v)      # W = T K, U = T V
    states, pseudo = [], []                       # per chunk: incoming state S and Ũ = U − W S
    for w_c, u_c, k_c in zip(w.unbind(1), u.unbind(1), k.unbind(1)):
        states.append(S)
        pseudo.append(torch.baddbmm(u_c, w_c, S, alpha=-1.0))
        S = torch.baddbmm(S, k_c.transpose(-1, -2), pseudo[-1])                           # S ← S + Kᵀ Ũ
    scores = (q @ k.transpose(-1, -2)).tril_()                         # Q Kᵀ ⊙ M (diagonal included)
    o = matmul_add_(scores @ torch.stack(pseudo, dim=1), q, torch.stack(states, dim=1), scale)   # (…) Ũ + Q S
    return o.flatten(1, 2)[:, :T].unflatten(0, (B, H)), S.unflatten(0, (B, H))


def _parallel(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, S: Tensor, scale: float, chunk_size: int):
    return _chunk(q, k, v, beta, S, scale, q.shape[2])


_IMPLS = {"recurrent": _recurrent, "chunk": _chunk, "parallel": _parallel}
_TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_TRITON_MAX_K = 128     # larger key tiles overflow shared memory (H100 / H200: 227 KiB per block)


def _auto_picks_triton(q, k, v, beta) -> bool:
    """"auto" means "triton" for CUDA tensors of a supported dtype and size when Triton is installed."""
    tensors = (q, k, v, beta)
    if not all(isinstance(t, Tensor) for t in tensors) or q.dim() != 4 or q.shape[1] <= AUTO_RECURRENT_MAX_T:
        return False
    return (q.is_cuda and triton_usable(*tensors) and q.shape[-1] <= _TRITON_MAX_K
            and all(t.dtype in _TRITON_DTYPES for t in tensors))


def _triton(q, k, v, beta, scale, initial_state, chunk_size):
    B, T, H, K, V = check_qkv(OP, q, k, v)
    check_shape(OP, "beta", beta, (B, T, H), "B, T, H")
    check_chunk_size(OP, chunk_size)
    if not triton_usable(q, k, v, beta):
        raise fail(OP, "impl 'triton' needs Triton and CUDA tensors (or CPU tensors with TRITON_INTERPRET=1); "
                       "use impl 'chunk' otherwise")
    for name, t in zip("qkv", (q, k, v)):
        if t.dtype not in _TRITON_DTYPES:
            raise fail(OP, f"impl 'triton' supports float32, bfloat16 and float16 inputs, got {name} {t.dtype}")
    if K > _TRITON_MAX_K:
        raise fail(OP, f"impl 'triton' supports key sizes K <= {_TRITON_MAX_K}, got K = {K}")
    scale = resolve_scale(OP, scale, K)
    if T == 0 or initial_state is not None:
        state = start_state(OP, initial_state, (B, H, K, V), "B, H, K, V", torch.float32, q.device)
        if T == 0:
            return v.new_empty(B, 0, H, V), state
    from .triton.delta_rule import delta_rule_triton

    return delta_rule_triton(q, k, v, beta, scale=scale, initial_state=None if initial_state is None else state)


def delta_rule(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, *, scale: float | None = None,
               initial_state: Tensor | None = None, impl: str = "auto",
               chunk_size: int = 64) -> tuple[Tensor, Tensor]:
    """Delta rule ``S_t = S_{t-1} + β_t k_tᵀ (v_t − k_t S_{t-1})``, ``o_t = (scale·q_t) S_t``.

    Args:
        q, k: ``[B, T, H, K]`` (k normalised by the caller, ‖k‖ = 1 for stability); v: ``[B, T, H, V]``;
        beta: ``[B, T, H]``, in [0, 1] for stability (not checked).
        scale: multiplies q; None means ``K ** -0.5``.
        initial_state: ``[B, H, K, V]`` or None (zeros).
        impl: "auto" (= "triton" for CUDA tensors when Triton is installed, else "chunk"; "recurrent" for T ≤ 4,
            i.e. decoding), "recurrent", "chunk", "parallel" or "triton".
        chunk_size: chunk length of the "chunk" form (the Triton kernels always use 64); T need not be a multiple
            of it.

    Returns:
        ``(o, final_state)``: o ``[B, T, H, V]`` in the dtype of v; final_state ``[B, H, K, V]`` in float32
        (float64 for float64 inputs).
    """
    if impl == "triton" or (impl == "auto" and _auto_picks_triton(q, k, v, beta)):
        return _triton(q, k, v, beta, scale, initial_state, chunk_size)
    x = MatrixOpInputs(OP, q, k, v, {"beta": beta}, scale=scale, initial_state=initial_state, impl=impl,
                       chunk_size=chunk_size, valid=tuple(_IMPLS) + ("triton",), auto="chunk")
    if x.empty:
        return x.output(x.v), x.state
    with no_autocast(x.q):
        o, state = _IMPLS[x.impl](x.q, x.k, x.v, x.gates[0], x.state, x.scale, x.chunk_size)
    return x.output(o), state
