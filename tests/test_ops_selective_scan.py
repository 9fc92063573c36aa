"""Tests of selective_scan: every impl against the recurrent reference, plus hand-computed examples.

Paper: "Mamba: Linear-Time Sequence Modeling with Selective State Spaces", arXiv 2312.00752:
x_t = exp(Δ_t A) ⊙ x_{t-1} + (Δ_t u_t) B_t, y_t = x_t C_t + D u_t.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from seqzoo.core.errors import SeqzooError
from seqzoo.ops import selective_scan

DM, N = 5, 4
FAST_IMPLS = ("chunk", "parallel")
SHAPES = [(1, 1), (3, 7), (1, 37), (3, 70)]   # (B, T)


def make_inputs(B: int, T: int, dtype=torch.float64, seed: int = 0):
    """u, delta, A, B, C, D, initial_state."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    u, delta = randn(B, T, DM), F.softplus(randn(B, T, DM) - 1.0)
    A = -torch.exp(randn(DM, N))
    Bm, Cm, D = randn(B, T, N), randn(B, T, N), randn(DM)
    x0 = randn(B, DM, N)
    return [t.to(dtype) for t in (u, delta, A, Bm, Cm, D)], x0


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def _cases():
    for B, T in SHAPES:
        for C in (1, 4, 16, 64):
            for impl in FAST_IMPLS:
                yield impl, B, T, C


@pytest.mark.parametrize("impl,B,T,chunk", list(_cases()))
def test_impl_matches_recurrent_float64(impl, B, T, chunk):
    inputs, x0 = make_inputs(B, T)
    y_ref, x_ref = selective_scan(*inputs, initial_state=x0, impl="recurrent")
    y, x = selective_scan(*inputs, initial_state=x0, impl=impl, chunk_size=chunk)
    assert y.shape == (B, T, DM) and x.shape == (B, DM, N) and x.dtype == torch.float64
    assert rel(y, y_ref) <= 1e-10 and rel(x, x_ref) <= 1e-10


def test_auto_default_chunk_and_no_D():
    (u, delta, A, Bm, Cm, _), _ = make_inputs(2, 300)
    y_auto, x_auto = selective_scan(u, delta, A, Bm, Cm)
    y_ref, x_ref = selective_scan(u, delta, A, Bm, Cm, impl="recurrent")
    assert rel(y_auto, y_ref) <= 1e-10 and rel(x_auto, x_ref) <= 1e-10


@pytest.mark.parametrize("impl", ("recurrent",) + FAST_IMPLS)
def test_float32_and_bfloat16(impl):
    inputs, x0 = make_inputs(3, 70)
    y_ref, x_ref = selective_scan(*inputs, initial_state=x0, impl="recurrent")
    y, x = selective_scan(*(t.float() for t in inputs), initial_state=x0.float(), impl=impl, chunk_size=16)
    assert y.dtype == torch.float32 and x.dtype == torch.float32
    assert rel(y, y_ref) <= 1e-5 and rel(x, x_ref) <= 1e-5
    y, x = selective_scan(*(t.bfloat16() for t in inputs), initial_state=x0.bfloat16(), impl=impl, chunk_size=16)
    y_ref, x_ref = selective_scan(*(t.bfloat16().double() for t in inputs), initial_state=x0, impl="recurrent")
    assert y.dtype == torch.bfloat16 and x.dtype == torch.float32
    assert rel(y, y_ref) <= 2e-2 and rel(x, x_ref) <= 2e-2


@pytest.mark.parametrize("impl", FAST_IMPLS)
@pytest.mark.parametrize("chunk", (4, 16))
def test_gradients_match_recurrent(impl, chunk):
    inputs, x0 = make_inputs(2, 37)
    gen = torch.Generator().manual_seed(1)
    grad_y = torch.randn(2, 37, DM, generator=gen, dtype=torch.float64)
    grad_x = torch.randn(2, DM, N, generator=gen, dtype=torch.float64)

    def grads(which):
        leaves = [t.clone().requires_grad_() for t in (*inputs, x0)]
        y, x = selective_scan(*leaves[:-1], initial_state=leaves[-1], impl=which, chunk_size=chunk)
        return torch.autograd.grad((y * grad_y).sum() + (x * grad_x).sum(), leaves)

    for name, g, g_ref in zip(("u", "delta", "A", "B", "C", "D", "initial_state"), grads(impl), grads("recurrent")):
        assert rel(g, g_ref) <= 1e-8, name


@pytest.mark.parametrize("impl", ("recurrent",) + FAST_IMPLS)
def test_split_threads_state(impl):
    inputs, x0 = make_inputs(3, 70)
    y_full, x_full = selective_scan(*inputs, initial_state=x0, impl=impl, chunk_size=16)
    for cut in (1, 23, 69):
        first = [t[:, :cut] if t.dim() == 3 else t for t in inputs]
        second = [t[:, cut:] if t.dim() == 3 else t for t in inputs]
        y1, x1 = selective_scan(*first, initial_state=x0, impl=impl, chunk_size=16)
        y2, x2 = selective_scan(*second, initial_state=x1, impl=impl, chunk_size=16)
        assert rel(torch.cat([y1, y2], dim=1), y_full) <= 1e-12 and rel(x2, x_full) <= 1e-12


