"""Tests of the matrix-state ops: linear_attention, decay_linear_attention and delta_rule.

Every impl is checked against the step-by-step "recurrent" reference (outputs, final states and gradients), over
lengths that are not multiples of the chunk size, batch sizes 1 and 3, chunk sizes 1 … 64 and sequence splits;
plus one property test per op that a plausible stub fails.

Papers and equations (row-vector convention, o_t = (scale·q_t) S_t): linear attention, arXiv 2006.16236,
S_t = S_{t-1} + k_tᵀ v_t; retention / gated linear attention, arXiv 2307.08621 and 2312.06635,
S_t = exp(g_t) S_{t-1} + k_tᵀ v_t; DeltaNet, arXiv 2102.11174 and 2406.06484,
S_t = S_{t-1} + β_t k_tᵀ (v_t − k_t S_{t-1}).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seqzoo.core.errors import SeqzooError
from seqzoo.ops import decay_linear_attention, delta_rule, linear_attention

OPS = {
    "linear_attention": (linear_attention, None),
    "decay_linear_attention": (decay_linear_attention, "g"),
    "delta_rule": (delta_rule, "beta"),
}
FAST_IMPLS = ("chunk", "parallel")
SHAPES = [(1, 1), (3, 7), (1, 37), (3, 70)]   # (B, T)
H, K, V = 2, 8, 6


def make_inputs(op: str, B: int, T: int, dtype=torch.float64, seed: int = 0, state: bool = True):
    """q, k, v, [g | beta], initial_state for ``op`` (keys unit-norm, log-decays ≤ 0, β in (0, 1))."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    q, k, v = randn(B, T, H, K), F.normalize(randn(B, T, H, K), dim=-1), randn(B, T, H, V)
    extra = []
    if OPS[op][1] == "g":
        extra = [F.logsigmoid(randn(B, T, H) + 2.0)]
    elif OPS[op][1] == "beta":
        extra = [torch.sigmoid(randn(B, T, H))]
    s0 = randn(B, H, K, V) if state else None
    cast = [x.to(dtype) for x in (q, k, v, *extra)]
    return cast, s0


def call(op, tensors, s0=None, **kwargs):
    return OPS[op][0](*tensors, initial_state=s0, **kwargs)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


# ------------------------------------------------------------------------------------------ equivalence (fp64)
def _cases():
    for op in OPS:
        for B, T in SHAPES:
            for C in (1, 4, 16, 64):
                yield op, "chunk", B, T, C
            yield op, "parallel", B, T, 64


@pytest.mark.parametrize("op,impl,B,T,chunk", list(_cases()))
def test_impl_matches_recurrent_float64(op, impl, B, T, chunk):
    tensors, s0 = make_inputs(op, B, T)
    o_ref, s_ref = call(op, tensors, s0, impl="recurrent")
    o, s = call(op, tensors, s0, impl=impl, chunk_size=chunk)
    assert o.dtype == torch.float64 and s.dtype == torch.float64
    assert o.shape == (B, T, H, V) and s.shape == (B, H, K, V)
    assert rel(o, o_ref) <= 1e-10
    assert rel(s, s_ref) <= 1e-10


@pytest.mark.parametrize("op", OPS)
def test_auto_is_chunk_and_zero_state_is_default(op):
    tensors, _ = make_inputs(op, 2, 37, state=False)
    o_auto, s_auto = call(op, tensors)
    o_chunk, s_chunk = call(op, tensors, torch.zeros(2, H, K, V, dtype=torch.float64), impl="chunk")
    assert torch.equal(o_auto, o_chunk) and torch.equal(s_auto, s_chunk)


@pytest.mark.parametrize("op", OPS)
def test_default_scale_is_inverse_sqrt_K(op):
    (q, *rest), s0 = make_inputs(op, 1, 9)
    o_default, _ = call(op, [q, *rest], s0, impl="recurrent")
    o_explicit, _ = call(op, [q * K ** -0.5, *rest], s0, impl="recurrent", scale=1.0)
    assert rel(o_default, o_explicit) <= 1e-14


# ------------------------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("impl", ("recurrent",) + FAST_IMPLS)
def test_float32_close_to_float64_reference(op, impl):
    tensors, s0 = make_inputs(op, 3, 70)
    o_ref, s_ref = call(op, tensors, s0, impl="recurrent")
    o, s = call(op, [x.float() for x in tensors], s0.float(), impl=impl, chunk_size=16)
    assert o.dtype == torch.float32 and s.dtype == torch.float32
    assert rel(o, o_ref) <= 1e-5 and rel(s, s_ref) <= 1e-5


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("impl", ("recurrent",) + FAST_IMPLS)
def test_bfloat16_inputs_give_float32_state(op, impl):
    tensors, s0 = make_inputs(op, 2, 37, dtype=torch.bfloat16)
    o_ref, s_ref = call(op, [x.double() for x in tensors], s0, impl="recurrent")
    o, s = call(op, tensors, s0.bfloat16(), impl=impl, chunk_size=16)
    assert o.dtype == torch.bfloat16 and s.dtype == torch.float32
    assert rel(o, o_ref) <= 2e-2 and rel(s, s_ref) <= 2e-2


