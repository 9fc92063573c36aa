"""Under bf16 autocast the recurrent ops still compute in their accumulation dtype (Contract 1): autocast must not
drop their matmuls to 16 bits (nor fail on ops with no bf16 kernel, like the delta rule's triangular solve)."""

import pytest
import torch
import torch.nn.functional as F

from seqzoo.ops import decay_linear_attention, delta_rule, linear_attention, selective_scan


def _qkv(T=37, H=2, D=8):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, T, H, D, generator=g) for _ in range(3))
    return q, F.normalize(k, dim=-1), v, g


@pytest.mark.parametrize("impl", ["chunk", "parallel"])
def test_matrix_ops_ignore_autocast(impl):
    q, k, v, g = _qkv()
    beta = torch.rand(2, 37, 2, generator=g)
    decay = -torch.rand(2, 37, 2, generator=g)
    cases = [(linear_attention, (q, k, v)), (decay_linear_attention, (q, k, v, decay)), (delta_rule, (q, k, v, beta))]
    for op, args in cases:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            o, s = op(*args, impl=impl, chunk_size=8)
        ref, ref_s = op(*(a.double() for a in args), impl="recurrent")
        assert o.dtype == torch.float32 and s.dtype == torch.float32
        torch.testing.assert_close(o.double(), ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(s.double(), ref_s, rtol=1e-5, atol=1e-5)


def test_selective_scan_ignores_autocast():
    g = torch.Generator().manual_seed(1)
    u, delta = torch.randn(2, 29, 6, generator=g), torch.rand(2, 29, 6, generator=g)
    A, B, C = -torch.rand(6, 4, generator=g), torch.randn(2, 29, 4, generator=g), torch.randn(2, 29, 4, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, x = selective_scan(u, delta, A, B, C, impl="chunk", chunk_size=8)
    ref, ref_x = selective_scan(*(t.double() for t in (u, delta, A, B, C)), impl="recurrent")
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.double(), ref_x, rtol=1e-5, atol=1e-5)
