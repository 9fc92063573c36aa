"""The selective scan of Mamba: a diagonal linear recurrence whose step size Δ, input matrix B and output matrix C
depend on the input.

Paper: "Mamba: Linear-Time Sequence Modeling with Selective State Spaces", Gu and Dao, 2023, arXiv 2312.00752
(sec. 3.2, Algorithm 2, and the zero-order-hold discretisation of eq. 4 with the simplified B̄ = Δ B of sec. 3.5).
The log-depth scan over pairs follows Blelloch, "Prefix Sums and Their Applications", 1990, and Hillis and Steele,
"Data Parallel Algorithms", 1986 (as used for linear recurrences by Martin and Cundy, arXiv 1709.04057).

Shapes: u, Δ ``[B, T, Dm]``; A ``[Dm, N]`` (negative real parts in Mamba); B, C ``[B, T, N]``; D ``[Dm]`` or None;
state x ``[B, Dm, N]``. For every channel d and state index n:

    x_t = exp(Δ_t A) ⊙ x_{t-1} + (Δ_t u_t) B_t          i.e. x_t[d, n] = exp(Δ_t[d] A[d, n]) x_{t-1}[d, n]
                                                                         + Δ_t[d] u_t[d] B_t[n]
    y_t = x_t C_t + D ⊙ u_t                              i.e. y_t[d] = Σ_n x_t[d, n] C_t[n] + D[d] u_t[d]

This is a first-order linear recurrence h_t = a_t ⊙ h_{t-1} + b_t with a_t = exp(Δ_t A), b_t = Δ_t u_t B_t, so any
scan over the pairs (a_t, b_t) with the associative operator (a1, b1) ∘ (a2, b2) = (a1 a2, a2 b1 + b2) computes it.
There is no ``scale`` argument (Δ plays that role).

Forms (``impl``), the fast ones processing ``chunk_size`` steps at a time so that ``[B, chunk_size, Dm, N]`` is the
largest temporary of the forward pass:

* ``"recurrent"``: the equations above, one step at a time (the reference).
* ``"chunk"`` (default): per block, a = exp(Δ A) and b = Δ u B are formed for the whole block at once, then a
  two-level scan: the block is cut into sub-chunks of L ≈ √chunk_size steps; (1) all sub-chunks are scanned at
  once, step by step, from a zero state; (2) the true state at each sub-chunk end follows sequentially as
  x_end[c] = h_end[c] + (Π_{sub-chunk c} a) x_end[c−1]; (3) every position adds (Π_{r≤t} a_r) x_end[c−1], the
  running product again taken for all sub-chunks at once. About 3 L python-level steps per block instead of
  chunk_size. Its backward pass is the same scan run backwards in time: with λ_t = ∂L/∂h_t (total),
  λ_t = g_t + a_{t+1} λ_{t+1}, ∂L/∂b_t = λ_t, ∂L/∂a_t = λ_t h_{t−1}, ∂L/∂h_0 = a_1 λ_1.
  Only products of factors exp(Δ A) ≤ 1 are formed (no exp of a cumulative sum), so it is stable for any decay.
* ``"parallel"``: a Hillis–Steele log-depth scan over the pairs (log₂ chunk_size rounds), pure autograd; it does
  O(T log T) work and is slower than "chunk" on CPU, kept as an independent second form.
* ``"triton"``: Triton kernels, forward and backward (:mod:`seqzoo.ops.triton.selective_scan`): the state of a
  block of channels stays in registers while time is walked step by step; the backward walks time in reverse from
  checkpoints saved every 32 steps (``chunk_size`` is not used). Float32, bfloat16 or float16 inputs. ``"auto"``
  picks it for CUDA tensors when Triton is installed; on CPU ``"auto"`` stays ``"chunk"``.

On CPU this op is bound by memory traffic rather than arithmetic: every form streams the T·Dm·N values of a, b
and h several times, whereas the reference keeps its Dm·N state in cache and pays python overhead per step, so
the speed-up of "chunk" over "recurrent" is far smaller than for the matrix-state ops (see docs/benchmarks.md).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._common import acc_dtype, check_chunk_size, check_same_device, check_shape, check_tensor, fail, no_autocast, \
    auto_for_length, resolve_impl, start_state
from .triton import triton_usable

OP = "selective_scan"


# --------------------------------------------------------------------------------------------------- reference
def _recurrent(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, x: Tensor,
               chunk_size: int) -> tuple[Tensor, Tensor]:
    outputs = []
    for u_t, delta_t, B_t, C_t in zip(u.unbind(1), delta.unbind(1), B.unbind(1), C.unbind(1)):
        decay = torch.exp(delta_t[:, :, None] * A)                         # exp(Δ_t A): [B, Dm, N]
        x = decay * x + (delta_t * u_t)[:, :, None] * B_t[:, None, :]
        outputs.append((x * C_t[:, None, :]).sum(-1))                      # x_t C_t: [B, Dm]
    return torch.stack(outputs, dim=1), x


# ---------------------------------------------------------------------------------------- two-level scan kernel
def _scan_(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    """h_t = a_t ⊙ h_{t−1} + b_t along dim 1 of contiguous ``a, b: [B, T, ...]`` from ``h0: [B, ...]``, written
    into ``b`` (which is returned).

    No autograd. Two-level: sub-chunks of L ≈ √T steps are scanned all at once (L steps), then joined
    (T / L + L steps), so the python loop runs about 3 √T times, each step an in-place multiply-add on
    ``[B, T / L, ...]`` values.
    """
    batch, T = a.shape[:2]
    M = a[0, 0].numel()
    a, h0 = a.view(batch, T, M), h0.reshape(batch, M)
    L = max(1, math.isqrt(T))
    n = -(-T // L)
    if n * L != T:  # pad: a = 1, b = 0 leaves the state unchanged
        padded = torch.cat([b.view(batch, T, M), b.new_zeros(batch, n * L - T, M)], dim=1)
        _scan_(torch.cat([a, a.new_ones(batch, n * L - T, M)], dim=1), padded, h0)
        return b.copy_(padded[:, :T].view(b.shape))
    a = a.view(batch, n, L, M)
    h = b.view(batch, n, L, M)
    # (1) every sub-chunk from a zero state (the first from h0), all sub-chunks in parallel
    h[:, 0, 0].addcmul_(a[:, 0, 0], h0)
    for t in range(1, L):
        h[:, :, t].addcmul_(a[:, :, t], h[:, :, t - 1])
    if n > 1:
        # (2) exact state at each sub-chunk end, sequentially over sub-chunks
        through = a.prod(dim=2)                                            # Π a over each sub-chunk
        for c in range(1, n):
            h[:, c, L - 1].addcmul_(through[:, c], h[:, c - 1, L - 1])
        # (3) the incoming state decayed to every earlier position of sub-chunks 1 … n−1
        carry = h[:, :-1, L - 1].clone()
        for t in range(L - 1):
            carry.mul_(a[:, 1:, t])
            h[:, 1:, t].add_(carry)
    return b


class _LinearScan(torch.autograd.Function):
    """``h = scan(a, b, h0)`` with h_t = a_t ⊙ h_{t−1} + b_t; the backward pass is the reverse-time scan."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
        h = _scan_(a, b, h0)      # b is a temporary of the caller: the scan overwrites it with h
        ctx.mark_dirty(b)
        ctx.save_for_backward(a, h, h0)
        return h

    @staticmethod
    def backward(ctx, grad_h: Tensor):
        a, h, h0 = ctx.saved_tensors
        # λ_t = g_t + a_{t+1} λ_{t+1} (λ after the last step is 0): a forward scan of the time-reversed inputs
        a_next = torch.cat([a[:, 1:], torch.zeros_like(a[:, :1])], dim=1)
        lam = _scan_(a_next.flip(1), grad_h.flip(1), torch.zeros_like(h0)).flip(1)
        h_prev = torch.cat([h0[:, None], h[:, :-1]], dim=1)
        return lam * h_prev, lam, a[:, 0] * lam[:, 0]


