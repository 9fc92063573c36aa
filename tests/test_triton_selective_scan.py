"""Tests of the Triton selective-scan kernels (seqzoo/ops/triton/selective_scan.py) against the float64 recurrence.

Mamba, arXiv 2312.00752: x_t = exp(Δ_t A) ⊙ x_{t-1} + Δ_t u_t B_t, y_t = x_t C_t + D u_t, checked through outputs,
final states and the gradients of u, Δ, A, B, C, D and the initial state, with every buffer the kernels fill
poisoned with NaN first; lengths that are not multiples of the checkpoint interval (32); variable-length packing
against running each sequence on its own.

* On CUDA (with Triton) the full checks run here.
* On CPU with Triton the same checks run on tiny shapes through Triton's interpreter, in a subprocess with
  ``TRITON_INTERPRET=1`` (the variable must be set before Triton is imported).
* Without Triton only the error checks run.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from interpreter_subprocess import run_under_interpreter

from seqzoo.core.errors import SeqzooError
from seqzoo.ops import selective_scan
from seqzoo.ops.triton import HAS_TRITON

CUDA = torch.cuda.is_available() and HAS_TRITON
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 1e-2}    # relative error (Frobenius) against float64
NAMES = ("u", "delta", "A", "B", "C", "D", "initial_state")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def make_inputs(batch, T, Dm, N, dtype, device, seed, skip=True):
    """u, Δ = softplus(·) > 0, A < 0, B, C, D (or None) in ``dtype`` (A in float32), float32 initial state."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    u, delta = randn(batch, T, Dm), F.softplus(randn(batch, T, Dm) - 1.0)
    A = -torch.rand(Dm, N, generator=gen, dtype=torch.float64) * 2.0
    B, C, D = randn(batch, T, N), randn(batch, T, N), randn(Dm)
    x0 = randn(batch, Dm, N).float().to(device)
    tensors = [u.to(dtype), delta.to(dtype), A.float(), B.to(dtype), C.to(dtype), D.float() if skip else None]
    return [None if t is None else t.to(device) for t in tensors], x0


def reference(tensors, x0):
    leaves = [None if t is None else t.detach().double().requires_grad_() for t in tensors + [x0]]
    y, x = selective_scan(*leaves[:6], initial_state=leaves[6], impl="recurrent")
    return leaves, y, x


def _grads(loss, tensors):
    present = [t for t in tensors if t is not None]
    found = iter(torch.autograd.grad(loss, present, allow_unused=True))
    return [None if t is None else next(found) for t in tensors]


def check_against_reference(batch, T, Dm, N, dtype, device, seed, skip=True, with_state=True):
    import seqzoo.ops.triton.selective_scan as kernels

    kernels.POISON_BUFFERS = True
    tensors, x0 = make_inputs(batch, T, Dm, N, dtype, device, seed, skip)
    x0 = x0 if with_state else torch.zeros_like(x0)
    leaves_ref, y_ref, x_ref = reference(tensors, x0)
    leaves = [None if t is None else t.clone().requires_grad_() for t in tensors]
    x0_leaf = x0.clone().requires_grad_() if with_state else None
    y, x = selective_scan(*leaves, initial_state=x0_leaf, impl="triton")
    assert y.dtype == dtype and y.shape == (batch, T, Dm) and x.dtype == torch.float32
    tol = TOLERANCE[dtype]
    assert rel(y, y_ref) < tol, ("y", rel(y, y_ref))
    assert rel(x, x_ref) < tol, ("final_state", rel(x, x_ref))
    gen = torch.Generator().manual_seed(seed + 1)
    gy = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(device)
    gx = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(device)
    grads_ref = _grads((y_ref * gy).sum() + (x_ref * gx).sum(), leaves_ref)
    grads = _grads((y.double() * gy).sum() + (x.double() * gx).sum(), leaves + [x0_leaf])
    for name, g, g_ref, t in zip(NAMES, grads, grads_ref, leaves + [x0_leaf]):
        if t is None:
            continue
        assert g.dtype == t.dtype and torch.isfinite(g).all(), name
        assert rel(g, g_ref) < tol, (name, rel(g, g_ref))


