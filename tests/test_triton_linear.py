"""Tests of the Triton kernels of linear_attention and decay_linear_attention (seqzoo/ops/triton/chunk_linear.py).

Every check compares against the float64 step-by-step reference (``impl="recurrent"``): outputs, final states and
the gradients of q, k, v, g and initial_state; relative error ≤ 1e-4 for float32 operands and ≤ 1e-2 for bfloat16
operands (against the reference run on the same rounded inputs; 3e-2 for dg, see TOL_DG). Inputs are fresh random tensors per case, every
buffer the kernels allocate is filled with NaN first (so an element a kernel forgets to write shows up), lengths
are not multiples of the chunk size, and variable-length packing (``cu_seqlens``) is checked against running each
sequence on its own.

Recurrence (arXiv 2006.16236; 2312.06635; 2405.21060): S_t = exp(g_t) S_{t-1} + k_tᵀ v_t, o_t = scale · q_t S_t,
with g ≡ 0 for linear attention.

Where it runs: on CUDA, the full checks; on a CPU machine with Triton, tiny shapes through Triton's interpreter in
a subprocess with ``TRITON_INTERPRET=1`` (or in-process when pytest itself runs with it); skipped without Triton.
"""

from __future__ import annotations

import sys
import zlib

import pytest
import torch
import torch.nn.functional as F
from interpreter_subprocess import run_under_interpreter

pytest.importorskip("triton")

from seqzoo.core.errors import SeqzooError  # noqa: E402
from seqzoo.ops import decay_linear_attention, linear_attention  # noqa: E402
from seqzoo.ops.triton import interpreting  # noqa: E402

CUDA = torch.cuda.is_available()
OPS = {"linear_attention": linear_attention, "decay_linear_attention": decay_linear_attention}
TOL = {torch.float32: 1e-4, torch.bfloat16: 1e-2}
# dg is a reverse cumulative sum of q·dq − k·dk over the sequence: the bfloat16 roundings inside dq and dk (h, dh and
# the score tiles are bfloat16 tensor-core operands) add up along it, ~1.5e-2 at T = 1000 (float32: ~1e-6).
TOL_DG = {torch.float32: 1e-4, torch.bfloat16: 3e-2}


def _over(errors: dict, dtype) -> dict:
    return {n: e for n, e in errors.items() if not e <= (TOL_DG if n == "dg" else TOL)[dtype]}


class _PoisonedTorch:
    """Stands in for ``torch`` inside the kernel module: every floating buffer from empty/empty_like is NaN."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def empty(*args, **kwargs):
        out = torch.empty(*args, **kwargs)
        return out.fill_(float("nan")) if out.is_floating_point() else out

    @staticmethod
    def empty_like(x, **kwargs):
        out = torch.empty_like(x, **kwargs)
        return out.fill_(float("nan")) if out.is_floating_point() else out


def _poison(monkeypatch=None):
    from seqzoo.ops.triton import chunk_linear

    if monkeypatch is None:
        chunk_linear.torch = _PoisonedTorch()
    else:
        monkeypatch.setattr(chunk_linear, "torch", _PoisonedTorch())


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    assert torch.isfinite(a).all(), "non-finite values (an unwritten or poisoned element)"
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def make(op, B, T, H, K, V, seed, device, N=None, strong_decay=False):
    """float64 q, k, v, g (or None), initial_state [N or B, H, K, V] — fresh for each seed."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    q, k, v = randn(B, T, H, K), F.normalize(randn(B, T, H, K), dim=-1), randn(B, T, H, V)
    g = None
    if op == "decay_linear_attention":
        g = -5.0 * torch.rand(B, T, H, generator=gen, dtype=torch.float64) if strong_decay else \
            F.logsigmoid(randn(B, T, H) + 2.0)
    s0 = randn(N or B, H, K, V)
    return [x.to(device) if x is not None else None for x in (q, k, v, g, s0)]


def run(op, q, k, v, g, s0, impl, **kwargs):
    args = (q, k, v) if g is None else (q, k, v, g)
    return OPS[op](*args, initial_state=s0, impl=impl, **kwargs)


def grads_of(outputs, inputs, w_o, w_s, use=("o", "s")):
    o, s = outputs
    loss = 0.0
    if "o" in use:
        loss = loss + (o.double() * w_o).sum()
    if "s" in use:
        loss = loss + (s.double() * w_s).sum()
    return torch.autograd.grad(loss, [x for x in inputs if x is not None], allow_unused=True, materialize_grads=True)


