"""Triton kernels (forward and backward) of chunked linear attention with a scalar log-decay per step and head.

One kernel family serves :func:`seqzoo.ops.linear_attention` (no decay, g ≡ 0; the decay math is compiled out by
the constexpr ``HAS_G``) and :func:`seqzoo.ops.decay_linear_attention`.

Papers: "Transformers are RNNs", Katharopoulos et al., 2020, arXiv 2006.16236 (causal linear attention as a
matrix-state RNN); "Gated Linear Attention Transformers with Hardware-Efficient Training", Yang et al., 2023,
arXiv 2312.06635 (sec. 2.2 and 4: the chunkwise form, materialising the state only at chunk boundaries);
"Transformers are SSMs" (Mamba-2), Dao and Gu, 2024, arXiv 2405.21060 (sec. 6-7: the SSD chunked algorithm with a
scalar decay per head, of which this is the same computation with q = C, k = B, v = x·Δ, g = Δ·A).

Recurrence (row vectors; s = scale; g_t ≤ 0 in float32; state S_t: [K, V]):

    S_t = exp(g_t) S_{t-1} + k_tᵀ v_t,        o_t = s · q_t S_t.

Chunkwise form. Split each sequence into chunks of C = ``chunk_size`` steps; in chunk c let b_i = g_1 + … + g_i be
the cumulative log-decay *inside* the chunk (restarting at 0), h_c the state entering it, and
D[i, j] = exp(b_i − b_j) for j ≤ i, 0 otherwise (every exponent ≤ 0):

    O_c     = s · [ diag(e^b) Q h_c + (Q Kᵀ ⊙ D) V ]                     (forward, output kernel, all chunks at once)
    h_{c+1} = e^{b_C} h_c + (e^{b_C − b} ⊙ K)ᵀ V                          (forward, state kernel, loop over chunks)

Backward, with dO given and dH_{c+1} = ∂L/∂h_{c+1} the gradient of the state leaving chunk c
(dH of the last chunk = the gradient of final_state):

    dH_c  = e^{b_C} dH_{c+1} + s · (e^b ⊙ Q)ᵀ dO_c                       (state kernel, reverse loop; dH_0 = d initial_state)
    dV    = s · (K Qᵀ ⊙ Dᵀ) dO + (e^{b_C − b} ⊙ K) dH_{c+1}
    dQ    = s · [ (dO Vᵀ ⊙ D) K + diag(e^b) dO h_cᵀ ]
    dK    = s · (dO Vᵀ ⊙ D)ᵀ Q + e^{b_C − b} ⊙ (V dH_{c+1}ᵀ)
    dg_t  = Σ_{r ≥ t} (q_r·dq_r − k_r·dk_r)  + ⟨dS_T, S_T⟩                  (sum over the rest of the sequence)

The last line: with B_t the cumulative log-decay over the whole sequence, B_t enters o_t as a "query" factor
(∂/∂B_t = q_t·dq_t), every o_{i≥t} and S_T through k_t as a "key" factor (−k_t·dk_t), and S_T through B_T
(⟨dS_T, S_T⟩); g_t adds to every B_r with r ≥ t, hence the reverse cumulative sum.

Kernels: per-chunk entering states h_c are stored (in the input dtype) by the forward state kernel and kept for the
backward; the states/gradient-states loops run one program per (sequence, head, K-block, V-block); the output and
the gradient kernels run one program per (chunk, head[, V-block]). Variable-length packing (``cu_seqlens``, B = 1,
as in flash-attn / fla): chunks never cross a sequence boundary, the state restarts at each boundary, and
``initial_state`` / ``final_state`` are per sequence ``[N, H, K, V]``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import interpreting, patch_interpreter

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_K = 128            # the gradient kernel holds [chunk, K] tiles of q, k, dq and dk (K = 256 would not fit)
CHUNK_SIZES = (16, 32, 64, 128)
DG_BLOCK = 1024        # tokens per step of the dg reverse-cumsum kernel

patch_interpreter()


# ----------------------------------------------------------------------------------------------- kernels
@triton.jit
def _mm(a, b, acc=None, PREC: tl.constexpr = "tf32"):
    """tl.dot with float32 accumulation; PREC "ieee" (float32 operands), "tf32" (ignored for 16-bit operands) or
    "upcast": 16-bit operands multiplied in float32 (Triton's interpreter mis-multiplies bfloat16 operands)."""
    if PREC == "upcast":
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        return tl.dot(a, b, acc, input_precision=PREC)


@triton.jit
def _sequence_span(i_n, T, cu_seqlens, chunk_offsets, BT: tl.constexpr, IS_VARLEN: tl.constexpr):
    """(first token, length, number of chunks, index of its first chunk) of sequence i_n."""
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        length = (tl.load(cu_seqlens + i_n + 1) - tl.load(cu_seqlens + i_n)).to(tl.int32)
        n_chunks = tl.cdiv(length, BT)
        first_chunk = tl.load(chunk_offsets + i_n).to(tl.int64)
    else:
        bos = i_n.to(tl.int64) * T
        length = T
        n_chunks = tl.cdiv(T, BT)
        first_chunk = i_n.to(tl.int64) * n_chunks
    return bos, length, n_chunks, first_chunk


@triton.jit
def _chunk_span(i_t, i_b, T, cu_seqlens, chunk_indices, BT: tl.constexpr, IS_VARLEN: tl.constexpr):
    """(first token of the sequence, its length, chunk index inside it, global chunk index) of program chunk i_t."""
    if IS_VARLEN:
        i_n = tl.load(chunk_indices + i_t * 2)
        local = tl.load(chunk_indices + i_t * 2 + 1)
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        length = (tl.load(cu_seqlens + i_n + 1) - tl.load(cu_seqlens + i_n)).to(tl.int32)
        chunk = i_t.to(tl.int64)
    else:
        local = i_t
        bos = i_b.to(tl.int64) * T
        length = T
        chunk = i_b.to(tl.int64) * tl.cdiv(T, BT) + i_t
    return bos, length, local, chunk


@triton.jit
def _fwd_state_kernel(k, v, g, h, h0, ht, cu_seqlens, chunk_offsets, T, T_BUCKET,
                      H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
                      BV: tl.constexpr, HAS_G: tl.constexpr, HAS_H0: tl.constexpr, IS_VARLEN: tl.constexpr,
                      PREC: tl.constexpr):
    """h[c] = state entering chunk c; ht = state after the last chunk (loop over the chunks of one sequence)."""
    i_k, i_v, i_nh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_n, i_h = i_nh // H, i_nh % H
    bos, length, n_chunks, first_chunk = _sequence_span(i_n, T, cu_seqlens, chunk_offsets, BT, IS_VARLEN)
    o_t = tl.arange(0, BT)
    o_k = i_k * BK + tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_kv = (o_k[:, None] < K) & (o_v[None, :] < V)
    kv_offsets = o_k[:, None] * V + o_v[None, :]
    state = tl.zeros([BK, BV], dtype=tl.float32)
    if HAS_H0:
        state += tl.load(h0 + i_nh.to(tl.int64) * K * V + kv_offsets, mask=m_kv, other=0.0).to(tl.float32)
    for i_t in range(n_chunks):
        tl.store(h + ((first_chunk + i_t) * H + i_h) * K * V + kv_offsets, state.to(h.dtype.element_ty), mask=m_kv)
        rows = i_t * BT + o_t
        m_t = rows < length
        tok = bos + rows
        b_kt = tl.load(k + (tok[None, :] * H + i_h) * K + o_k[:, None], mask=m_t[None, :] & (o_k[:, None] < K),
                       other=0.0)                                                            # [BK, BT]
        b_v = tl.load(v + (tok[:, None] * H + i_h) * V + o_v[None, :], mask=m_t[:, None] & (o_v[None, :] < V),
                      other=0.0)                                                             # [BT, BV]
        if HAS_G:
            b_g = tl.load(g + tok * H + i_h, mask=m_t, other=0.0)
            b_b = tl.cumsum(b_g, axis=0)
            b_last = tl.sum(b_g, axis=0)
            state = state * tl.exp(b_last)
            b_kt = (b_kt * tl.exp(b_last - b_b)[None, :]).to(b_v.dtype)
        state = _mm(b_kt, b_v, state, PREC=PREC)
    tl.store(ht + i_nh.to(tl.int64) * K * V + kv_offsets, state, mask=m_kv)


@triton.jit
def _fwd_output_kernel(q, k, v, g, h, o, cu_seqlens, chunk_indices, scale, T, T_BUCKET,
                       H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
                       BV: tl.constexpr, HAS_G: tl.constexpr, IS_VARLEN: tl.constexpr, PREC: tl.constexpr):
    """O_c = s [diag(e^b) Q h_c + (Q Kᵀ ⊙ D) V] for one chunk, one head and one block of V."""
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    bos, length, local, chunk = _chunk_span(i_t, i_b, T, cu_seqlens, chunk_indices, BT, IS_VARLEN)
    o_t = tl.arange(0, BT)
    row0 = local * BT
    qk_base = (bos * H + i_h) * K
    vo_base = (bos * H + i_h) * V
    h_base = h + (chunk * H + i_h) * K * V
    acc_o = tl.zeros([BT, BV], dtype=tl.float32)
    acc_s = tl.zeros([BT, BT], dtype=tl.float32)
    for i_k in range(tl.cdiv(K, BK)):
        p_q = tl.make_block_ptr(q + qk_base, (length, K), (H * K, 1), (row0, i_k * BK), (BT, BK), (1, 0))
        p_kt = tl.make_block_ptr(k + qk_base, (K, length), (1, H * K), (i_k * BK, row0), (BK, BT), (0, 1))
        p_h = tl.make_block_ptr(h_base, (K, V), (V, 1), (i_k * BK, i_v * BV), (BK, BV), (1, 0))
        b_q = tl.load(p_q, boundary_check=(0, 1))
        acc_o = _mm(b_q, tl.load(p_h, boundary_check=(0, 1)), acc_o, PREC=PREC)
        acc_s = _mm(b_q, tl.load(p_kt, boundary_check=(0, 1)), acc_s, PREC=PREC)
    causal = o_t[:, None] >= o_t[None, :]
    if HAS_G:
        b_b = tl.cumsum(tl.load(g + (bos + row0 + o_t) * H + i_h, mask=row0 + o_t < length, other=0.0), axis=0)
        acc_o = acc_o * tl.exp(b_b)[:, None]
        acc_s = acc_s * tl.exp(tl.where(causal, b_b[:, None] - b_b[None, :], float("-inf")))
    else:
        acc_s = tl.where(causal, acc_s, 0.0)
    p_v = tl.make_block_ptr(v + vo_base, (length, V), (H * V, 1), (row0, i_v * BV), (BT, BV), (1, 0))
    b_v = tl.load(p_v, boundary_check=(0, 1))
    acc_o = _mm(acc_s.to(b_v.dtype), b_v, acc_o, PREC=PREC)
    p_o = tl.make_block_ptr(o + vo_base, (length, V), (H * V, 1), (row0, i_v * BV), (BT, BV), (1, 0))
    tl.store(p_o, (acc_o * scale).to(o.dtype.element_ty), boundary_check=(0, 1))


@triton.jit
def _bwd_state_kernel(q, g, do, dh, dht, dh0, cu_seqlens, chunk_offsets, scale, T, T_BUCKET,
                      H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
                      BV: tl.constexpr, HAS_G: tl.constexpr, HAS_DHT: tl.constexpr, STORE_DH0: tl.constexpr,
                      IS_VARLEN: tl.constexpr, PREC: tl.constexpr):
    """dh[c] = gradient of the state leaving chunk c; dh0 = gradient of the initial state (reverse loop)."""
    i_k, i_v, i_nh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_n, i_h = i_nh // H, i_nh % H
    bos, length, n_chunks, first_chunk = _sequence_span(i_n, T, cu_seqlens, chunk_offsets, BT, IS_VARLEN)
    o_t = tl.arange(0, BT)
    o_k = i_k * BK + tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_kv = (o_k[:, None] < K) & (o_v[None, :] < V)
    kv_offsets = o_k[:, None] * V + o_v[None, :]
    dstate = tl.zeros([BK, BV], dtype=tl.float32)
    if HAS_DHT:
        dstate += tl.load(dht + i_nh.to(tl.int64) * K * V + kv_offsets, mask=m_kv, other=0.0).to(tl.float32)
    for i_r in range(n_chunks):
        i_t = n_chunks - 1 - i_r
        tl.store(dh + ((first_chunk + i_t) * H + i_h) * K * V + kv_offsets, dstate.to(dh.dtype.element_ty),
                 mask=m_kv)
        rows = i_t * BT + o_t
        m_t = rows < length
        tok = bos + rows
        b_qt = tl.load(q + (tok[None, :] * H + i_h) * K + o_k[:, None], mask=m_t[None, :] & (o_k[:, None] < K),
                       other=0.0)                                                            # [BK, BT]
        b_do = tl.load(do + (tok[:, None] * H + i_h) * V + o_v[None, :], mask=m_t[:, None] & (o_v[None, :] < V),
                       other=0.0)                                                            # [BT, BV]
        if HAS_G:
            b_g = tl.load(g + tok * H + i_h, mask=m_t, other=0.0)
            b_b = tl.cumsum(b_g, axis=0)
            dstate = dstate * tl.exp(tl.sum(b_g, axis=0))
            b_qt = (b_qt.to(tl.float32) * (scale * tl.exp(b_b))[None, :]).to(b_do.dtype)
        else:
            b_qt = (b_qt.to(tl.float32) * scale).to(b_do.dtype)
        dstate = _mm(b_qt, b_do, dstate, PREC=PREC)
    if STORE_DH0:
        tl.store(dh0 + i_nh.to(tl.int64) * K * V + kv_offsets, dstate, mask=m_kv)


@triton.jit
def _bwd_grad_kernel(q, k, v, g, h, do, dh, dq, dk, dv, db, cu_seqlens, chunk_indices, scale, T, T_BUCKET,
                     H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
                     BV: tl.constexpr, HAS_G: tl.constexpr, IS_VARLEN: tl.constexpr, PREC: tl.constexpr):
    """dq, dk, dv of one chunk and head (all of K, a loop over blocks of V), and db_t = q_t·dq_t − k_t·dk_t."""
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    bos, length, local, chunk = _chunk_span(i_t, i_b, T, cu_seqlens, chunk_indices, BT, IS_VARLEN)
    o_t = tl.arange(0, BT)
    row0 = local * BT
    qk_base = (bos * H + i_h) * K
    vo_base = (bos * H + i_h) * V
    state_base = (chunk * H + i_h) * K * V
    b_q = tl.load(tl.make_block_ptr(q + qk_base, (length, K), (H * K, 1), (row0, 0), (BT, BK), (1, 0)),
                  boundary_check=(0, 1))                                                   # [BT, BK]
    b_k = tl.load(tl.make_block_ptr(k + qk_base, (length, K), (H * K, 1), (row0, 0), (BT, BK), (1, 0)),
                  boundary_check=(0, 1))
    key_le_query = o_t[:, None] <= o_t[None, :]                                            # [j, i]: j ≤ i
    b_a = _mm(b_k, tl.trans(b_q), PREC=PREC)                                               # [j, i] = k_j·q_i
    if HAS_G:
        b_g = tl.load(g + (bos + row0 + o_t) * H + i_h, mask=row0 + o_t < length, other=0.0)
        b_b = tl.cumsum(b_g, axis=0)
        to_end = tl.exp(tl.sum(b_g, axis=0) - b_b)                                           # e^{b_C − b_j}
        b_a = b_a * (scale * tl.exp(tl.where(key_le_query, b_b[None, :] - b_b[:, None], float("-inf"))))
        b_kd = (b_k * to_end[:, None]).to(b_k.dtype)
    else:
        b_a = tl.where(key_le_query, b_a * scale, 0.0)
        b_kd = b_k
    b_a = b_a.to(b_k.dtype)
    acc_dov = tl.zeros([BT, BT], dtype=tl.float32)
    acc_dq = tl.zeros([BT, BK], dtype=tl.float32)
    acc_dk = tl.zeros([BT, BK], dtype=tl.float32)
    for i_v in range(tl.cdiv(V, BV)):
        p_v = tl.make_block_ptr(v + vo_base, (length, V), (H * V, 1), (row0, i_v * BV), (BT, BV), (1, 0))
        p_do = tl.make_block_ptr(do + vo_base, (length, V), (H * V, 1), (row0, i_v * BV), (BT, BV), (1, 0))
        p_ht = tl.make_block_ptr(h + state_base, (V, K), (1, V), (i_v * BV, 0), (BV, BK), (0, 1))
        p_dh = tl.make_block_ptr(dh + state_base, (K, V), (V, 1), (0, i_v * BV), (BK, BV), (1, 0))
        b_v = tl.load(p_v, boundary_check=(0, 1))                                          # [BT, BV]
        b_do = tl.load(p_do, boundary_check=(0, 1))
        b_dh = tl.load(p_dh, boundary_check=(0, 1))                                        # [BK, BV]
        acc_dov = _mm(b_do, tl.trans(b_v), acc_dov, PREC=PREC)                             # [i, j] = do_i·v_j
        acc_dq = _mm(b_do, tl.load(p_ht, boundary_check=(0, 1)), acc_dq, PREC=PREC)
        acc_dk = _mm(b_v, tl.trans(b_dh), acc_dk, PREC=PREC)
        b_dv = _mm(b_a, b_do, PREC=PREC)
        b_dv = _mm(b_kd, b_dh, b_dv, PREC=PREC)
        p_dv = tl.make_block_ptr(dv + vo_base, (length, V), (H * V, 1), (row0, i_v * BV), (BT, BV), (1, 0))
        tl.store(p_dv, b_dv.to(dv.dtype.element_ty), boundary_check=(0, 1))
    causal = o_t[:, None] >= o_t[None, :]
    if HAS_G:
        b_ds = acc_dov * (scale * tl.exp(tl.where(causal, b_b[:, None] - b_b[None, :], float("-inf"))))
        acc_dq = acc_dq * (scale * tl.exp(b_b))[:, None]
        acc_dk = acc_dk * to_end[:, None]
    else:
        b_ds = tl.where(causal, acc_dov * scale, 0.0)
        acc_dq = acc_dq * scale
    b_ds = b_ds.to(b_q.dtype)
    acc_dq = _mm(b_ds, b_k, acc_dq, PREC=PREC)
    acc_dk = _mm(tl.trans(b_ds), b_q, acc_dk, PREC=PREC)
    p_dq = tl.make_block_ptr(dq + qk_base, (length, K), (H * K, 1), (row0, 0), (BT, BK), (1, 0))
    p_dk = tl.make_block_ptr(dk + qk_base, (length, K), (H * K, 1), (row0, 0), (BT, BK), (1, 0))
    tl.store(p_dq, acc_dq.to(dq.dtype.element_ty), boundary_check=(0, 1))
    tl.store(p_dk, acc_dk.to(dk.dtype.element_ty), boundary_check=(0, 1))
    if HAS_G:
        b_db = tl.sum(acc_dq * b_q.to(tl.float32), axis=1) - tl.sum(acc_dk * b_k.to(tl.float32), axis=1)
        tl.store(db + (bos + row0 + o_t) * H + i_h, b_db, mask=row0 + o_t < length)


@triton.jit
def _bwd_dg_kernel(db, dg, carry0, cu_seqlens, T, H: tl.constexpr, BLOCK: tl.constexpr,
                   HAS_CARRY: tl.constexpr, IS_VARLEN: tl.constexpr):
    """dg_t = Σ_{r ≥ t in the same sequence} db_r + carry0 (= ⟨dS_T, S_T⟩), BLOCK tokens per step from the end."""
    i_nh = tl.program_id(0)
    i_n, i_h = i_nh // H, i_nh % H
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        length = (tl.load(cu_seqlens + i_n + 1) - tl.load(cu_seqlens + i_n)).to(tl.int32)
    else:
        bos = i_n.to(tl.int64) * T
        length = T
    carry = tl.zeros([1], dtype=tl.float32)
    if HAS_CARRY:
        carry += tl.load(carry0 + i_nh + tl.arange(0, 1))
    o_x = tl.arange(0, BLOCK)
    n_blocks = tl.cdiv(length, BLOCK)
    for i_r in range(n_blocks):
        rows = (n_blocks - 1 - i_r) * BLOCK + o_x
        m = rows < length
        b_db = tl.load(db + (bos + rows) * H + i_h, mask=m, other=0.0)
        suffix = tl.cumsum(b_db, axis=0, reverse=True) + carry
        tl.store(dg + (bos + rows) * H + i_h, suffix, mask=m)
        carry += tl.sum(b_db, axis=0)


# ----------------------------------------------------------------------------------------------- launching
def _pow2(n: int, low: int = 16) -> int:
    return max(low, triton.next_power_of_2(n))


# Tuned once per head shape and length bucket: keying on the exact T would re-tune (seconds per kernel) for every new
# sequence or packed-batch length; the best block sizes change with the order of magnitude of T, not with T itself.
_KEY = ["T_BUCKET", "H", "K", "V", "BT"]


def _t_bucket(T: int) -> int:
    """Autotuning bucket of a sequence length: the power of two ≥ T, clamped to [256, 16384]."""
    return min(16384, max(256, triton.next_power_of_2(T)))


def _configs(blocks, warps_stages):
    return [triton.Config(dict(zip(("BK", "BV"), b)), num_warps=w, num_stages=s)
            for b in blocks for w, s in warps_stages]


def _tuned(kernel, configs):
    """``kernel`` with a small autotune list on the GPU; plain (block sizes passed by the caller) when interpreting."""
    if interpreting():
        return kernel
    return triton.autotune(configs=configs, key=_KEY)(kernel)


_STATE_CONFIGS = _configs([(64, 64), (32, 64), (32, 32)], [(4, 2), (4, 3)])
_fwd_state = _tuned(_fwd_state_kernel, _STATE_CONFIGS)
_bwd_state = _tuned(_bwd_state_kernel, _STATE_CONFIGS)
_fwd_output = _tuned(_fwd_output_kernel, _configs([(64, 64), (128, 64), (64, 128)], [(4, 2), (8, 2), (4, 3)]))
_bwd_grad = (_bwd_grad_kernel if interpreting() else triton.autotune(
    configs=[triton.Config({"BV": bv}, num_warps=w, num_stages=s) for bv in (32, 64) for w, s in ((4, 2), (8, 1),
                                                                                              (8, 2))],
    key=_KEY)(_bwd_grad_kernel))


def _blocks(K: int, V: int) -> dict:
    """Block sizes used when not autotuning (the interpreter)."""
    return {"BK": min(64, _pow2(K)), "BV": min(64, _pow2(V))} if interpreting() else {}


def _precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32:
        return "ieee"
    return "upcast" if interpreting() else "tf32"


def _varlen_tables(cu_seqlens: torch.Tensor, BT: int):
    """(chunk_offsets [N+1]: first chunk of each sequence, chunk_indices [n_chunks, 2]: (sequence, local chunk))."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    n_chunks = (lengths + BT - 1) // BT
    offsets = torch.zeros(n_chunks.numel() + 1, dtype=torch.long, device=cu_seqlens.device)
    offsets[1:] = n_chunks.cumsum(0)
    total = int(offsets[-1])
    seq = torch.repeat_interleave(torch.arange(n_chunks.numel(), device=cu_seqlens.device), n_chunks,
                                  output_size=total)
    local = torch.arange(total, device=cu_seqlens.device) - offsets[seq]
    return offsets.to(torch.int32), torch.stack([seq, local], dim=1).to(torch.int32).contiguous(), total


def _forward(q, k, v, g, h0, cu_seqlens, scale, BT):
    B, T, H, K = q.shape
    V = v.shape[-1]
    prec = _precision(q.dtype)
    varlen = cu_seqlens is not None
    if varlen:
        chunk_offsets, chunk_indices, n_total = _varlen_tables(cu_seqlens, BT)
        N, n_grid = cu_seqlens.numel() - 1, n_total
    else:
        chunk_offsets = chunk_indices = None
        N, n_grid = B, triton.cdiv(T, BT)
        n_total = B * n_grid
    h = torch.empty(n_total, H, K, V, dtype=q.dtype, device=q.device)
    ht = torch.empty(N, H, K, V, dtype=torch.float32, device=q.device)
    _fwd_state[lambda m: (triton.cdiv(K, m["BK"]), triton.cdiv(V, m["BV"]), N * H)](
        k, v, g, h, h0, ht, cu_seqlens, chunk_offsets, T, _t_bucket(T), H=H, K=K, V=V, BT=BT,
        HAS_G=g is not None, HAS_H0=h0 is not None, IS_VARLEN=varlen, PREC=prec, **_blocks(K, V))
    o = torch.empty_like(v)
    _fwd_output[lambda m: (triton.cdiv(V, m["BV"]), n_grid, B * H)](
        q, k, v, g, h, o, cu_seqlens, chunk_indices, scale, T, _t_bucket(T), H=H, K=K, V=V, BT=BT,
        HAS_G=g is not None, IS_VARLEN=varlen, PREC=prec, **_blocks(K, V))
    return o, ht, h, (chunk_offsets, chunk_indices, N, n_grid)


def _backward(q, k, v, g, h, h0, ht, do, dht, cu_seqlens, tables, scale, BT):
    B, T, H, K = q.shape
    V = v.shape[-1]
    prec = _precision(q.dtype)
    varlen = cu_seqlens is not None
    chunk_offsets, chunk_indices, N, n_grid = tables
    dh = torch.empty_like(h)
    dh0 = torch.empty(N, H, K, V, dtype=torch.float32, device=q.device) if h0 is not None else None
    _bwd_state[lambda m: (triton.cdiv(K, m["BK"]), triton.cdiv(V, m["BV"]), N * H)](
        q, g, do, dh, dht, dh0, cu_seqlens, chunk_offsets, scale, T, _t_bucket(T), H=H, K=K, V=V, BT=BT,
        HAS_G=g is not None, HAS_DHT=dht is not None, STORE_DH0=h0 is not None, IS_VARLEN=varlen, PREC=prec, **_blocks(K, V))
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    db = torch.empty(B, T, H, dtype=torch.float32, device=q.device) if g is not None else None
    grad_blocks = {"BV": min(64, _pow2(V))} if interpreting() else {}
    _bwd_grad[(n_grid, B * H)](
        q, k, v, g, h, do, dh, dq, dk, dv, db, cu_seqlens, chunk_indices, scale, T, _t_bucket(T), H=H, K=K,
        V=V, BT=BT, BK=_pow2(K), HAS_G=g is not None, IS_VARLEN=varlen, PREC=prec, **grad_blocks)
    dg = None
    if g is not None:
        dg = torch.empty_like(db)
        carry = (dht * ht).sum((-2, -1)).contiguous() if dht is not None else None
        _bwd_dg_kernel[(N * H,)](db, dg, carry, cu_seqlens, T, H=H, BLOCK=DG_BLOCK if not interpreting() else 64,
                                 HAS_CARRY=carry is not None, IS_VARLEN=varlen)
    return dq, dk, dv, dg, dh0


class _ChunkLinearAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, g, h0, cu_seqlens, scale, chunk_size):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        g = g.contiguous() if g is not None else None
        h0 = h0.contiguous() if h0 is not None else None
        o, ht, h, tables = _forward(q, k, v, g, h0, cu_seqlens, scale, chunk_size)
        ctx.save_for_backward(q, k, v, g, h, h0, ht, cu_seqlens)
        ctx.tables, ctx.scale, ctx.chunk_size = tables, scale, chunk_size
        ctx.set_materialize_grads(False)
        return o, ht

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, g, h, h0, ht, cu_seqlens = ctx.saved_tensors
        do = torch.zeros_like(v) if do is None else do.contiguous()
        dht = dht.contiguous().float() if dht is not None else None
        dq, dk, dv, dg, dh0 = _backward(q, k, v, g, h, h0, ht, do, dht, cu_seqlens, ctx.tables, ctx.scale,
                                        ctx.chunk_size)
        dh0 = dh0.to(h0.dtype) if dh0 is not None else None
        return dq, dk, dv, dg, dh0, None, None, None


# ----------------------------------------------------------------------------------------------- entry points
def supports(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk_size: int) -> bool:
    """Whether the kernels handle these inputs (dtype, head size, chunk size); used by ``impl="auto"``."""
    return (all(t.dtype in SUPPORTED_DTYPES for t in (q, k, v)) and q.dim() == 4 and q.shape[-1] <= MAX_K
            and chunk_size in CHUNK_SIZES)


@torch.compiler.disable
def chunk_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor | None = None, *,
                           scale: float | None = None, initial_state: torch.Tensor | None = None,
                           cu_seqlens: torch.Tensor | None = None, chunk_size: int = 64,
                           op: str = "chunk_linear_attention") -> tuple[torch.Tensor, torch.Tensor]:
    """``S_t = exp(g_t) S_{t-1} + k_tᵀ v_t``, ``o_t = scale · q_t S_t`` by the Triton kernels (g=None: no decay).

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]`` (float16 / bfloat16 / float32, K ≤ 128); g: ``[B, T, H]``
            log-decays ≤ 0 (computed in float32) or None.
        scale: multiplies q; None means ``K ** -0.5``.
        initial_state: ``[N, H, K, V]`` (N = B, or the number of sequences with ``cu_seqlens``) or None.
        cu_seqlens: None, or int32/int64 ``[N + 1]`` boundaries of N sequences packed along T (B must be 1); the
            state restarts at every boundary.
        chunk_size: 16, 32, 64 or 128.

    Returns:
        ``(o, final_state)``: o ``[B, T, H, V]`` in the dtype of v, final_state ``[N, H, K, V]`` float32.
    """
    from .._common import check_chunk_size, check_qkv, check_same_device, check_shape, fail, resolve_scale
    from . import triton_usable

    B, T, H, K, V = check_qkv(op, q, k, v)
    if g is not None:
        check_shape(op, "g", g, (B, T, H), "B, T, H")
        check_same_device(op, q=q, g=g)
    if check_chunk_size(op, chunk_size) not in CHUNK_SIZES:
        raise fail(op, f"impl='triton' needs chunk_size in {CHUNK_SIZES}, got {chunk_size}")
    dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
    if dtype not in SUPPORTED_DTYPES:
        raise fail(op, f"impl='triton' supports float16, bfloat16 and float32 inputs, got {dtype}")
    if K > MAX_K:
        raise fail(op, f"impl='triton' supports head size K ≤ {MAX_K}, got K = {K}")
    if not triton_usable(q, k, v):
        raise fail(op, "impl='triton' needs triton and CUDA tensors (or CPU tensors with TRITON_INTERPRET=1)")
    N = B
    if cu_seqlens is not None:
        if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2 \
                or cu_seqlens.dtype not in (torch.int32, torch.int64):
            raise fail(op, "cu_seqlens must be a 1-D int32/int64 tensor [N + 1] of sequence boundaries")
        if B != 1:
            raise fail(op, f"with cu_seqlens the sequences are packed along T, so B must be 1, got B = {B}")
        cu_seqlens = cu_seqlens.to(device=q.device, dtype=torch.int32).contiguous()
        N = cu_seqlens.numel() - 1
    if initial_state is not None:
        check_shape(op, "initial_state", initial_state, (N, H, K, V), "N, H, K, V")
        check_same_device(op, q=q, initial_state=initial_state)
    scale = resolve_scale(op, scale, K)
    if T == 0:
        state = (initial_state.float().clone() if initial_state is not None
                 else torch.zeros(N, H, K, V, dtype=torch.float32, device=q.device))
        return v.new_empty(v.shape), state
    g32 = g.float() if g is not None else None
    o, state = _ChunkLinearAttention.apply(q.to(dtype), k.to(dtype), v.to(dtype), g32, initial_state,
                                           cu_seqlens, scale, chunk_size)
    return o.to(v.dtype), state