def _hillis_steele(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    """The same scan as :func:`_scan_` in log₂ T rounds of (a1, b1) ∘ (a2, b2) = (a1 a2, a2 b1 + b2)."""
    b = torch.cat([b[:, :1] + a[:, :1] * h0[:, None], b[:, 1:]], dim=1)   # fold h0 into the first step
    shift = 1
    while shift < a.shape[1]:
        # position t combines with position t − shift (everything before it is already folded in there)
        b = torch.cat([b[:, :shift], a[:, shift:] * b[:, :-shift] + b[:, shift:]], dim=1)
        a = torch.cat([a[:, :shift], a[:, shift:] * a[:, :-shift]], dim=1)
        shift *= 2
    return b


def _blocked(scan, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, x: Tensor,
             chunk_size: int) -> tuple[Tensor, Tensor]:
    """Run ``scan`` over blocks of ``chunk_size`` steps: [B, chunk, Dm, N] is the largest temporary."""
    batch, T, Dm = u.shape
    outputs = []
    for start in range(0, T, chunk_size):
        part = slice(start, start + chunk_size)
        a = (delta[:, part, :, None] * A).exp_()                          # [B, Tb, Dm, N]
        b = (delta[:, part] * u[:, part])[..., None] * B[:, part, None, :]
        h = scan(a, b, x)                                                   # [B, Tb, Dm, N]
        outputs.append((h @ C[:, part, :, None]).squeeze(-1))              # y_t = x_t C_t
        x = h[:, -1]
    return torch.cat(outputs, dim=1), x


def _chunk(u, delta, A, B, C, x, chunk_size):
    return _blocked(_LinearScan.apply, u, delta, A, B, C, x, chunk_size)


def _parallel(u, delta, A, B, C, x, chunk_size):
    return _blocked(_hillis_steele, u, delta, A, B, C, x, chunk_size)


_IMPLS = {"recurrent": _recurrent, "chunk": _chunk, "parallel": _parallel}
_TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _triton_fits(tensors) -> bool:
    return triton_usable(*tensors) and all(t.dtype in _TRITON_DTYPES for t in tensors)


def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None, *,
                   initial_state: Tensor | None = None, impl: str = "auto",
                   chunk_size: int = 256) -> tuple[Tensor, Tensor]:
    """Mamba's selective scan ``x_t = exp(Δ_t A) ⊙ x_{t-1} + (Δ_t u_t) B_t``, ``y_t = x_t C_t + D u_t``.

    Args:
        u, delta: ``[B, T, Dm]`` (Δ > 0, typically a softplus output); A: ``[Dm, N]`` (≤ 0 for a stable scan;
            not checked); B, C: ``[B, T, N]``; D: ``[Dm]`` skip weights or None.
        initial_state: ``[B, Dm, N]`` or None (zeros).
        impl: "auto" (= "triton" for CUDA tensors when Triton is installed, else "chunk"; "recurrent" for T ≤ 4,
            i.e. decoding), "recurrent", "chunk", "parallel" or "triton".
        chunk_size: time steps processed at once by the pure-PyTorch fast forms (bounds memory to
            [B, chunk_size, Dm, N]); not used by "triton".

    There is no ``scale`` argument. Returns ``(y, final_state)``: y ``[B, T, Dm]`` in the dtype of u;
    final_state ``[B, Dm, N]`` in float32 (float64 for float64 inputs).
    """
    check_tensor(OP, "u", u, "B, T, Dm")
    batch, T, Dm = u.shape
    check_shape(OP, "delta", delta, (batch, T, Dm), "B, T, Dm")
    check_tensor(OP, "A", A, "Dm, N")
    if A.shape[0] != Dm:
        raise fail(OP, f"A must have shape [Dm, N] with Dm = {Dm} like u, got {list(A.shape)}")
    N = A.shape[1]
    check_shape(OP, "B", B, (batch, T, N), "B, T, N")
    check_shape(OP, "C", C, (batch, T, N), "B, T, N")
    if D is not None:
        check_shape(OP, "D", D, (Dm,), "Dm")
    device = check_same_device(OP, u=u, delta=delta, A=A, B=B, C=C, D=D)
    tensors = [t for t in (u, delta, A, B, C, D) if t is not None]
    auto = "triton" if u.is_cuda and _triton_fits(tensors) else "chunk"
    impl = resolve_impl(OP, impl, tuple(_IMPLS) + ("triton",), auto_for_length(auto, u.shape[1]))
    chunk_size = check_chunk_size(OP, chunk_size)
    if impl == "triton":
        if not _triton_fits(tensors):
            raise fail(OP, "impl 'triton' needs Triton, CUDA tensors (or CPU tensors with TRITON_INTERPRET=1) and "
                           "float32, bfloat16 or float16 inputs; use impl 'chunk' otherwise")
        x = start_state(OP, initial_state, (batch, Dm, N), "B, Dm, N", torch.float32, device)
        if T == 0:
            return u.new_empty(batch, 0, Dm), x
        from .triton.selective_scan import selective_scan_triton

        return selective_scan_triton(u, delta, A, B, C, D, initial_state=None if initial_state is None else x)
    dtype = acc_dtype(u, delta, A, B, C, *([] if D is None else [D]))
    x = start_state(OP, initial_state, (batch, Dm, N), "B, Dm, N", dtype, device)
    if T == 0:
        return u.new_empty(batch, 0, Dm), x
    u_acc = u.to(dtype)
    with no_autocast(u_acc):
        y, x = _IMPLS[impl](u_acc, delta.to(dtype), A.to(dtype), B.to(dtype), C.to(dtype), x, chunk_size)
    if D is not None:
        y = y + D.to(dtype) * u_acc
    return y.to(u.dtype), x
