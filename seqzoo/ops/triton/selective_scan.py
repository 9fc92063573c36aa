"""Triton kernels for Mamba's selective scan, forward and backward.

Paper: "Mamba: Linear-Time Sequence Modeling with Selective State Spaces", Gu and Dao, 2023, arXiv 2312.00752
(sec. 3.2-3.3, Algorithm 2; the zero-order-hold discretisation with B̄ = Δ B of sec. 3.5). As in the paper's
hardware-aware scan, the state stays on chip: each program holds the ``[BLOCK_D, N]`` state of one sequence and a
block of channels in registers and walks time step by step; the kernels are written for this package from the
equations below.

Shapes: u, Δ ``[B, T, Dm]``; A ``[Dm, N]``; B, C ``[B, T, N]``; D ``[Dm]`` or None; state x ``[B, Dm, N]`` (float32).

Forward, for every channel d and state index n (a_t = exp(Δ_t A), b_t = Δ_t u_t B_t):

    x_t = a_t ⊙ x_{t-1} + b_t,        y_t = x_t C_t + D ⊙ u_t

The state entering every CH-th step (CH = 32) is saved as a checkpoint.

Backward, scanning time in reverse with λ_t = ∂L/∂x_t (total; λ after the last step is ∂L/∂x_T):

    λ_t      = g_t C_tᵀ + a_{t+1} ⊙ λ_{t+1}                 (g_t = ∂L/∂y_t)
    ∂L/∂C_t  = Σ_d g_t[d] x_t[d, :]
    ∂L/∂B_t  = Σ_d Δ_t[d] u_t[d] λ_t[d, :]
    ∂L/∂u_t  = Δ_t (λ_t B_t) + D g_t,        ∂L/∂D = Σ_t g_t u_t
    ∂L/∂Δ_t  = u_t (λ_t B_t) + Σ_n λ_t x_{t-1} a_t A
    ∂L/∂A    = Σ_t λ_t ⊙ x_{t-1} ⊙ a_t Δ_t,        ∂L/∂x_0 = a_1 ⊙ λ_1

x_{t-1} is not saved: for each chunk of CH steps (last chunk first) the states are recomputed from its checkpoint
into a small per-program scratch buffer (cache-resident), then the chunk is walked backwards. Sums over channels
(∂B, ∂C) and over batch (∂A, ∂D) are written per channel block / sequence and added up afterwards
(deterministic, no atomics).

Variable-length packing (``cu_seqlens``, batch 1): the state is reset at every boundary, with per-sequence
initial and final states ``[N_seq, Dm, N]``.

Segmented scan (``SEGMENTED``; used where the sequences alone leave the GPU's multiprocessors idle). One program
per (sequence, channel block) walks the whole sequence, which leaves most of a GPU idle when there are few
sequences. The recurrence is linear in the state, so each sequence can be cut into segments k of whole checkpoint
intervals, with P_k = exp(A Σ_{t∈k} Δ_t):

    forward:   E_k = segment k's final state from a zero start              (all segments in parallel)
               h_{k+1} = P_k ⊙ h_k + E_k,  h_0 = x_0                         (carry over segments, sequential)
               the scan of every segment from h_k: y, checkpoints            (all segments in parallel)
    backward:  L_k = the λ walk of segment k from zero (its own outputs)     (all segments in parallel)
               R_{k−1} = P_k ⊙ R_k + L_k,  R_last = ∂L/∂x_T                  (carry, last segment first)
               the backward above on every segment with R_k as its ∂L/∂x_T   (all segments in parallel)

and ∂L/∂x_0 = P_0 ⊙ R_0 + L_0. Every result equals the sequential scan's (up to rounding).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from . import HAS_TRITON, cached_layout, patch_interpreter
from .delta_rule import chunk_layout

CHUNK = 32          # steps between checkpoints of the state (and length of the backward's recompute buffer)

if HAS_TRITON:
    import triton
    import triton.language as tl

    patch_interpreter()

    @triton.jit
    def _channel_tile(blk, Dm, N: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr):
        """The ``[BD, BN]`` state tile of channel block ``blk``: channel and state indices, their masks, and the
        offsets of its elements in a ``[Dm, N]`` array."""
        d = blk * BD + tl.arange(0, BD)
        nn = tl.arange(0, BN)
        dmask, nmask = d < Dm, nn < N
        return d, nn, dmask, nmask, dmask[:, None] & nmask[None, :], d[:, None] * N + nn[None, :]

    @triton.jit
    def _scan_forward_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, x0_ptr, y_ptr, xT_ptr, ckpt_ptr,
                             dsum_ptr, cu_ptr, first_ptr, Dm, N: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr,
                             CH: tl.constexpr, HAS_D: tl.constexpr, HAS_X0: tl.constexpr, STATE_ONLY: tl.constexpr):
        """Per (sequence, channel block): x_t = exp(Δ_t A) x_{t-1} + Δ_t u_t B_t, y_t = x_t C_t + D u_t, step by
        step; saves the state entering every CH-th step. STATE_ONLY: only the final state and ΣΔ_t (no y, no
        checkpoints)."""
        seq, blk = tl.program_id(0).to(tl.int64), tl.program_id(1)
        bos = tl.load(cu_ptr + seq).to(tl.int64)
        eos = tl.load(cu_ptr + seq + 1).to(tl.int64)
        first = tl.load(first_ptr + seq).to(tl.int64)
        d, nn, dmask, nmask, smask, soff = _channel_tile(blk, Dm, N, BD, BN)
        A2 = tl.load(A_ptr + soff, mask=smask, other=0.0).to(tl.float32) * 1.4426950408889634   # A log2(e)
        if HAS_D:
            Dskip = tl.load(D_ptr + d, mask=dmask, other=0.0).to(tl.float32)
        if HAS_X0:
            x = tl.load(x0_ptr + seq * Dm * N + soff, mask=smask, other=0.0).to(tl.float32)
        else:
            x = tl.zeros([BD, BN], dtype=tl.float32)
        dsum = tl.zeros([BD], dtype=tl.float32)
        for c in range(tl.cdiv(eos - bos, CH)):
            if not STATE_ONLY:
                tl.store(ckpt_ptr + (first + c) * Dm * N + soff, x, mask=smask)
            t0 = bos + c * CH
            for t in range(t0, tl.minimum(t0 + CH, eos)):
                dt = tl.load(delta_ptr + t * Dm + d, mask=dmask, other=0.0).to(tl.float32)
                ut = tl.load(u_ptr + t * Dm + d, mask=dmask, other=0.0).to(tl.float32)
                Bt = tl.load(B_ptr + t * N + nn, mask=nmask, other=0.0).to(tl.float32)
                x = tl.exp2(dt[:, None] * A2) * x + (dt * ut)[:, None] * Bt[None, :]
                if STATE_ONLY:
                    dsum += dt
                else:
                    Ct = tl.load(C_ptr + t * N + nn, mask=nmask, other=0.0).to(tl.float32)
                    y = tl.sum(x * Ct[None, :], axis=1)
                    if HAS_D:
                        y += Dskip * ut
                    tl.store(y_ptr + t * Dm + d, y.to(y_ptr.dtype.element_ty), mask=dmask)
        tl.store(xT_ptr + seq * Dm * N + soff, x, mask=smask)
        if STATE_ONLY:
            tl.store(dsum_ptr + seq * Dm + d, dsum, mask=dmask)

    @triton.jit
    def _scan_backward_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, dy_ptr, dxT_ptr, ckpt_ptr, scratch_ptr,
                              du_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dx0_ptr, cu_ptr, first_ptr,
                              Dm, NT, N: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr, CH: tl.constexpr,
                              HAS_D: tl.constexpr, HAS_DXT: tl.constexpr):
        """Per (sequence, channel block): the reverse-time scan of the module docstring, chunk by chunk."""
        seq, blk = tl.program_id(0).to(tl.int64), tl.program_id(1)
        n_blocks = tl.num_programs(1)
        bos = tl.load(cu_ptr + seq).to(tl.int64)
        eos = tl.load(cu_ptr + seq + 1).to(tl.int64)
        first = tl.load(first_ptr + seq).to(tl.int64)
        d, nn, dmask, nmask, smask, soff = _channel_tile(blk, Dm, N, BD, BN)
        A = tl.load(A_ptr + soff, mask=smask, other=0.0).to(tl.float32)
        A2 = A * 1.4426950408889634
        if HAS_D:
            Dskip = tl.load(D_ptr + d, mask=dmask, other=0.0).to(tl.float32)
        dD = tl.zeros([BD], dtype=tl.float32)
        dA = tl.zeros([BD, BN], dtype=tl.float32)
        if HAS_DXT:
            carry = tl.load(dxT_ptr + seq * Dm * N + soff, mask=smask, other=0.0).to(tl.float32)   # a_{t+1} λ_{t+1}
        else:
            carry = tl.zeros([BD, BN], dtype=tl.float32)
        scratch = scratch_ptr + (seq * n_blocks + blk) * CH * BD * BN
        local = tl.arange(0, BD)[:, None] * BN + nn[None, :]
        partial = blk.to(tl.int64) * NT * N                     # this channel block's slice of ∂B, ∂C
        n_chunks = tl.cdiv(eos - bos, CH)
        for cc in range(n_chunks):
            c = n_chunks - 1 - cc
            t0 = bos + c * CH
            steps = tl.minimum(CH, eos - t0)
            start = tl.load(ckpt_ptr + (first + c) * Dm * N + soff, mask=smask, other=0.0)
            # recompute x_t of the chunk into the scratch buffer (slot j holds x after step t0 + j)
            x = start
            for j in range(steps):
                t = t0 + j
                dt = tl.load(delta_ptr + t * Dm + d, mask=dmask, other=0.0).to(tl.float32)
                ut = tl.load(u_ptr + t * Dm + d, mask=dmask, other=0.0).to(tl.float32)
                Bt = tl.load(B_ptr + t * N + nn, mask=nmask, other=0.0).to(tl.float32)
                x = tl.exp2(dt[:, None] * A2) * x + (dt * ut)[:, None] * Bt[None, :]
                tl.store(scratch + j * BD * BN + local, x)
            tl.debug_barrier()
            for jj in range(steps):
                j = steps - 1 - jj
                t = t0 + j
                dt = tl.load(delta_ptr + t * Dm + d, mask=dmask, other=0.0).to(tl.float32)
                ut = tl.load(u_ptr + t * Dm + d, mask=dmask, other=0.0).to(tl.float32)
                Bt = tl.load(B_ptr + t * N + nn, mask=nmask, other=0.0).to(tl.float32)
                Ct = tl.load(C_ptr + t * N + nn, mask=nmask, other=0.0).to(tl.float32)
                gy = tl.load(dy_ptr + t * Dm + d, mask=dmask, other=0.0).to(tl.float32)
                x_t = tl.load(scratch + j * BD * BN + local)
                x_prev = tl.load(scratch + (j - 1) * BD * BN + local, mask=(tl.zeros([BD, BN], tl.int32) + j) > 0,
                                 other=0.0)
                x_prev = tl.where(j > 0, x_prev, start)
                a = tl.exp2(dt[:, None] * A2)
                lam = carry + gy[:, None] * Ct[None, :]
                tl.store(dC_ptr + partial + t * N + nn, tl.sum(gy[:, None] * x_t, axis=0), mask=nmask)
                tl.store(dB_ptr + partial + t * N + nn, tl.sum((dt * ut)[:, None] * lam, axis=0), mask=nmask)
                lam_B = tl.sum(lam * Bt[None, :], axis=1)
                lam_xa = lam * x_prev * a
                du = dt * lam_B
                if HAS_D:
                    du += Dskip * gy
                    dD += gy * ut
                tl.store(du_ptr + t * Dm + d, du.to(du_ptr.dtype.element_ty), mask=dmask)
                ddt = ut * lam_B + tl.sum(lam_xa * A, axis=1)
                tl.store(ddelta_ptr + t * Dm + d, ddt.to(ddelta_ptr.dtype.element_ty), mask=dmask)
                dA += lam_xa * dt[:, None]
                carry = a * lam
            tl.debug_barrier()
        tl.store(dx0_ptr + seq * Dm * N + soff, carry, mask=smask)
        tl.store(dA_ptr + seq * Dm * N + soff, dA, mask=smask)
        if HAS_D:
            tl.store(dD_ptr + seq * Dm + d, dD, mask=dmask)

    @triton.jit
    def _scan_lambda_kernel(delta_ptr, A_ptr, C_ptr, dy_ptr, out_ptr, cu_ptr, Dm, N: tl.constexpr,
                            BD: tl.constexpr, BN: tl.constexpr):
        """Per (segment, channel block): the gradient reaching the state that enters the segment from the segment's
        own outputs only, i.e. the λ recursion carry_{t-1} = a_t (carry_t + g_t C_tᵀ) walked backwards from 0."""
        seg, blk = tl.program_id(0).to(tl.int64), tl.program_id(1)
        bos = tl.load(cu_ptr + seg).to(tl.int64)
        eos = tl.load(cu_ptr + seg + 1).to(tl.int64)
        d, nn, dmask, nmask, smask, soff = _channel_tile(blk, Dm, N, BD, BN)
        A2 = tl.load(A_ptr + soff, mask=smask, other=0.0).to(tl.float32) * 1.4426950408889634
        carry = tl.zeros([BD, BN], dtype=tl.float32)
        for tt in range(eos - bos):
            t = eos - 1 - tt
            dt = tl.load(delta_ptr + t * Dm + d, mask=dmask, other=0.0).to(tl.float32)
            Ct = tl.load(C_ptr + t * N + nn, mask=nmask, other=0.0).to(tl.float32)
            gy = tl.load(dy_ptr + t * Dm + d, mask=dmask, other=0.0).to(tl.float32)
            carry = tl.exp2(dt[:, None] * A2) * (carry + gy[:, None] * Ct[None, :])
        tl.store(out_ptr + seg * Dm * N + soff, carry, mask=smask)

    @triton.jit
    def _segment_carry_kernel(local_ptr, sum_delta_ptr, A_ptr, init_ptr, entering_ptr, final_ptr, seg_first_ptr,
                              Dm, N: tl.constexpr, BLOCK: tl.constexpr, HAS_INIT: tl.constexpr,
                              REVERSE: tl.constexpr):
        """Per (sequence, block of its D·N state values), over the sequence's segments k (in order, or last first
        when REVERSE): entering[k] = h; h = exp(A Σ_{t∈k} Δ_t) ⊙ h + local[k]; final = h. Forward: h is the state
        and local[k] the segment's final state from a zero start. Backward: h is the gradient reaching a segment's
        last state, local[k] the λ walk of ``_scan_lambda_kernel``, final the gradient of the initial state."""
        seq, blk = tl.program_id(0).to(tl.int64), tl.program_id(1)
        k0 = tl.load(seg_first_ptr + seq).to(tl.int64)
        k1 = tl.load(seg_first_ptr + seq + 1).to(tl.int64)
        idx = blk * BLOCK + tl.arange(0, BLOCK)
        mask = idx < Dm * N
        A2 = tl.load(A_ptr + idx, mask=mask, other=0.0).to(tl.float32) * 1.4426950408889634
        if HAS_INIT:
            h = tl.load(init_ptr + seq * Dm * N + idx, mask=mask, other=0.0).to(tl.float32)
        else:
            h = tl.zeros([BLOCK], dtype=tl.float32)
        for j in range(k1 - k0):
            if REVERSE:
                k = k1 - 1 - j
            else:
                k = k0 + j
            tl.store(entering_ptr + k * Dm * N + idx, h, mask=mask)
            sd = tl.load(sum_delta_ptr + k * Dm + idx // N, mask=mask, other=0.0)
            h = tl.exp2(sd * A2) * h + tl.load(local_ptr + k * Dm * N + idx, mask=mask, other=0.0)
        tl.store(final_ptr + seq * Dm * N + idx, h, mask=mask)


# ------------------------------------------------------------------------------------------------------ host side
POISON_BUFFERS = False     # tests: buffers the kernels fill start as NaN, so an unwritten element shows up


def _buffer(shape, dtype, device) -> Tensor:
    out = torch.empty(shape, dtype=dtype, device=device)
    return out.fill_(float("nan")) if POISON_BUFFERS else out


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _channel_block(Dm: int, N: int, sequences: int) -> int:
    """Channels per program: 64 (fewer for large N, at most 2048 state values per program), or fewer still when that
    leaves fewer than ~2 programs per GPU core."""
    block = max(1, min(64, _pow2(Dm), 2048 // max(2, _pow2(N))))
    while block > 16 and sequences * triton.cdiv(Dm, block) < 264:
        block //= 2
    return block


# The segmented scan of the module docstring. None: used when the sequences alone give fewer programs of 64 channels
# than the GPU has multiprocessors (measured on an H200, bf16, Dm 2048, N 16: at 256 such programs, B8·T2048, the
# sequential scan's forward is 1.7x faster; at 128, B4·T8192, the segmented one is 2.5x faster). True: whenever it
# gives a sequence several segments; False: never.
SEGMENTED: bool | None = None
SEGMENT_MIN = 4 * CHUNK        # shortest segment
PROGRAMS_TARGET = 2048         # (segments or sequences) × channel blocks to aim for
CARRY_BLOCK = 1024             # state values per program of the carry kernel


@functools.lru_cache(maxsize=8)
def _multiprocessors(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 0


def _programs_to_segment(sequences: int, Dm: int, device: torch.device) -> int:
    """The sequential scan's programs of 64 channels where SEGMENTED says to segment them, else 0. Never while a
    CUDA graph is being captured: the segment layout is built with a device-host sync, which capture forbids."""
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return 0
    programs = sequences * -(-Dm // 64)
    limit = {None: _multiprocessors(device), True: PROGRAMS_TARGET, False: 0}[SEGMENTED]
    return programs if programs < limit else 0


def _segment_length(max_len: int, programs: int) -> int:
    """Segment length (whole checkpoint intervals, at least SEGMENT_MIN) that brings ``programs`` sequential programs
    near PROGRAMS_TARGET, or 0 where the longest sequence would be one segment."""
    per_sequence = -(-PROGRAMS_TARGET // programs)          # segments wanted per sequence
    length = -(-max_len // per_sequence)
    length = max(SEGMENT_MIN, -(-length // CHUNK) * CHUNK)
    return length if length < max_len else 0


def _segments(cu: Tensor, first: Tensor, length: int, NT: int):
    """Layout of the segments of every sequence: (cu_seg [NSeg + 1] token bounds, first_seg [NSeg] checkpoint index
    of each segment's first interval, seg_first [NS + 1] first segment of each sequence, NSeg)."""
    index, seg_first, n_seg = chunk_layout(cu, length)
    seq, start = index[:, 0].long(), index[:, 1].long()
    cu_seg = torch.cat([start, start.new_tensor([NT])]).to(torch.int32)
    first_seg = (first.long()[seq] + (start - cu.long()[seq]) // CHUNK).to(torch.int32)
    seg_first = torch.cat([seg_first.long(), seg_first.new_tensor([n_seg]).long()]).to(torch.int32)
    return cu_seg, first_seg, seg_first, n_seg


@cached_layout
def _uniform_layout(batch: int, T: int, device) -> tuple[Tensor, Tensor, int]:
    """(cu [batch + 1] sequence bounds, first [batch] first checkpoint of each sequence, checkpoints) of equal-length
    sequences (cached)."""
    n = -(-T // CHUNK)
    cu = torch.arange(0, (batch + 1) * T, T, device=device, dtype=torch.int32)
    return cu, torch.arange(0, batch * n, n, device=device, dtype=torch.int32), batch * n


class _SelectiveScanFunction(torch.autograd.Function):
    """Token-major inputs with batch folded into time: u, delta ``[NT, Dm]``, B, C ``[NT, N]``, A ``[Dm, N]``,
    D ``[Dm]`` or None, x0 ``[NS, Dm, N]`` float32 or None; sequences given by ``cu`` (int32 ``[NS + 1]``);
    ``segments`` the output of :func:`_segments` or None."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, x0, cu, first, n_chunks: int, segments):
        NT, Dm = u.shape
        N, NS, dev, f32 = A.shape[1], cu.numel() - 1, u.device, torch.float32
        BN = max(2, _pow2(N))
        y = _buffer((NT, Dm), u.dtype, dev)
        xT = _buffer((NS, Dm, N), f32, dev)
        ckpt = _buffer((n_chunks, Dm, N), f32, dev)
        D_arg = D if D is not None else A
        if segments is None:
            BD = _channel_block(Dm, N, NS)
            _scan_forward_kernel[(NS, triton.cdiv(Dm, BD))](
                u, delta, A, B, C, D_arg, x0 if x0 is not None else xT, y, xT, ckpt, xT, cu, first, Dm,
                N=N, BD=BD, BN=BN, CH=CHUNK, HAS_D=D is not None, HAS_X0=x0 is not None, STATE_ONLY=False,
                num_warps=4)
            sum_delta = None
        else:
            cu_seg, first_seg, seg_first, n_seg = segments
            BD = _channel_block(Dm, N, n_seg)
            grid = (n_seg, triton.cdiv(Dm, BD))
            ends = _buffer((n_seg, Dm, N), f32, dev)          # each segment's final state from a zero start
            sum_delta = _buffer((n_seg, Dm), f32, dev)         # and its Σ Δ_t per channel
            _scan_forward_kernel[grid](u, delta, A, B, C, D_arg, ends, y, ends, ckpt, sum_delta, cu_seg, first_seg,
                                       Dm, N=N, BD=BD, BN=BN, CH=CHUNK, HAS_D=D is not None, HAS_X0=False,
                                       STATE_ONLY=True, num_warps=4)
            entering = _buffer((n_seg, Dm, N), f32, dev)
            _segment_carry_kernel[(NS, triton.cdiv(Dm * N, CARRY_BLOCK))](
                ends, sum_delta, A, x0 if x0 is not None else ends, entering, xT, seg_first, Dm, N=N,
                BLOCK=CARRY_BLOCK, HAS_INIT=x0 is not None, REVERSE=False)
            _scan_forward_kernel[grid](u, delta, A, B, C, D_arg, entering, y, ends, ckpt, sum_delta, cu_seg,
                                       first_seg, Dm, N=N, BD=BD, BN=BN, CH=CHUNK, HAS_D=D is not None, HAS_X0=True,
                                       STATE_ONLY=False, num_warps=4)
        ctx.save_for_backward(u, delta, A, B, C, D, ckpt, cu, first, sum_delta)
        ctx.has_x0, ctx.segments = x0 is not None, segments
        ctx.set_materialize_grads(False)      # an unused final state costs no zero-filled gradient
        return y, xT

    @staticmethod
    def backward(ctx, dy, dxT):
        u, delta, A, B, C, D, ckpt, cu, first, sum_delta = ctx.saved_tensors
        NT, Dm = u.shape
        N, NS, dev, f32 = A.shape[1], cu.numel() - 1, u.device, torch.float32
        BN = max(2, _pow2(N))
        dy = dy.contiguous() if dy is not None else torch.zeros_like(u)
        du, ddelta = _buffer(u.shape, u.dtype, dev), _buffer(delta.shape, delta.dtype, dev)
        dx0 = _buffer((NS, Dm, N), f32, dev)
        if ctx.segments is None:
            programs, cu_run, first_run, dxT_run, has_dxT = NS, cu, first, dxT, dxT is not None
        else:
            cu_seg, first_seg, seg_first, n_seg = ctx.segments
            BD = _channel_block(Dm, N, n_seg)
            own = _buffer((n_seg, Dm, N), f32, dev)           # gradient reaching each segment's start, own outputs
            _scan_lambda_kernel[(n_seg, triton.cdiv(Dm, BD))](delta, A, C, dy, own, cu_seg, Dm, N=N, BD=BD, BN=BN,
                                                                num_warps=4)
            dxT_run = _buffer((n_seg, Dm, N), f32, dev)       # gradient reaching each segment's last state
            _segment_carry_kernel[(NS, triton.cdiv(Dm * N, CARRY_BLOCK))](
                own, sum_delta, A, dxT.contiguous() if dxT is not None else own, dxT_run, dx0, seg_first, Dm, N=N,
                BLOCK=CARRY_BLOCK, HAS_INIT=dxT is not None, REVERSE=True)
            programs, cu_run, first_run, has_dxT = n_seg, cu_seg, first_seg, True
        BD = _channel_block(Dm, N, programs)
        n_blocks = triton.cdiv(Dm, BD)
        dB_parts, dC_parts = _buffer((n_blocks, NT, N), f32, dev), _buffer((n_blocks, NT, N), f32, dev)
        dA_parts = _buffer((programs, Dm, N), f32, dev)
        dD_parts = _buffer((programs, Dm), f32, dev) if D is not None else None
        dx0_run = dx0 if ctx.segments is None else _buffer((programs, Dm, N), f32, dev)
        scratch = torch.empty(programs * n_blocks * CHUNK * BD * BN, dtype=f32, device=dev)
        _scan_backward_kernel[(programs, n_blocks)](
            u, delta, A, B, C, D if D is not None else A, dy, dxT_run.contiguous() if has_dxT else dx0_run, ckpt,
            scratch, du, ddelta, dA_parts, dB_parts, dC_parts, dD_parts if D is not None else dA_parts, dx0_run,
            cu_run, first_run, Dm, NT, N=N, BD=BD, BN=BN, CH=CHUNK, HAS_D=D is not None, HAS_DXT=has_dxT,
            num_warps=4)
        dA = dA_parts.sum(0).to(A.dtype)
        dB, dC = dB_parts.sum(0).to(B.dtype), dC_parts.sum(0).to(C.dtype)
        dD = dD_parts.sum(0).to(D.dtype) if D is not None else None
        return du, ddelta, dA, dB, dC, dD, (dx0 if ctx.has_x0 else None), None, None, None, None


def selective_scan_triton(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None, *,
                          initial_state: Tensor | None = None,
                          cu_seqlens: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The selective scan by the Triton kernels; inputs already validated by :func:`seqzoo.ops.selective_scan`.

    Args:
        u, delta: ``[Bt, T, Dm]``; A: ``[Dm, N]``; B, C: ``[Bt, T, N]``; D: ``[Dm]`` or None (float32, bfloat16 or
            float16 each).
        initial_state: ``[S, Dm, N]`` (S = Bt, or the number of packed sequences) or None (zeros).
        cu_seqlens: None, or int ``[S + 1]`` boundaries of S sequences packed along T with Bt = 1.

    Returns ``(y [Bt, T, Dm] in the dtype of u, final_state [S, Dm, N] float32)``; differentiable in every input.
    """
    batch, T, Dm = u.shape
    N = A.shape[1]
    if cu_seqlens is None:
        cu, first, n_chunks = _uniform_layout(batch, T, u.device)
    else:
        cu = cu_seqlens.to(device=u.device, dtype=torch.int32).contiguous()
        _, first, n_chunks = chunk_layout(cu, CHUNK)
    x0 = None if initial_state is None else initial_state.float().contiguous()
    NS, segments = cu.numel() - 1, None
    programs = _programs_to_segment(NS, Dm, u.device)
    if programs:
        max_len = T if cu_seqlens is None else int((cu[1:] - cu[:-1]).max())     # (a host sync)
        length = _segment_length(max_len, programs)
        if length:
            segments = _segments(cu, first, length, batch * T)
    y, xT = _SelectiveScanFunction.apply(
        u.reshape(batch * T, Dm).contiguous(), delta.reshape(batch * T, Dm).contiguous(), A.contiguous(),
        B.reshape(batch * T, N).contiguous(), C.reshape(batch * T, N).contiguous(),
        None if D is None else D.contiguous(), x0, cu, first, n_chunks, segments)
    return y.view(batch, T, Dm), xT