# ------------------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("impl", FAST_IMPLS)
def test_gradients_match_recurrent(op, impl):
    tensors, s0 = make_inputs(op, 2, 37)
    gen = torch.Generator().manual_seed(1)
    grad_o = torch.randn(2, 37, H, V, generator=gen, dtype=torch.float64)
    grad_s = torch.randn(2, H, K, V, generator=gen, dtype=torch.float64)

    def grads(which):
        leaves = [x.clone().requires_grad_() for x in (*tensors, s0)]
        o, s = call(op, leaves[:-1], leaves[-1], impl=which, chunk_size=16)
        return torch.autograd.grad((o * grad_o).sum() + (s * grad_s).sum(), leaves)

    names = ["q", "k", "v"] + ([OPS[op][1]] if OPS[op][1] else []) + ["initial_state"]
    for name, g, g_ref in zip(names, grads(impl), grads("recurrent")):
        assert rel(g, g_ref) <= 1e-8, name


# ------------------------------------------------------------------------------------------- chunk invariance
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("impl", ("recurrent",) + FAST_IMPLS)
def test_split_threads_state(op, impl):
    tensors, s0 = make_inputs(op, 3, 70)
    o_full, s_full = call(op, tensors, s0, impl=impl, chunk_size=16)
    for cut in (1, 23, 69):
        o1, s1 = call(op, [x[:, :cut] for x in tensors], s0, impl=impl, chunk_size=16)
        o2, s2 = call(op, [x[:, cut:] for x in tensors], s1, impl=impl, chunk_size=16)
        assert rel(torch.cat([o1, o2], dim=1), o_full) <= 1e-12
        assert rel(s2, s_full) <= 1e-12


@pytest.mark.parametrize("op", OPS)
def test_empty_sequence_returns_initial_state(op):
    tensors, s0 = make_inputs(op, 2, 0)
    o, s = call(op, tensors, s0)
    assert o.shape == (2, 0, H, V) and torch.equal(s, s0)


# ------------------------------------------------------------------------------------------- properties
@pytest.mark.parametrize("impl", ("recurrent",) + FAST_IMPLS)
def test_linear_attention_equals_explicit_double_loop(impl):
    (q, k, v), s0 = make_inputs("linear_attention", 2, 11)
    o, s = linear_attention(q, k, v, initial_state=s0, impl=impl, chunk_size=4)
    scale = K ** -0.5
    expected = torch.zeros_like(o)
    for b in range(2):
        for h in range(H):
            for t in range(11):
                acc = scale * q[b, t, h] @ s0[b, h]
                for j in range(t + 1):
                    acc = acc + scale * (q[b, t, h] @ k[b, j, h]) * v[b, j, h]
                expected[b, t, h] = acc
    assert rel(o, expected) <= 1e-12
    assert rel(s, s0 + torch.einsum("bthk,bthv->bhkv", k, v)) <= 1e-12


@pytest.mark.parametrize("impl", ("recurrent",) + FAST_IMPLS)
def test_delta_rule_overwrites_and_linear_attention_does_not(impl):
    k = F.normalize(torch.tensor([[1.0, 2.0, -1.0, 0.5]], dtype=torch.float64), dim=-1)
    v1, v2 = torch.tensor([[1.0, -2.0, 3.0]]), torch.tensor([[0.5, 4.0, -1.0]])
    keys = torch.cat([k, k, k]).view(1, 3, 1, 4)                       # write k, write k, then read with q = k
    values = torch.cat([v1, v2, torch.zeros(1, 3)]).view(1, 3, 1, 3).double()
    beta = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64).view(1, 3, 1)
    o, _ = delta_rule(keys, keys, values, beta, scale=1.0, impl=impl, chunk_size=2)
    assert torch.allclose(o[0, 2, 0], v2[0].double(), atol=1e-12)     # exactly the last value written
    o_lin, _ = linear_attention(keys[:, :2], keys[:, :2], values[:, :2], scale=1.0, impl=impl, chunk_size=2)
    assert not torch.allclose(o_lin[0, 1, 0], v2[0].double(), atol=1e-3)   # the stub gives v1 + v2
    assert torch.allclose(o_lin[0, 1, 0], (v1 + v2)[0].double(), atol=1e-12)