def check_varlen(lengths, Dm, N, dtype, device, seed):
    """Packed sequences (batch 1, ``cu_seqlens``) against each sequence run on its own in float64."""
    import seqzoo.ops.triton.selective_scan as kernels

    kernels.POISON_BUFFERS = True
    parts = [make_inputs(1, n, Dm, N, dtype, device, seed + i) for i, n in enumerate(lengths)]
    shared = parts[0][0]                                   # A and D are parameters: one set for every sequence
    for p in parts:
        p[0][2], p[0][5] = shared[2], shared[5]
    packed = [torch.cat([p[0][j] for p in parts], dim=1) for j in (0, 1, 3, 4)]
    u, delta, B, C = (t.clone().requires_grad_() for t in packed)
    A, D = shared[2].clone().requires_grad_(), shared[5].clone().requires_grad_()
    x0 = torch.cat([p[1] for p in parts]).requires_grad_()
    cu = torch.tensor([0] + lengths, device=device).cumsum(0).to(torch.int32)
    y, x = kernels.selective_scan_triton(u, delta, A, B, C, D, initial_state=x0, cu_seqlens=cu)
    A64, D64 = A.detach().double().requires_grad_(), D.detach().double().requires_grad_()
    seq_leaves, ys, xs = [], [], []
    for p in parts:
        leaves = [t.detach().double().requires_grad_() for t in (p[0][0], p[0][1], p[0][3], p[0][4], p[1])]
        y_i, x_i = selective_scan(leaves[0], leaves[1], A64, leaves[2], leaves[3], D64, initial_state=leaves[4],
                                  impl="recurrent")
        seq_leaves.append(leaves), ys.append(y_i), xs.append(x_i)
    y_ref, x_ref = torch.cat(ys, dim=1), torch.cat(xs)
    tol = TOLERANCE[dtype]
    assert rel(y, y_ref) < tol and rel(x, x_ref) < tol, (rel(y, y_ref), rel(x, x_ref))
    gy, gx = torch.randn_like(y_ref), torch.randn_like(x_ref)
    grads = torch.autograd.grad((y.double() * gy).sum() + (x.double() * gx).sum(), [u, delta, B, C, x0, A, D])
    flat = [t for leaves in seq_leaves for t in leaves] + [A64, D64]
    grads_ref = torch.autograd.grad((y_ref * gy).sum() + (x_ref * gx).sum(), flat, allow_unused=True)
    grads_ref = [torch.zeros_like(t) if g is None else g for t, g in zip(flat, grads_ref)]   # empty sequences
    for j, name in enumerate(("u", "delta", "B", "C", "initial_state")):
        g_ref = torch.cat([grads_ref[5 * i + j] for i in range(len(lengths))], dim=0 if j == 4 else 1)
        assert rel(grads[j], g_ref) < tol, (name, rel(grads[j], g_ref))
    assert rel(grads[5], grads_ref[-2]) < tol and rel(grads[6], grads_ref[-1]) < tol, "A, D"


# ----------------------------------------------------------------------------------------------------- on CUDA
@pytest.mark.skipif(not CUDA, reason="needs CUDA and Triton")
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16))
@pytest.mark.parametrize("T", (1, 37, 64, 65, 130, 1000))
def test_cuda_matches_float64_reference(dtype, T):
    check_against_reference(2, T, 200, 16, dtype, "cuda", seed=T)


@pytest.mark.skipif(not CUDA, reason="needs CUDA and Triton")
def test_cuda_no_skip_no_initial_state_odd_sizes():
    check_against_reference(3, 77, 50, 5, torch.float32, "cuda", seed=4, skip=False, with_state=False)


@pytest.mark.skipif(not CUDA, reason="needs CUDA and Triton")
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16))
def test_cuda_varlen_matches_separate_sequences(dtype):
    check_varlen([1, 37, 64, 65, 0, 130, 200], 96, 16, dtype, "cuda", seed=11)


@pytest.mark.skipif(not CUDA, reason="needs CUDA and Triton")
def test_cuda_segmented_scan():
    check_segmented("cuda", T=1000, lengths=[700, 0, 33, 1, 960], Dm=96, N=16)


