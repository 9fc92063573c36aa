"""Triton kernels for the delta rule (DeltaNet), forward and backward, in the chunkwise WY / UT form.

Papers: "Parallelizing Linear Transformers with the Delta Rule over Sequence Length", Yang, Wang, Zhang, Shen and
Kim, 2024, arXiv 2406.06484 (sec. 3: the chunkwise form with the WY / UT representation); the delta rule itself:
"Linear Transformers Are Secretly Fast Weight Programmers", Schlag, Irie and Schmidhuber, 2021, arXiv 2102.11174.
The blocked inversion of the unit-lower-triangular chunk matrix is textbook block forward substitution (Golub and
Van Loan, "Matrix Computations", sec. 3.1); the kernels are written for this package from those equations.

Row-vector convention, state ``S: [K, V]`` (float32), per (sequence, head):

    S_t = S_{t-1} + β_t k_tᵀ (v_t − k_t S_{t-1}),        o_t = scale · q_t S_t

Forward, per chunk of C = 64 steps with incoming state S_c (rows past the end of a sequence are zeros, which makes
them no-op steps):

    L   = strict_tril(diag(β) K Kᵀ)                          [C, C]
    M   = (I + L)⁻¹                                           (kernel 1, in float32)
    W   = M (β ⊙ K),   U = M (β ⊙ V)                         (T = M diag(β): W = T K, U = T V)
    V'  = U − W S_c                                           (kernel 2, sequential over chunks)
    S_{c+1} = S_c + Kᵀ V'
    O   = scale · (Q S_c + (Q Kᵀ ⊙ Mask) V')                  (kernel 3; Mask: s ≤ t)

M is formed blockwise: the four 16 × 16 diagonal blocks of I + L are inverted (all four at once, by repeated
squaring of the nilpotent L_D: six 64 × 64 matmuls), giving M_D; with L_O the part of L below the diagonal blocks,
I + L = (I + L_D)(I + N), N = M_D L_O, and N is nilpotent (N⁴ = 0), so M = (I − N)(I + N²) M_D (four matmuls).

Backward, given dO and dS_T (the gradient of the final state). Kernel 4 forms dV'_intra = scale (Q Kᵀ ⊙ Mask)ᵀ dO
and dQ (below), which need no state gradient; kernel 5 runs backwards over the chunks carrying dS (the gradient of
the state leaving chunk c):

    dV'       = dV'_intra + K dS
    dS_c      = dS + scale Qᵀ dO − Wᵀ dV'                    (the gradient of the state entering chunk c)

and kernel 6 finishes each chunk independently; with A = scale (dO V'ᵀ ⊙ Mask):

    dQ  = scale dO S_cᵀ + A K                                 (kernel 4)
    dK  = V' dSᵀ + Aᵀ Q + β ⊙ (Mᵀ dW) + dP K + dPᵀ K         with dW = −dV' S_cᵀ
    dV  = β ⊙ (Mᵀ dV')
    dM  = dW (β ⊙ K)ᵀ + dV' (β ⊙ V)ᵀ,   dL = −strict_tril(Mᵀ dM Mᵀ),   dP = diag(β) dL
    dβ  = rowsum(K ⊙ Mᵀ dW) + rowsum(V ⊙ Mᵀ dV') + rowsum(dL ⊙ K Kᵀ)

Precision with 16-bit inputs, two modes. By default (``FAST_16BIT``, PREC 0, fla's choice, for K ≥ 64) W, U, V'
and dV' are stored in the input dtype and every product is a 16-bit tensor-core dot with float32 accumulation:
relative errors against float64 0.0043–0.0056 on the H200 (output and gradients, B1·T4096·H4·K128; fla's own
0.0043–0.0060 on the same inputs). V' = U − W S cancels, and so does dV' = dV'_intra + K dS, so with
``FAST_16BIT = False`` (PREC 1, and always for K < 64) they are kept in float32 and every product with a float32
intermediate (S, V', dV', M, the scores) is a tf32 dot: errors 0.0026–0.0033 there, for 1.8× the kernels' time
(B4·T8192, forward + backward; docs/benchmarks.md, fourth session). The forward pass saves M, W, V' and the chunk
states S_c for the backward pass, which therefore reruns no forward kernel.

Variable-length packing (``cu_seqlens``, as in flash-attn / fla): all sequences are concatenated along time with
batch 1; the state is reset at every boundary, each sequence has its own initial and final state, and chunks never
cross a boundary. Without ``cu_seqlens`` the batch is treated as B sequences of length T.

Matmuls: ``_dot`` multiplies two input-precision operands (16-bit, or float32-accurate "tf32x3" for float32
inputs); ``_dot32`` multiplies float32 intermediates (tf32 with 16-bit inputs, 16-bit with ``FAST_16BIT``).
``tl.dot`` needs every tile side ≥ 16. The launch settings (``LAUNCH``) were swept on an H200 by
``benchmarks/gpu_delta_sweep.py``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import HAS_TRITON, cached_layout, interpreting, patch_interpreter

CHUNK = 64      # chunk length of the kernels (fixed)
SUB = 16        # side of the diagonal blocks of M inverted by repeated squaring



if HAS_TRITON:
    import triton
    import triton.language as tl

    patch_interpreter()
    # The interpreter multiplies bfloat16 tiles wrongly (raw bits): there the 16-bit operands are rounded and then
    # multiplied in float32, which gives the same products.
    _UPCAST_16BIT_DOTS = tl.constexpr(interpreting())

    # float32 inputs: dots to float32 accuracy. "tf32x3" (three tf32 tensor-core products per dot, relative error
    # ~1e-7) is much faster than "ieee" (CUDA-core FMAs); "ieee" is the fallback should tf32x3 misbehave.
    _FLOAT32_PRECISION = tl.constexpr("tf32x3")

    @triton.jit
    def _dot(a, b, DT: tl.constexpr, PREC: tl.constexpr):
        """a @ b of two input-dtype operands with float32 accumulation: float32-accurate for float32 inputs
        (PREC 2), else 16-bit (DT) tensor-core operands."""
        if PREC == 2:
            return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision=_FLOAT32_PRECISION)
        elif _UPCAST_16BIT_DOTS:
            return tl.dot(a.to(DT).to(tl.float32), b.to(DT).to(tl.float32))
        else:
            return tl.dot(a.to(DT), b.to(DT))

    @triton.jit
    def _dot_tf32(a, b, PREC: tl.constexpr):
        """a @ b on float32 operands: float32-accurate when PREC is 2 (float32 inputs), else tf32."""
        if PREC == 2:
            return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision=_FLOAT32_PRECISION)
        else:
            return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="tf32")

    @triton.jit
    def _dot32(a, b, DT: tl.constexpr, PREC: tl.constexpr):
        """a @ b where an operand is a float32 intermediate (a state, V', dV', M, scores): float32-accurate for
        float32 inputs (PREC 2), tf32 (PREC 1), or both operands rounded to the 16-bit input dtype (PREC 0)."""
        if PREC == 0:
            return _dot(a, b, DT, PREC)
        else:
            return _dot_tf32(a, b, PREC)

    @triton.jit
    def _rows(ptr, bos, eos, h, H, D: tl.constexpr, first_row, C: tl.constexpr, BD: tl.constexpr, col0=0):
        """Block pointer to rows [first_row, first_row + C) × columns [col0, col0 + BD) of one sequence and head of
        a token-major ``[tokens, H, D]`` tensor; rows past the sequence end read as zeros and are not written."""
        row = tl.cast(first_row, tl.int32)
        return tl.make_block_ptr(ptr + (bos * H + h) * D, (eos - bos, D), (H * D, 1), (row, col0), (C, BD), (1, 0))

    @triton.jit
    def _chunk_bounds(chunk_ptr, cu_ptr, g):
        """(first token of the sequence, one past its last token, first row of chunk g within it)."""
        seq = tl.load(chunk_ptr + 2 * g)
        start = tl.load(chunk_ptr + 2 * g + 1).to(tl.int64)
        bos = tl.load(cu_ptr + seq).to(tl.int64)
        eos = tl.load(cu_ptr + seq + 1).to(tl.int64)
        return bos, eos, start - bos

    @triton.jit
    def _state_block_ptr(ptr, index, h, H, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                         col0):
        """Block pointer to the ``[BK, BV]`` tile at column col0 of state ``[index, h]`` of ``[N, H, K, V]``."""
        return tl.make_block_ptr(ptr + (index * H + h) * K * V, (K, V), (V, 1), (0, col0), (BK, BV), (1, 0))

    @triton.jit
    def _wy_forward_kernel(k_ptr, v_ptr, beta_ptr, w_ptr, u_ptr, m_ptr, chunk_ptr, cu_ptr, H,
                           K: tl.constexpr, V: tl.constexpr, C: tl.constexpr, SUB_C: tl.constexpr,
                           BK: tl.constexpr, BV: tl.constexpr, PREC: tl.constexpr):
        """Per (chunk, head): M = (I + strict_tril(diag(β) K Kᵀ))⁻¹, W = M (β ⊙ K), U = M (β ⊙ V)."""
        g, h = tl.program_id(0).to(tl.int64), tl.program_id(1)
        DT = k_ptr.dtype.element_ty
        bos, eos, row0 = _chunk_bounds(chunk_ptr, cu_ptr, g)
        k = tl.load(_rows(k_ptr, bos, eos, h, H, K, row0, C, BK), boundary_check=(0, 1), padding_option="zero")
        beta_p = tl.make_block_ptr(beta_ptr + bos * H + h, (eos - bos,), (H,), (row0.to(tl.int32),), (C,), (0,))
        beta = tl.load(beta_p, boundary_check=(0,), padding_option="zero").to(tl.float32)
        rows = tl.arange(0, C)
        r, c = rows[:, None], rows[None, :]
        L = beta[:, None] * _dot(k, tl.trans(k), DT, PREC)
        L = tl.where(r > c, L, 0.0)
        same = (r // SUB_C) == (c // SUB_C)
        eye = tl.where(r == c, 1.0, 0.0)
        # the four 16 x 16 diagonal blocks of (I + L)^-1 at once, by repeated squaring: with P = -L_D (nilpotent,
        # P^16 = 0 in 16 x 16 blocks), (I + L_D)^-1 = sum_{i<16} P^i = (I + P)(I + P^2)(I + P^4)(I + P^8)
        P = tl.where(same, -L, 0.0)
        MD = eye + P
        for _ in tl.static_range(3):
            P = _dot_tf32(P, P, PREC)
            MD += _dot_tf32(MD, P, PREC)
        # M = (I - N)(I + N^2) M_D with N = M_D L_O nilpotent (N^4 = 0)
        N = _dot_tf32(MD, tl.where(same, 0.0, L), PREC)
        Y = MD + _dot_tf32(_dot_tf32(N, N, PREC), MD, PREC)
        M = Y - _dot_tf32(N, Y, PREC)
        m_p = tl.make_block_ptr(m_ptr + (g * H + h) * C * C, (C, C), (C, 1), (0, 0), (C, C), (1, 0))
        tl.store(m_p, M)
        w = _dot32(M, k.to(tl.float32) * beta[:, None], DT, PREC)
        tl.store(_rows(w_ptr, bos, eos, h, H, K, row0, C, BK), w.to(w_ptr.dtype.element_ty), boundary_check=(0, 1))
        for iv in range(0, V, BV):
            v = tl.load(_rows(v_ptr, bos, eos, h, H, V, row0, C, BV, iv), boundary_check=(0, 1),
                        padding_option="zero").to(tl.float32)
            u = _dot32(M, v * beta[:, None], DT, PREC)
            tl.store(_rows(u_ptr, bos, eos, h, H, V, row0, C, BV, iv), u.to(u_ptr.dtype.element_ty),
                     boundary_check=(0, 1))

    @triton.jit
    def _state_forward_kernel(k_ptr, w_ptr, u_ptr, vnew_ptr, states_ptr, s0_ptr, sT_ptr, cu_ptr, first_ptr, H,
                              K: tl.constexpr, V: tl.constexpr, C: tl.constexpr, BK: tl.constexpr,
                              BV: tl.constexpr, HAS_S0: tl.constexpr, PREC: tl.constexpr):
        """Per (V block, sequence · head), sequentially over chunks: save S_c, V' = U − W S_c, S += Kᵀ V'."""
        iv, nh = tl.program_id(0), tl.program_id(1).to(tl.int64)
        n, h = nh // H, nh % H
        DT = k_ptr.dtype.element_ty
        col0 = iv * BV
        bos = tl.load(cu_ptr + n).to(tl.int64)
        eos = tl.load(cu_ptr + n + 1).to(tl.int64)
        first = tl.load(first_ptr + n).to(tl.int64)
        if HAS_S0:
            S = tl.load(_state_block_ptr(s0_ptr, n, h, H, K, V, BK, BV, col0), boundary_check=(0, 1),
                        padding_option="zero").to(tl.float32)
        else:
            S = tl.zeros([BK, BV], dtype=tl.float32)
        for i in range(tl.cdiv(eos - bos, C)):
            tl.store(_state_block_ptr(states_ptr, first + i, h, H, K, V, BK, BV, col0),
                     S.to(states_ptr.dtype.element_ty), boundary_check=(0, 1))
            w = tl.load(_rows(w_ptr, bos, eos, h, H, K, i * C, C, BK), boundary_check=(0, 1), padding_option="zero")
            u = tl.load(_rows(u_ptr, bos, eos, h, H, V, i * C, C, BV, col0), boundary_check=(0, 1),
                        padding_option="zero")
            k = tl.load(_rows(k_ptr, bos, eos, h, H, K, i * C, C, BK), boundary_check=(0, 1), padding_option="zero")
            vn = u.to(tl.float32) - _dot32(w, S, DT, PREC)
            tl.store(_rows(vnew_ptr, bos, eos, h, H, V, i * C, C, BV, col0), vn.to(vnew_ptr.dtype.element_ty),
                     boundary_check=(0, 1))
            S += _dot32(tl.trans(k), vn, DT, PREC)
        tl.store(_state_block_ptr(sT_ptr, n, h, H, K, V, BK, BV, col0), S, boundary_check=(0, 1))

    @triton.jit
    def _output_forward_kernel(q_ptr, k_ptr, vnew_ptr, states_ptr, o_ptr, chunk_ptr, cu_ptr, H, scale,
                               K: tl.constexpr, V: tl.constexpr, C: tl.constexpr, BK: tl.constexpr,
                               BV: tl.constexpr, PREC: tl.constexpr):
        """Per (V block, chunk, head): O = scale (Q S_c + (Q Kᵀ ⊙ Mask) V')."""
        iv, g, h = tl.program_id(0), tl.program_id(1).to(tl.int64), tl.program_id(2)
        DT = q_ptr.dtype.element_ty
        col0 = iv * BV
        bos, eos, row0 = _chunk_bounds(chunk_ptr, cu_ptr, g)
        q = tl.load(_rows(q_ptr, bos, eos, h, H, K, row0, C, BK), boundary_check=(0, 1), padding_option="zero")
        k = tl.load(_rows(k_ptr, bos, eos, h, H, K, row0, C, BK), boundary_check=(0, 1), padding_option="zero")
        vn = tl.load(_rows(vnew_ptr, bos, eos, h, H, V, row0, C, BV, col0), boundary_check=(0, 1),
                     padding_option="zero")
        S = tl.load(_state_block_ptr(states_ptr, g, h, H, K, V, BK, BV, col0), boundary_check=(0, 1),
                    padding_option="zero")
        rows = tl.arange(0, C)
        scores = tl.where(rows[:, None] >= rows[None, :], _dot(q, tl.trans(k), DT, PREC), 0.0)
        o = (_dot(q, S, DT, PREC) + _dot32(scores, vn, DT, PREC)) * scale
        tl.store(_rows(o_ptr, bos, eos, h, H, V, row0, C, BV, col0), o.to(o_ptr.dtype.element_ty),
                 boundary_check=(0, 1))

    @triton.jit
    def _dq_dv_intra_kernel(q_ptr, k_ptr, vnew_ptr, states_ptr, do_ptr, dvn_ptr, dq_ptr, chunk_ptr, cu_ptr, H,
                            scale, K: tl.constexpr, V: tl.constexpr, C: tl.constexpr, BK: tl.constexpr,
                            BV: tl.constexpr, PREC: tl.constexpr):
        """Per (chunk, head), before the state gradients are known: dV'_intra = scale (Q Kᵀ ⊙ Mask)ᵀ dO (float32)
        and dQ = scale dO S_cᵀ + scale (dO V'ᵀ ⊙ Mask) K (final)."""
        g, h = tl.program_id(0).to(tl.int64), tl.program_id(1)
        DT = q_ptr.dtype.element_ty
        bos, eos, row0 = _chunk_bounds(chunk_ptr, cu_ptr, g)
        q = tl.load(_rows(q_ptr, bos, eos, h, H, K, row0, C, BK), boundary_check=(0, 1), padding_option="zero")
        k = tl.load(_rows(k_ptr, bos, eos, h, H, K, row0, C, BK), boundary_check=(0, 1), padding_option="zero")
        rows = tl.arange(0, C)
        mask = rows[:, None] >= rows[None, :]
        scores_t = tl.where(tl.trans(mask), _dot(k, tl.trans(q), DT, PREC), 0.0)       # (Q Kᵀ ⊙ Mask)ᵀ
        dq = tl.zeros([C, BK], dtype=tl.float32)
        do_vn = tl.zeros([C, C], dtype=tl.float32)
        for iv in range(0, V, BV):
            do = tl.load(_rows(do_ptr, bos, eos, h, H, V, row0, C, BV, iv), boundary_check=(0, 1),
                         padding_option="zero")
            vn = tl.load(_rows(vnew_ptr, bos, eos, h, H, V, row0, C, BV, iv), boundary_check=(0, 1),
                         padding_option="zero")
            S = tl.load(_state_block_ptr(states_ptr, g, h, H, K, V, BK, BV, iv), boundary_check=(0, 1),
                        padding_option="zero")
            dvn = _dot32(scores_t, do, DT, PREC) * scale
            tl.store(_rows(dvn_ptr, bos, eos, h, H, V, row0, C, BV, iv), dvn.to(dvn_ptr.dtype.element_ty),
                     boundary_check=(0, 1))
            dq += _dot(do, tl.trans(S), DT, PREC)
            do_vn += _dot32(do, tl.trans(vn), DT, PREC)
        dq = (dq + _dot32(tl.where(mask, do_vn, 0.0), k, DT, PREC)) * scale
        tl.store(_rows(dq_ptr, bos, eos, h, H, K, row0, C, BK), dq.to(dq_ptr.dtype.element_ty), boundary_check=(0, 1))

    @triton.jit
    def _state_backward_kernel(q_ptr, k_ptr, w_ptr, do_ptr, dvn_ptr, dstates_ptr, dsT_ptr, ds0_ptr, cu_ptr,
                               first_ptr, H, scale, K: tl.constexpr, V: tl.constexpr, C: tl.constexpr,
                               BK: tl.constexpr, BV: tl.constexpr, HAS_DST: tl.constexpr, PREC: tl.constexpr):
        """Per (V block, sequence · head), backwards over chunks: save dS (gradient of the state leaving the chunk),
        dV' = dV'_intra + K dS (in place), dS ← dS + scale Qᵀ dO − Wᵀ dV'."""
        iv, nh = tl.program_id(0), tl.program_id(1).to(tl.int64)
        n, h = nh // H, nh % H
        DT = q_ptr.dtype.element_ty
        col0 = iv * BV
        bos = tl.load(cu_ptr + n).to(tl.int64)
        eos = tl.load(cu_ptr + n + 1).to(tl.int64)
        first = tl.load(first_ptr + n).to(tl.int64)
        if HAS_DST:
            dS = tl.load(_state_block_ptr(dsT_ptr, n, h, H, K, V, BK, BV, col0), boundary_check=(0, 1),
                         padding_option="zero").to(tl.float32)
        else:
            dS = tl.zeros([BK, BV], dtype=tl.float32)
        n_chunks = tl.cdiv(eos - bos, C)
        for j in range(n_chunks):
            i = n_chunks - 1 - j
            tl.store(_state_block_ptr(dstates_ptr, first + i, h, H, K, V, BK, BV, col0),
                     dS.to(dstates_ptr.dtype.element_ty), boundary_check=(0, 1))
            k = tl.load(_rows(k_ptr, bos, eos, h, H, K, i * C, C, BK), boundary_check=(0, 1), padding_option="zero")
            q = tl.load(_rows(q_ptr, bos, eos, h, H, K, i * C, C, BK), boundary_check=(0, 1), padding_option="zero")
            w = tl.load(_rows(w_ptr, bos, eos, h, H, K, i * C, C, BK), boundary_check=(0, 1), padding_option="zero")
            do = tl.load(_rows(do_ptr, bos, eos, h, H, V, i * C, C, BV, col0), boundary_check=(0, 1),
                         padding_option="zero")
            dvn_p = _rows(dvn_ptr, bos, eos, h, H, V, i * C, C, BV, col0)
            dvn = tl.load(dvn_p, boundary_check=(0, 1), padding_option="zero").to(tl.float32) + _dot32(k, dS, DT, PREC)
            tl.store(dvn_p, dvn.to(dvn_ptr.dtype.element_ty), boundary_check=(0, 1))
            dS += _dot(tl.trans(q), do, DT, PREC) * scale - _dot32(tl.trans(w), dvn, DT, PREC)
        tl.store(_state_block_ptr(ds0_ptr, n, h, H, K, V, BK, BV, col0), dS, boundary_check=(0, 1))

    @triton.jit
    def _wy_backward_kernel(q_ptr, k_ptr, v_ptr, beta_ptr, m_ptr, states_ptr, dstates_ptr, vnew_ptr, dvn_ptr,
                            do_ptr, dk_ptr, dv_ptr, dbeta_ptr, chunk_ptr, cu_ptr, H, scale,
                            K: tl.constexpr, V: tl.constexpr, C: tl.constexpr, BK: tl.constexpr,
                            BV: tl.constexpr, PREC: tl.constexpr):
        """Per (chunk, head): dK, dV and dβ of the chunk (see the module docstring)."""
        g, h = tl.program_id(0).to(tl.int64), tl.program_id(1)
        DT = q_ptr.dtype.element_ty
        bos, eos, row0 = _chunk_bounds(chunk_ptr, cu_ptr, g)
        beta_p = tl.make_block_ptr(beta_ptr + bos * H + h, (eos - bos,), (H,), (row0.to(tl.int32),), (C,), (0,))
        beta = tl.load(beta_p, boundary_check=(0,), padding_option="zero").to(tl.float32)
        M = tl.load(tl.make_block_ptr(m_ptr + (g * H + h) * C * C, (C, C), (C, 1), (0, 0), (C, C), (1, 0)))
        dk = tl.zeros([C, BK], dtype=tl.float32)       # V' dSᵀ
        dw = tl.zeros([C, BK], dtype=tl.float32)       # −dV' S_cᵀ
        do_vn = tl.zeros([C, C], dtype=tl.float32)     # dO V'ᵀ
        dM = tl.zeros([C, C], dtype=tl.float32)
        dbeta = tl.zeros([C], dtype=tl.float32)
        for iv in range(0, V, BV):
            S = tl.load(_state_block_ptr(states_ptr, g, h, H, K, V, BK, BV, iv), boundary_check=(0, 1),
                        padding_option="zero")
            dS = tl.load(_state_block_ptr(dstates_ptr, g, h, H, K, V, BK, BV, iv), boundary_check=(0, 1),
                         padding_option="zero")
            do = tl.load(_rows(do_ptr, bos, eos, h, H, V, row0, C, BV, iv), boundary_check=(0, 1),
                         padding_option="zero")
            vn = tl.load(_rows(vnew_ptr, bos, eos, h, H, V, row0, C, BV, iv), boundary_check=(0, 1),
                         padding_option="zero")
            dvn = tl.load(_rows(dvn_ptr, bos, eos, h, H, V, row0, C, BV, iv), boundary_check=(0, 1),
                          padding_option="zero")
            v = tl.load(_rows(v_ptr, bos, eos, h, H, V, row0, C, BV, iv), boundary_check=(0, 1),
                        padding_option="zero").to(tl.float32)
            dk += _dot32(vn, tl.trans(dS), DT, PREC)
            dw -= _dot32(dvn, tl.trans(S), DT, PREC)
            do_vn += _dot32(do, tl.trans(vn), DT, PREC)
            dM += _dot32(dvn, tl.trans(v * beta[:, None]), DT, PREC)
            dbv = _dot32(tl.trans(M), dvn, DT, PREC)                       # d(β ⊙ V)
            dbeta += tl.sum(v * dbv, axis=1)
            dv = (dbv * beta[:, None]).to(dv_ptr.dtype.element_ty)
            tl.store(_rows(dv_ptr, bos, eos, h, H, V, row0, C, BV, iv), dv, boundary_check=(0, 1))
        # q and k are loaded only now: held through the V loop, they pushed the K = 128 tiles into register spills
        q = tl.load(_rows(q_ptr, bos, eos, h, H, K, row0, C, BK), boundary_check=(0, 1), padding_option="zero")
        k = tl.load(_rows(k_ptr, bos, eos, h, H, K, row0, C, BK), boundary_check=(0, 1), padding_option="zero")
        rows = tl.arange(0, C)
        r, c = rows[:, None], rows[None, :]
        A = tl.where(r >= c, do_vn, 0.0) * scale
        dk += _dot32(tl.trans(A), q, DT, PREC)
        kf = k.to(tl.float32)
        dM += _dot32(dw, tl.trans(kf * beta[:, None]), DT, PREC)
        dbk = _dot32(tl.trans(M), dw, DT, PREC)                            # d(β ⊙ K)
        dk += dbk * beta[:, None]
        dbeta += tl.sum(kf * dbk, axis=1)
        dL = -_dot32(_dot32(tl.trans(M), dM, DT, PREC), tl.trans(M), DT, PREC)
        dL = tl.where(r > c, dL, 0.0)
        P = _dot(k, tl.trans(k), DT, PREC)
        dbeta += tl.sum(dL * P, axis=1)
        dP = dL * beta[:, None]
        dk += _dot32(dP, kf, DT, PREC) + _dot32(tl.trans(dP), kf, DT, PREC)
        tl.store(_rows(dk_ptr, bos, eos, h, H, K, row0, C, BK), dk.to(dk_ptr.dtype.element_ty), boundary_check=(0, 1))
        dbeta_p = tl.make_block_ptr(dbeta_ptr + bos * H + h, (eos - bos,), (H,), (row0.to(tl.int32),), (C,), (0,))
        tl.store(dbeta_p, dbeta.to(dbeta_ptr.dtype.element_ty), boundary_check=(0,))


# ------------------------------------------------------------------------------------------------------ host side
# Tests set this: every buffer the kernels fill then starts as NaN, so an element a kernel fails to write shows up.
POISON_BUFFERS = False


def _buffer(shape, dtype, device) -> Tensor:
    out = torch.empty(shape, dtype=dtype, device=device)
    return out.fill_(float("nan")) if POISON_BUFFERS else out


def _next_pow2(n: int) -> int:
    return max(16, 1 << (n - 1).bit_length())


def _state_block(V: int, sequences_times_heads: int) -> int:
    """V-block width of the sequential kernels: 64, or 32 when that leaves fewer than ~1 program per GPU core
    (their run time is the chunk loop's latency, so more, narrower programs finish sooner)."""
    wide = min(64, _next_pow2(V))
    return wide if sequences_times_heads * triton.cdiv(V, wide) >= 128 else min(32, wide)


def chunk_layout(cu_seqlens: Tensor, chunk: int) -> tuple[Tensor, Tensor, int]:
    """Chunks of every sequence of a packed batch: ``(chunk_index [NC, 2] int32 = (sequence, first token),
    first_chunk [NS] int32 = index of each sequence's first chunk, NC)``. Chunks never cross a boundary."""
    cu = cu_seqlens.long()
    counts = (cu[1:] - cu[:-1] + chunk - 1) // chunk
    first = torch.cumsum(counts, 0) - counts
    total = int(counts.sum().item())
    seq = torch.repeat_interleave(torch.arange(len(counts), device=cu.device), counts, output_size=total)
    start = cu[seq] + (torch.arange(total, device=cu.device) - first[seq]) * chunk
    return torch.stack([seq, start], 1).to(torch.int32).contiguous(), first.to(torch.int32), total


@cached_layout
def _uniform_layout(B: int, T: int, chunk: int, device) -> tuple[Tensor, Tensor, Tensor, int]:
    """``cu_seqlens`` and the chunk layout of B sequences of length T, without a device-host sync (cached)."""
    n = -(-T // chunk)
    cu = torch.arange(0, (B + 1) * T, T, device=device, dtype=torch.int32)
    g = torch.arange(B * n, device=device)
    index = torch.stack([g // n, (g // n) * T + (g % n) * chunk], 1).to(torch.int32).contiguous()
    first = torch.arange(0, B * n, n, device=device, dtype=torch.int32)
    return cu, index, first, B * n


# Launch settings of each kernel (measured on an H200: benchmarks/gpu_delta_sweep.py sweeps them).
LAUNCH = {
    "wy_forward": dict(num_warps=4, num_stages=3),
    "state_forward": dict(num_warps=4, num_stages=2),
    "output_forward": dict(num_warps=4, num_stages=1),
    "dq_dv_intra": dict(num_warps=8, num_stages=3),
    "state_backward": dict(num_warps=8, num_stages=1),
    "wy_backward": dict(num_warps=8, num_stages=3),
}
# Launch settings of the FAST_16BIT mode (PREC 0), swept on an H200 at B4·T8192·H16·K128 (docs/benchmarks.md, fourth
# session). The state backward at 1 stage gave wrong dK, dV, dβ there (relative error 3.6) at 4 warps and an illegal
# address at 8: a Triton 3.6 miscompile of the 16-bit products, as the same kernel is right at 3 stages.
LAUNCH_16BIT = {
    "wy_forward": dict(num_warps=4, num_stages=3),
    "state_forward": dict(num_warps=4, num_stages=3),
    "output_forward": dict(num_warps=4, num_stages=1),
    "dq_dv_intra": dict(num_warps=8, num_stages=2),
    "state_backward": dict(num_warps=8, num_stages=3),
    "wy_backward": dict(num_warps=8, num_stages=2),
}
STATE_BV: int | None = None     # V-block width of the sequential kernels; None: :func:`_state_block` decides
# 16-bit inputs with W, U, V', dV' stored in the input dtype and every product 16-bit (PREC 0, fla's choice; see the
# module docstring), for K ≥ 64 only (at K = 16 the state forward hit an illegal address on the H200). On by default:
# errors as fla's, within the 1e-2 of bf16 operands; False gives the slower float32 intermediates.
FAST_16BIT = True


def _precision(dtype: torch.dtype, K: int) -> tuple[int, torch.dtype]:
    """(PREC of the kernels, dtype of the W, U, V', dV' buffers) for inputs of ``dtype``: 2 for float32 inputs
    (float32-accurate products), 1 for 16-bit inputs (float32 intermediates, tf32 products of them), 0 for 16-bit
    inputs with ``FAST_16BIT`` and K ≥ 64."""
    if dtype == torch.float32:
        return 2, torch.float32
    return (0, dtype) if FAST_16BIT and K >= 64 else (1, torch.float32)


def _launch(name: str, K: int, prec: int) -> dict:
    opts = dict((LAUNCH_16BIT if prec == 0 else LAUNCH)[name])
    if K < 64:
        # small tiles: 8 warps buy nothing, and Triton 3.6 miscompiled the float32 K = 16 output kernel at 8 warps
        # on the H200 (compute-sanitizer: out-of-bounds shared-memory read in its tf32x3 dot)
        opts["num_warps"] = min(opts["num_warps"], 4)
    if name == "wy_backward" and (prec == 2 or (prec == 1 and K > 64)):
        # 3 stages of its K = 128 tiles with float32 intermediates need 256 KiB of shared memory, over the H200's
        # 227 KiB per block (the 16-bit mode's fit at 2 stages)
        opts["num_stages"] = 1
    if prec == 0 and opts["num_warps"] == 8 and opts["num_stages"] == 1:
        # 8 warps with 1 stage hit illegal addresses in the 16-bit mode on the H200 (a Triton 3.6 miscompile)
        opts["num_warps"] = 4
    return opts


class _DeltaRuleFunction(torch.autograd.Function):
    """Inputs token-major and contiguous: q, k ``[NT, H, K]``, v ``[NT, H, V]``, beta ``[NT, H]`` (one dtype),
    s0 ``[NS, H, K, V]`` float32 or None. Returns ``(o [NT, H, V], final_state [NS, H, K, V] float32)``."""

    @staticmethod
    def forward(ctx, q, k, v, beta, s0, cu, index, first, n_chunks: int, scale: float):
        NT, H, K = q.shape
        V, NS, C = v.shape[-1], cu.numel() - 1, CHUNK
        BK, BV = _next_pow2(K), min(64, _next_pow2(V))
        (prec, inter), dev = _precision(q.dtype, K), q.device
        # W, U and V' in float32 unless FAST_16BIT: V' = U − W S cancels (see the module docstring)
        w, u, vnew = _buffer(k.shape, inter, dev), _buffer(v.shape, inter, dev), _buffer(v.shape, inter, dev)
        o = _buffer(v.shape, v.dtype, dev)
        m = _buffer((n_chunks, H, C, C), torch.float32, dev)
        states = _buffer((n_chunks, H, K, V), q.dtype, dev)          # S_c entering each chunk
        sT = _buffer((NS, H, K, V), torch.float32, dev)
        _wy_forward_kernel[(n_chunks, H)](k, v, beta, w, u, m, index, cu, H, K=K, V=V, C=C, SUB_C=SUB, BK=BK,
                                          BV=BV, PREC=prec, **_launch("wy_forward", K, prec))
        BVS = STATE_BV or _state_block(V, NS * H)
        _state_forward_kernel[(triton.cdiv(V, BVS), NS * H)](
            k, w, u, vnew, states, s0 if s0 is not None else sT, sT, cu, first, H, K=K, V=V, C=C, BK=BK, BV=BVS,
            HAS_S0=s0 is not None, PREC=prec, **_launch("state_forward", K, prec))
        _output_forward_kernel[(triton.cdiv(V, BV), n_chunks, H)](
            q, k, vnew, states, o, index, cu, H, scale, K=K, V=V, C=C, BK=BK, BV=BV, PREC=prec,
            **_launch("output_forward", K, prec))
        ctx.save_for_backward(q, k, v, beta, w, m, states, vnew, cu, index, first)
        ctx.set_materialize_grads(False)      # an unused final state costs no zero-filled gradient
        ctx.scale, ctx.n_chunks, ctx.has_s0 = scale, n_chunks, s0 is not None
        return o, sT

    @staticmethod
    def backward(ctx, do, dsT):
        q, k, v, beta, w, m, states, vnew, cu, index, first = ctx.saved_tensors
        NT, H, K = q.shape
        V, NS, C, n_chunks, scale = v.shape[-1], cu.numel() - 1, CHUNK, ctx.n_chunks, ctx.scale
        BK, BV = _next_pow2(K), min(64, _next_pow2(V))
        (prec, inter), dev = _precision(q.dtype, K), q.device
        do = do.contiguous() if do is not None else torch.zeros_like(v)
        dvn = _buffer((NT, H, V), inter, dev)
        dstates = _buffer(states.shape, states.dtype, dev)          # dS leaving each chunk
        ds0 = _buffer((NS, H, K, V), torch.float32, dev)
        dq = _buffer(q.shape, q.dtype, dev)
        _dq_dv_intra_kernel[(n_chunks, H)](
            q, k, vnew, states, do, dvn, dq, index, cu, H, scale, K=K, V=V, C=C, BK=BK, BV=BV, PREC=prec,
            **_launch("dq_dv_intra", K, prec))
        BVS = STATE_BV or _state_block(V, NS * H)
        _state_backward_kernel[(triton.cdiv(V, BVS), NS * H)](
            q, k, w, do, dvn, dstates, dsT.contiguous() if dsT is not None else ds0, ds0, cu, first, H, scale,
            K=K, V=V, C=C, BK=BK, BV=BVS, HAS_DST=dsT is not None, PREC=prec, **_launch("state_backward", K, prec))
        dk, dv = _buffer(k.shape, k.dtype, dev), _buffer(v.shape, v.dtype, dev)
        dbeta = _buffer(beta.shape, beta.dtype, dev)
        wy_launch = _launch("wy_backward", K, prec)
        _wy_backward_kernel[(n_chunks, H)](
            q, k, v, beta, m, states, dstates, vnew, dvn, do, dk, dv, dbeta, index, cu, H, scale,
            K=K, V=V, C=C, BK=BK, BV=min(BV, wy_launch.pop("block_v", BV)), PREC=prec, **wy_launch)
        return dq, dk, dv, dbeta, (ds0 if ctx.has_s0 else None), None, None, None, None, None


SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MAX_KEY_DIM = 256


def _delta_rule_triton(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, *, scale: float,
                       initial_state: Tensor | None = None,
                       cu_seqlens: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The delta rule by the Triton kernels; inputs already validated by :func:`seqzoo.ops.delta_rule`.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``; beta: ``[B, T, H]``; float32, bfloat16 or float16 (q, k, v are
            cast to their common dtype). ``K ≤ 128``.
        scale: multiplies q.
        initial_state: ``[N, H, K, V]`` (N = B, or the number of packed sequences) or None (zeros).
        cu_seqlens: None, or int ``[N + 1]`` boundaries of N sequences packed along T with B = 1.

    Returns ``(o [B, T, H, V] in the dtype of v, final_state [N, H, K, V] float32)``; differentiable in q, k, v,
    beta and initial_state.
    """
    B, T, H, K = q.shape
    dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
    if cu_seqlens is None:
        cu, index, first, n_chunks = _uniform_layout(B, T, CHUNK, q.device)
    else:
        cu = cu_seqlens.to(device=q.device, dtype=torch.int32).contiguous()
        index, first, n_chunks = chunk_layout(cu, CHUNK)
    s0 = None if initial_state is None else initial_state.float().contiguous()
    flat = [x.to(dtype).reshape(B * T, H, -1).contiguous() for x in (q, k, v)]
    o, sT = _DeltaRuleFunction.apply(*flat, beta.reshape(B * T, H).contiguous(), s0, cu, index, first,
                                     n_chunks, float(scale))
    return o.view(B, T, H, -1).to(v.dtype), sT


# torch.compile (dynamo + inductor) fails to re-compile these kernels as user-defined Triton kernels on torch 2.11 /
# Triton 3.6: inductor passes the Python float ``scale`` as fp64, and ``_dq_dv_intra_kernel``'s store of
# ``dot * scale`` then mixes an fp64 value into an fp32 block ("Block element type(fp32) and value element type(fp64)
# mismatch", seen compiling a DeltaNet model on the H200). A compiled model therefore calls them as an opaque eager
# region: the graph breaks around the op, the kernels are the same.
delta_rule_triton = torch.compiler.disable(_delta_rule_triton)
