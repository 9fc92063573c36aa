"""Tests of seqzoo's fixes to Triton's CPU interpreter (``seqzoo.ops.triton.patch_interpreter``).

The kernel tests run on CPU through the interpreter, so it must compute what the GPU computes:

* a float32 → bfloat16 cast rounds to nearest even, as on the GPU and in PyTorch (Triton 3.6's interpreter
  truncated, which biased every bf16 error measured on CPU);
* a loop bound read from memory (``range(n)`` with a tensor ``n``) works under NumPy ≥ 2.3.

Run as a script under ``TRITON_INTERPRET=1`` (the variable must be set before Triton is imported).
"""

from __future__ import annotations

import pytest
import torch
from interpreter_subprocess import run_under_interpreter

from seqzoo.ops.triton import HAS_TRITON


def interpreter_checks():
    import triton
    import triton.language as tl

    from seqzoo.ops.triton import patch_interpreter

    patch_interpreter()

    @triton.jit
    def cast_kernel(x_ptr, y_ptr, N: tl.constexpr):
        i = tl.arange(0, N)
        tl.store(y_ptr + i, tl.load(x_ptr + i).to(tl.bfloat16))

    @triton.jit
    def count_kernel(n_ptr, out_ptr):
        total = 0
        for _ in range(tl.load(n_ptr)):
            total += 1
        tl.store(out_ptr, total)

    gen = torch.Generator().manual_seed(0)
    # random values, exact ties between two bf16 neighbours (to even), a value that carries into the exponent,
    # values too large for bf16 (to infinity), subnormal inputs and signed zeros
    ties = torch.tensor([1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8)], dtype=torch.float32)
    special = torch.tensor([2 - 2 ** -9, 3.4e38, -3.4e38, 1e-40, -1e-40, 0.0, -0.0], dtype=torch.float32)
    x = torch.cat([torch.randn(1000, generator=gen) * 10.0 ** torch.randint(-20, 20, (1000,), generator=gen),
                   ties, special, torch.zeros(14)])
    y = torch.empty(x.shape, dtype=torch.bfloat16)
    cast_kernel[(1,)](x, y, N=x.numel())
    expected = x.to(torch.bfloat16)
    assert torch.equal(y.view(torch.int16), expected.view(torch.int16)), "float32 -> bfloat16 is not round-to-even"
    assert y[1000].item() == 1.0 and y[1001].item() == 1 + 2 ** -6, "ties must round to even"

    n, out = torch.tensor([7], dtype=torch.int32), torch.zeros(1, dtype=torch.int32)
    count_kernel[(1,)](n, out)
    assert out.item() == 7


@pytest.mark.skipif(not HAS_TRITON, reason="needs Triton")
def test_interpreter_matches_the_gpu_on_casts_and_loop_bounds():
    done = run_under_interpreter(__file__, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "interpreter checks passed" in done.stdout


if __name__ == "__main__":
    from seqzoo.ops.triton import interpreting

    assert interpreting(), "set TRITON_INTERPRET=1"
    interpreter_checks()
    print("interpreter checks passed")