@pytest.mark.skipif(not CUDA, reason="needs CUDA and Triton")
def test_cuda_sequential_scan_where_auto_would_segment():
    """The shapes above have few programs, so by default they segment; the sequential scan forced on them."""
    import seqzoo.ops.triton.selective_scan as kernels

    assert kernels._programs_to_segment(2, 200, torch.device("cuda")) > 0          # auto segments these shapes
    assert kernels._programs_to_segment(10 ** 4, 200, torch.device("cuda")) == 0   # but not a full GPU's worth
    saved, kernels.SEGMENTED = kernels.SEGMENTED, False
    try:
        check_against_reference(2, 1000, 200, 16, torch.bfloat16, "cuda", seed=12)
        check_varlen([1, 37, 0, 130, 200], 96, 16, torch.float32, "cuda", seed=13)
    finally:
        kernels.SEGMENTED = saved


@pytest.mark.skipif(not CUDA, reason="needs CUDA and Triton")
def test_cuda_auto_picks_triton_and_keeps_float64_on_chunk():
    tensors, x0 = make_inputs(2, 50, 40, 8, torch.float32, "cuda", seed=3)
    y_auto, x_auto = selective_scan(*tensors, initial_state=x0)
    y_tri, x_tri = selective_scan(*tensors, initial_state=x0, impl="triton")
    assert torch.equal(y_auto, y_tri) and torch.equal(x_auto, x_tri)
    y64, _ = selective_scan(*(t.double() for t in tensors), initial_state=x0)
    assert y64.dtype == torch.float64


# ------------------------------------------------------------------------------------------------- everywhere
def test_triton_impl_rejects_what_it_cannot_run():
    tensors, _ = make_inputs(1, 6, 4, 3, torch.float64, "cpu", seed=0)
    with pytest.raises(SeqzooError, match="triton"):
        selective_scan(*tensors, impl="triton")     # CPU tensors without the interpreter, and float64


# ------------------------------------------------------------------------------------ on CPU: the interpreter
def interpreter_checks():
    """Tiny shapes, run by ``python tests/test_triton_selective_scan.py`` with TRITON_INTERPRET=1."""
    check_against_reference(1, 37, 20, 5, torch.float32, "cpu", seed=1)              # two checkpoints, odd sizes
    check_against_reference(2, 33, 16, 4, torch.float32, "cpu", seed=2, skip=False, with_state=False)
    check_against_reference(1, 20, 16, 4, torch.bfloat16, "cpu", seed=3)
    check_varlen([5, 0, 33, 1], 16, 4, torch.float32, "cpu", seed=4)
    check_segmented("cpu", T=100, lengths=[70, 0, 33, 1, 96], Dm=16, N=4)


def check_segmented(device, T, lengths, Dm, N):
    """The segmented (chunk-parallel) scan, forced to segments of one checkpoint interval: same checks, and the
    layout really has several segments per sequence."""
    import seqzoo.ops.triton.selective_scan as kernels

    saved = kernels.SEGMENTED, kernels.SEGMENT_MIN, kernels.PROGRAMS_TARGET
    kernels.SEGMENTED, kernels.SEGMENT_MIN, kernels.PROGRAMS_TARGET = True, kernels.CHUNK, 10 ** 9
    try:
        assert kernels._segment_length(T, kernels._programs_to_segment(2, Dm, torch.device(device))) == kernels.CHUNK
        check_against_reference(2, T, Dm, N, torch.float32, device, seed=5)
        check_against_reference(1, T, Dm, N, torch.float32, device, seed=6, skip=False, with_state=False)
        check_against_reference(2, T, Dm, N, torch.bfloat16, device, seed=7)
        check_varlen(lengths, Dm, N, torch.float32, device, seed=8)
    finally:
        kernels.SEGMENTED, kernels.SEGMENT_MIN, kernels.PROGRAMS_TARGET = saved


@pytest.mark.skipif(not HAS_TRITON, reason="needs Triton")
@pytest.mark.skipif(CUDA, reason="the CUDA tests above cover it")
def test_interpreter_on_cpu():
    done = run_under_interpreter(__file__)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "interpreter checks passed" in done.stdout


if __name__ == "__main__":
    from seqzoo.ops.triton import interpreting

    assert interpreting(), "set TRITON_INTERPRET=1"
    torch.set_num_threads(1)
    interpreter_checks()
    print("interpreter checks passed")