def check_against_reference(op, B, T, H, K, V, *, dtype, chunk_size, device, seed, use=("o", "s"),
                            strong_decay=False):
    ref_in = make(op, B, T, H, K, V, seed, device, strong_decay=strong_decay)
    # the Triton run sees q, k, v (and the state) in `dtype`, g in float32; the reference sees the same rounded values
    cast = [x.to(dtype if i < 3 else torch.float32) if x is not None else None for i, x in enumerate(ref_in)]
    ref_in = [x.double().requires_grad_() if x is not None else None for x in cast]
    tri_in = [x.detach().clone().requires_grad_() if x is not None else None for x in cast]
    ref = run(op, *ref_in, "recurrent")
    out = run(op, *tri_in, "triton", chunk_size=chunk_size)
    assert out[0].dtype == dtype and out[1].dtype == torch.float32
    assert out[0].shape == ref[0].shape and out[1].shape == ref[1].shape
    w_o, w_s = torch.randn_like(ref[0]), torch.randn_like(ref[1])
    g_ref = grads_of(ref, ref_in, w_o, w_s, use)
    g_tri = grads_of(out, tri_in, w_o, w_s, use)
    errors = {"o": rel(out[0], ref[0]), "final_state": rel(out[1], ref[1])}
    names = [n for n, x in zip(("dq", "dk", "dv", "dg", "d_initial_state"), ref_in) if x is not None]
    errors.update({n: rel(a, b) for n, a, b in zip(names, g_tri, g_ref)})
    bad = _over(errors, dtype)
    assert not bad, f"{op} T={T} {dtype} chunk={chunk_size}: relative errors too large: {bad} (all: {errors})"
    return errors


def check_varlen(op, lengths, H, K, V, *, dtype, chunk_size, device, seed):
    """Packed sequences (B = 1, cu_seqlens) against each sequence run on its own by the float64 reference."""
    from seqzoo.ops.triton.chunk_linear import chunk_linear_attention

    T, N = sum(lengths), len(lengths)
    q, k, v, g, s0 = make(op, 1, T, H, K, V, seed, device, N=N)
    cu = torch.tensor([0] + list(torch.tensor(lengths).cumsum(0)), dtype=torch.int32, device=device)
    cast = [x.to(dtype if i < 3 else torch.float32) if x is not None else None for i, x in enumerate((q, k, v, g, s0))]
    tri_in = [x.detach().clone().requires_grad_() if x is not None else None for x in cast]
    o, s = chunk_linear_attention(*tri_in[:4], initial_state=tri_in[4], cu_seqlens=cu, chunk_size=chunk_size)
    ref_in = [x.double().requires_grad_() if x is not None else None for x in cast]
    outs, states = [], []
    for n in range(N):
        a, b = int(cu[n]), int(cu[n + 1])
        piece = [x[:, a:b] if x is not None else None for x in ref_in[:4]]
        o_n, s_n = run(op, *piece, ref_in[4][n:n + 1], "recurrent")
        outs.append(o_n)
        states.append(s_n)
    ref_o, ref_s = torch.cat(outs, dim=1), torch.cat(states, dim=0)
    w_o, w_s = torch.randn_like(ref_o), torch.randn_like(ref_s)
    g_tri = grads_of((o, s), tri_in, w_o, w_s)
    g_ref = grads_of((ref_o, ref_s), ref_in, w_o, w_s)
    errors = {"o": rel(o, ref_o), "final_state": rel(s, ref_s)}
    names = [n for n, x in zip(("dq", "dk", "dv", "dg", "d_initial_state"), ref_in) if x is not None]
    errors.update({n: rel(a, b) for n, a, b in zip(names, g_tri, g_ref)})
    bad = _over(errors, dtype)
    assert not bad, f"{op} varlen {lengths} {dtype}: relative errors too large: {bad} (all: {errors})"
    return errors


def check_errors(device):
    q = torch.randn(1, 5, 2, 16, device=device)
    with pytest.raises(SeqzooError, match="chunk_size"):
        linear_attention(q, q, q, impl="triton", chunk_size=48)
    with pytest.raises(SeqzooError, match="float"):
        linear_attention(q.double(), q.double(), q.double(), impl="triton")
    from seqzoo.ops.triton.chunk_linear import chunk_linear_attention

    with pytest.raises(SeqzooError, match="B must be 1"):
        chunk_linear_attention(torch.cat([q, q]), q.repeat(2, 1, 1, 1), q.repeat(2, 1, 1, 1),
                               cu_seqlens=torch.tensor([0, 5], dtype=torch.int32, device=device))
    with pytest.raises(SeqzooError, match="initial_state"):
        chunk_linear_attention(q, q, q, initial_state=torch.zeros(2, 2, 16, 16, device=device),
                               cu_seqlens=torch.tensor([0, 2, 5], dtype=torch.int32, device=device)[:2])