@pytest.mark.parametrize("impl", ("recurrent",) + FAST_IMPLS)
def test_hand_computed_two_steps(impl):
    # one channel, two state entries; every number below is worked out by hand from the recurrence
    u = torch.tensor([[[2.0], [-1.0]]], dtype=torch.float64)            # [1, 2, 1]
    delta = torch.tensor([[[0.5], [0.25]]], dtype=torch.float64)
    A = torch.tensor([[-1.0, -2.0]], dtype=torch.float64)
    Bm = torch.tensor([[[1.0, 3.0], [2.0, -1.0]]], dtype=torch.float64)
    Cm = torch.tensor([[[1.0, 1.0], [0.5, 2.0]]], dtype=torch.float64)
    x0 = torch.tensor([[[4.0, -2.0]]], dtype=torch.float64)
    # step 1: x = exp(0.5·[-1, -2]) ⊙ [4, -2] + (0.5·2)·[1, 3]
    x1 = [math.exp(-0.5) * 4 + 1.0, math.exp(-1.0) * -2 + 3.0]
    # step 2: x = exp(0.25·[-1, -2]) ⊙ x1 + (0.25·-1)·[2, -1]
    x2 = [math.exp(-0.25) * x1[0] - 0.5, math.exp(-0.5) * x1[1] + 0.25]
    y = [x1[0] + x1[1], 0.5 * x2[0] + 2 * x2[1]]
    out, state = selective_scan(u, delta, A, Bm, Cm, initial_state=x0, impl=impl, chunk_size=1)
    assert torch.allclose(out.flatten(), torch.tensor(y, dtype=torch.float64), atol=1e-14)
    assert torch.allclose(state.flatten(), torch.tensor(x2, dtype=torch.float64), atol=1e-14)
    # the D skip term adds D·u_t
    out_d, _ = selective_scan(u, delta, A, Bm, Cm, torch.tensor([3.0], dtype=torch.float64), initial_state=x0,
                              impl=impl)
    assert torch.allclose(out_d.flatten(), torch.tensor([y[0] + 6.0, y[1] - 3.0], dtype=torch.float64), atol=1e-14)


@pytest.mark.parametrize("impl", ("recurrent",) + FAST_IMPLS)
def test_skip_only_when_B_is_zero(impl):
    (u, delta, A, Bm, Cm, D), _ = make_inputs(2, 20)
    y, x = selective_scan(u, delta, A, torch.zeros_like(Bm), Cm, D, impl=impl, chunk_size=8)
    assert torch.equal(x, torch.zeros_like(x)) and torch.allclose(y, D * u, atol=0)


@pytest.mark.parametrize("impl", ("recurrent",) + FAST_IMPLS)
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
def test_strong_decay_keeps_only_the_current_input(impl, dtype):
    (u, delta, A, Bm, Cm, D), x0 = make_inputs(2, 70, dtype=dtype)
    A = torch.full_like(A, -1e4)                                         # exp(Δ A) = 0 for every step
    y, x = selective_scan(u, delta, A, Bm, Cm, D, initial_state=x0.to(dtype), impl=impl, chunk_size=16)
    expected = delta * u * (Bm * Cm).sum(-1, keepdim=True) + D * u
    assert torch.isfinite(y).all() and torch.isfinite(x).all()
    assert rel(y, expected) <= 1e-6


def test_empty_sequence():
    (u, delta, A, Bm, Cm, D), x0 = make_inputs(2, 0)
    y, x = selective_scan(u, delta, A, Bm, Cm, D, initial_state=x0)
    assert y.shape == (2, 0, DM) and torch.equal(x, x0)


def test_bad_inputs_raise_seqzoo_error():
    (u, delta, A, Bm, Cm, D), x0 = make_inputs(2, 5)
    with pytest.raises(SeqzooError, match="impl 'foo' is not valid for selective_scan; valid: auto, recurrent"):
        selective_scan(u, delta, A, Bm, Cm, impl="foo")
    with pytest.raises(SeqzooError, match="u must have 3 dims"):
        selective_scan(u[0], delta, A, Bm, Cm)
    with pytest.raises(SeqzooError, match="delta must have shape"):
        selective_scan(u, delta[:, :-1], A, Bm, Cm)
    with pytest.raises(SeqzooError, match="A must have shape"):
        selective_scan(u, delta, A[:-1], Bm, Cm)
    with pytest.raises(SeqzooError, match="B must have shape"):
        selective_scan(u, delta, A, Bm[..., :-1], Cm)
    with pytest.raises(SeqzooError, match="C must have shape"):
        selective_scan(u, delta, A, Bm, Cm[:, :-1])
    with pytest.raises(SeqzooError, match="D must have shape"):
        selective_scan(u, delta, A, Bm, Cm, D[:-1])
    with pytest.raises(SeqzooError, match="initial_state must have shape"):
        selective_scan(u, delta, A, Bm, Cm, initial_state=x0[:1])
    with pytest.raises(SeqzooError, match="chunk_size must be a positive int"):
        selective_scan(u, delta, A, Bm, Cm, chunk_size=-1)