@pytest.mark.parametrize("impl", ("recurrent",) + FAST_IMPLS)
def test_decay_zero_equals_linear_attention(impl):
    (q, k, v, g), s0 = make_inputs("decay_linear_attention", 3, 37)
    o, s = decay_linear_attention(q, k, v, torch.zeros_like(g), initial_state=s0, impl=impl, chunk_size=16)
    o_lin, s_lin = linear_attention(q, k, v, initial_state=s0, impl=impl, chunk_size=16)
    assert rel(o, o_lin) <= 1e-12 and rel(s, s_lin) <= 1e-12


@pytest.mark.parametrize("impl", ("recurrent",) + FAST_IMPLS)
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
def test_strong_decay_forgets_everything_but_the_current_step(impl, dtype):
    (q, k, v, g), s0 = make_inputs("decay_linear_attention", 2, 70, dtype=dtype)
    g = torch.full_like(g, -50.0)
    o, s = decay_linear_attention(q, k, v, g, initial_state=s0.to(dtype), impl=impl, chunk_size=64)
    only_current = (K ** -0.5 * (q * k).sum(-1, keepdim=True)) * v               # (q_t · k_t) v_t
    assert torch.isfinite(o).all() and torch.isfinite(s).all()
    assert rel(o, only_current) <= (1e-6 if dtype == torch.float32 else 1e-12)
    assert rel(s, k[:, -1, :, :, None] * v[:, -1, :, None, :]) <= 1e-6


@pytest.mark.parametrize("impl", FAST_IMPLS)
def test_decay_chunk_form_stable_for_g_minus_20(impl):
    (q, k, v, g), s0 = make_inputs("decay_linear_attention", 1, 70)
    g = -20.0 * torch.rand(g.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    o_ref, s_ref = decay_linear_attention(q, k, v, g, initial_state=s0, impl="recurrent")
    for dtype in (torch.float32, torch.float64):
        o, s = decay_linear_attention(*(x.to(dtype) for x in (q, k, v, g)), initial_state=s0, impl=impl,
                                      chunk_size=64)
        assert torch.isfinite(o).all() and torch.isfinite(s).all()
        assert rel(o, o_ref) <= (1e-5 if dtype == torch.float32 else 1e-10)


# ------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("op", OPS)
def test_bad_inputs_raise_seqzoo_error(op):
    tensors, s0 = make_inputs(op, 2, 5)
    q, k, v, *extra = tensors
    with pytest.raises(SeqzooError, match=f"impl 'foo' is not valid for {op}; valid: auto, recurrent, chunk"):
        call(op, tensors, impl="foo")
    with pytest.raises(SeqzooError, match="q must have 4 dims"):
        call(op, [q[0], k, v, *extra])
    with pytest.raises(SeqzooError, match="k must have shape"):
        call(op, [q, k[..., :-1], v, *extra])
    with pytest.raises(SeqzooError, match="v must have shape"):
        call(op, [q, k, v[:, :-1], *extra])
    with pytest.raises(SeqzooError, match="initial_state must have shape"):
        call(op, tensors, s0[..., :-1])
    with pytest.raises(SeqzooError, match="chunk_size must be a positive int"):
        call(op, tensors, chunk_size=0)
    with pytest.raises(SeqzooError, match="scale must be a number"):
        call(op, tensors, scale="big")
    with pytest.raises(SeqzooError, match="floating-point"):
        call(op, [q.long(), k, v, *extra])
    if extra:
        name = OPS[op][1]
        with pytest.raises(SeqzooError, match=f"{name} must have shape"):
            call(op, [q, k, v, extra[0][..., :-1]])


def test_public_exports():
    import seqzoo.ops

    contract = {"linear_attention", "decay_linear_attention", "delta_rule", "selective_scan", "softmax_attention"}
    assert contract <= set(seqzoo.ops.__all__)                       # later ops may add their own names
    assert not [name for name in seqzoo.ops.__all__ if name.startswith("_")]
    assert all(callable(getattr(seqzoo.ops, name)) for name in seqzoo.ops.__all__)


def test_auto_steps_recurrently_for_decoding_lengths():
    """impl="auto" picks the recurrent form for T ≤ 4 (decode steps) and the chunk form beyond; both agree."""
    from seqzoo.ops._common import AUTO_RECURRENT_MAX_T, auto_for_length

    assert auto_for_length("chunk", 1) == "recurrent" and auto_for_length("chunk", AUTO_RECURRENT_MAX_T) == "recurrent"
    assert auto_for_length("chunk", AUTO_RECURRENT_MAX_T + 1) == "chunk"
    from seqzoo.ops import delta_rule

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, 2, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    beta = torch.rand(1, 1, 2, generator=gen, dtype=torch.float64)
    s0 = torch.randn(1, 2, 4, 4, generator=gen, dtype=torch.float64)
    a, sa = delta_rule(q, k, v, beta, initial_state=s0)
    b, sb = delta_rule(q, k, v, beta, initial_state=s0, impl="chunk")
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sa, sb, rtol=1e-12, atol=1e-12)