# ------------------------------------------------------------------------------------------ the cases
# (name, function, kwargs); tiny ones run under the interpreter, the GPU runs them all
def _cases(tiny: bool):
    H, K, V = (2, 16, 32) if tiny else (3, 64, 128)
    cases = []
    lengths = (1, 37, 65) if tiny else (1, 37, 64, 65, 130, 1000)
    for op in OPS:
        for T in lengths:
            cases.append((f"{op}-fp32-T{T}", check_against_reference,
                          dict(op=op, B=2, T=T, H=H, K=K, V=V, dtype=torch.float32, chunk_size=16 if tiny else 64)))
        cases.append((f"{op}-bf16", check_against_reference,
                      dict(op=op, B=2, T=65 if tiny else 1000, H=H, K=K, V=V, dtype=torch.bfloat16,
                           chunk_size=16 if tiny else 64)))
        cases.append((f"{op}-chunk64", check_against_reference,
                      dict(op=op, B=1, T=70, H=1, K=K, V=V, dtype=torch.float32, chunk_size=64)))
        cases.append((f"{op}-output-only", check_against_reference,
                      dict(op=op, B=1, T=37, H=H, K=K, V=V, dtype=torch.float32, chunk_size=16, use=("o",))))
        cases.append((f"{op}-state-only", check_against_reference,
                      dict(op=op, B=1, T=37, H=H, K=K, V=V, dtype=torch.float32, chunk_size=16, use=("s",))))
        cases.append((f"{op}-varlen", check_varlen,
                      dict(op=op, lengths=[5, 32, 0, 17] if tiny else [1, 64, 0, 65, 300, 570], H=H, K=K, V=V,
                           dtype=torch.float32, chunk_size=16 if tiny else 64)))
    cases.append(("decay-strong", check_against_reference,
                  dict(op="decay_linear_attention", B=1, T=40, H=H, K=K, V=V, dtype=torch.float32, chunk_size=16,
                       strong_decay=True)))
    if not tiny:
        for op in OPS:
            cases.append((f"{op}-odd-heads", check_against_reference,
                          dict(op=op, B=2, T=200, H=2, K=48, V=40, dtype=torch.float32, chunk_size=32)))
            cases.append((f"{op}-k128-chunk128", check_against_reference,
                          dict(op=op, B=1, T=300, H=2, K=128, V=128, dtype=torch.bfloat16, chunk_size=128)))
            cases.append((f"{op}-varlen-bf16", check_varlen,
                          dict(op=op, lengths=[100, 1, 700], H=2, K=128, V=128, dtype=torch.bfloat16,
                               chunk_size=64)))
    return cases


TINY = _cases(tiny=True)
FULL = _cases(tiny=False)


def _run_case(cases, name, device, monkeypatch):
    _poison(monkeypatch)
    seed = zlib.crc32(name.encode()) % 10_000
    fn, kwargs = next((f, kw) for n, f, kw in cases if n == name)
    fn(**kwargs, device=device, seed=seed)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", [c[0] for c in FULL])
def test_gpu(name, monkeypatch):
    _run_case(FULL, name, "cuda", monkeypatch)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_gpu_errors_and_auto():
    check_errors("cuda")
    from seqzoo.ops.triton import chunk_linear

    q = torch.randn(2, 100, 2, 32, device="cuda", dtype=torch.bfloat16)
    g = -torch.rand(2, 100, 2, device="cuda")
    for op, args in (("linear_attention", (q, q, q)), ("decay_linear_attention", (q, q, q, g))):
        auto = OPS[op](*args, impl="auto")
        tri = OPS[op](*args, impl="triton")
        assert torch.equal(auto[0], tri[0]) and torch.equal(auto[1], tri[1]), f"{op}: auto did not pick triton"
    assert chunk_linear.supports(q, q, q, 64)


@pytest.mark.skipif(not interpreting(), reason="in-process interpreter run needs TRITON_INTERPRET=1")
@pytest.mark.parametrize("name", [c[0] for c in TINY])
def test_interpreter(name, monkeypatch):
    _run_case(TINY, name, "cpu", monkeypatch)


@pytest.mark.skipif(CUDA or interpreting(), reason="CUDA runs the GPU tests; interpreter mode runs them in-process")
def test_interpreter_subprocess():
    """The tiny cases through Triton's CPU interpreter, in a subprocess that has TRITON_INTERPRET=1 set."""
    proc = run_under_interpreter(__file__)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert f"{len(TINY)} cases passed" in proc.stdout, proc.stdout[-4000:]


def test_cpu_without_interpreter_is_refused_and_auto_unchanged():
    if interpreting():
        pytest.skip("the interpreter accepts CPU tensors")
    q = torch.randn(1, 9, 2, 16)
    with pytest.raises(SeqzooError, match="CUDA"):
        linear_attention(q, q, q, impl="triton")
    a = linear_attention(q, q, q, impl="auto")
    b = linear_attention(q, q, q, impl="chunk")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(SeqzooError, match="triton"):
        linear_attention(q, q, q, impl="bogus")


if __name__ == "__main__":   # the interpreter run: python tests/test_triton_linear.py (with TRITON_INTERPRET=1)
    if not interpreting():
        sys.exit("run with TRITON_INTERPRET=1")
    torch.set_num_threads(1)
    check_errors("cpu")
    for i, (name, fn, kwargs) in enumerate(TINY):
        _poison()
        fn(**kwargs, device="cpu", seed=1000 + i)
        print("ok", name, flush=True)
    print(f"{len(TINY)} cases passed")
