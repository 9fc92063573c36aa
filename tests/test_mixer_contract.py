"""Contract 2 (DESIGN.md) applied to EVERY registered mixer.

The tests are parametrised by ``seqzoo.list_mixers()`` (and, where it matters, by each mixer's ``IMPLS``), so a
new mixer gets all of them by registering. What a mixer class must declare:

* ``IMPLS: tuple[str, ...]`` — its implementations, the first being the reference; when the mixer takes an
  ``impl`` option every entry must be accepted by it;
* ``constant_state: bool`` — True when the state size does not depend on the sequence length (recurrent
  mixers), False when it grows (a KV cache);
* ``causal`` (from :class:`seqzoo.Mixer`) — non-causal mixers skip chunk invariance and causality.

Inputs are built with ``mixer.example_input_shape(batch, T)`` ([B, T, D] by default; e.g. [B, T, C, H, W] for a
video mixer), so mixers over other layouts get the same checks.

Checked: chunk invariance over random splits (one token at a time included), threading the state, in float64
(relative error ≤ 1e-10) and float32 (≤ 1e-5); causality (≤ 1e-12 in float64); ``forward(x, None) ==
forward(x, init_state(...))``; lengths 1, 13, 67 (not multiples of the chunk sizes; ``chunk_size`` is set to 8
when the mixer has that option); every implementation equal to the reference, outputs and gradients (param and
input, float64, ≤ 1e-8); batch sizes 1 and 3 and independence of batch rows; states left unmodified by a call;
bf16 inputs keep recurrent state tensors in float32; ``state_size`` against the measured state and its growth.
"""

from __future__ import annotations

import inspect
import random
import zlib

import pytest
import torch

import seqzoo
from seqzoo.core import Mixer, map_state, mixer_entry, mixer_options, state_numel

D_MODEL = 64
SMALL = {"chunk_size": 8}  # applied to mixers that have the option, so short sequences span several chunks
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
DTYPES = [pytest.param(torch.float64, id="f64"), pytest.param(torch.float32, id="f32")]

NAMES = seqzoo.list_mixers()


def mixer_cls(name: str) -> type:
    return mixer_entry(name).cls


def impls_of(name: str) -> tuple:
    """The implementations to test: ``IMPLS`` when the mixer takes ``impl``, else just the default (None)."""
    impls = tuple(getattr(mixer_cls(name), "IMPLS", ()) or ())
    if "impl" in mixer_options(name) and impls:
        return impls
    return (None,)


NAME_IMPLS = [pytest.param(n, i, id=f"{n}-{i or 'default'}") for n in NAMES for i in impls_of(n)]


def make(name: str, dtype=torch.float64, impl=None, like: Mixer | None = None, **extra) -> Mixer:
    """Build ``name`` at ``D_MODEL`` (weights copied from ``like`` when given), in eval mode and ``dtype``."""
    torch.manual_seed(1234)
    options = mixer_options(name)
    kwargs = {k: v for k, v in SMALL.items() if k in options}
    kwargs.update(extra)
    if impl is not None:
        kwargs["impl"] = impl
    mixer = seqzoo.build_mixer(name, D_MODEL, **kwargs)
    if like is not None:
        mixer.load_state_dict(like.state_dict())
    return mixer.to(dtype).eval()


def input_shape(mixer: Mixer, batch: int, length: int) -> tuple[int, ...]:
    """The mixer's input shape for ``batch`` sequences of ``length`` steps ([B, T, D], or e.g. [B, T, C, H, W])."""
    return tuple(mixer.example_input_shape(batch, length))


def rand(*shape, dtype=torch.float64, seed=0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item() if b.numel() else 0.0


def run_split(mixer: Mixer, x: torch.Tensor, sizes, state=None):
    """Feed ``x`` in pieces of ``sizes`` (summing to T), threading the state; returns (y, final state)."""
    ys, start = [], 0
    for size in sizes:
        y, state = mixer(x[:, start:start + size], state)
        ys.append(y)
        start += size
    assert start == x.shape[1]
    return torch.cat(ys, dim=1), state


def random_splits(length: int, seed: int, count: int = 3) -> list[list[int]]:
    rng = random.Random(seed)
    patterns = [[1] * length, [length - 1, 1]]
    for _ in range(count):
        cuts = sorted(rng.sample(range(1, length), rng.randint(1, min(6, length - 1))))
        patterns.append([b - a for a, b in zip([0] + cuts, cuts + [length])])
    return patterns


def float_leaves(state) -> list[torch.Tensor]:
    out = []
    map_state(state, lambda t: out.append(t) or t)
    return [t for t in out if t.is_floating_point()]


def skip_if_not_causal(name: str) -> None:
    if not mixer_cls(name).causal:
        pytest.skip(f"{name} is not causal (causal = False)")


# -- declarations ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_declares_contract_attributes(name):
    cls, entry = mixer_cls(name), mixer_entry(name)
    assert issubclass(cls, Mixer)
    impls = getattr(cls, "IMPLS", None)
    assert isinstance(impls, tuple) and impls and all(isinstance(i, str) for i in impls), \
        f"{cls.__name__} must declare IMPLS: tuple[str, ...] (first = the reference)"
    assert isinstance(getattr(cls, "constant_state", None), bool), \
        f"{cls.__name__} must declare constant_state: bool (True when the state size does not grow with T)"
    assert isinstance(cls.causal, bool)
    assert entry.paper, f"{name} must name its paper in register_mixer"
    docs = (inspect.getdoc(cls) or "") + (inspect.getmodule(cls).__doc__ or "")
    assert entry.arxiv in docs, f"{name}: arXiv id {entry.arxiv} should appear in its docstring"
    # the defaults work at d_model = 64
    mixer = seqzoo.build_mixer(name, D_MODEL)
    x = torch.randn(mixer.example_input_shape(1, 3))
    y, _ = mixer(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


# -- chunk invariance ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,impl", NAME_IMPLS)
def test_chunk_invariance(name, impl, dtype):
    skip_if_not_causal(name)
    mixer = make(name, dtype, impl)
    length = 29
    x = rand(*input_shape(mixer, 2, length), dtype=dtype, seed=1)
    x_next = rand(*input_shape(mixer, 2, 5), dtype=dtype, seed=2)
    with torch.no_grad():
        y_full, s_full = mixer(x)
        y_next_full, _ = mixer(x_next, s_full)
        for sizes in random_splits(length, seed=zlib.crc32(name.encode())):
            y, s = run_split(mixer, x, sizes)
            assert rel_err(y, y_full) <= TOL[dtype], f"split {sizes}: {rel_err(y, y_full):.3g}"
            # the threaded state continues the sequence exactly like the one-call state
            y_next, _ = mixer(x_next, s)
            assert rel_err(y_next, y_next_full) <= TOL[dtype], f"continuation after split {sizes}"


# -- causality -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,impl", NAME_IMPLS)
def test_causality(name, impl):
    skip_if_not_causal(name)
    mixer = make(name, torch.float64, impl)
    x = rand(*input_shape(mixer, 2, 24), seed=3)
    with torch.no_grad():
        y, _ = mixer(x)
        for t in (1, 8, 13, 23):  # 8: a chunk boundary when chunk_size = 8
            x2 = x.clone()
            x2[:, t:] += 3.0 * rand(*input_shape(mixer, 2, 24 - t), seed=t)
            y2, _ = mixer(x2)
            assert rel_err(y2[:, :t], y[:, :t]) <= 1e-12, f"y[:, :{t}] changed when x[:, {t}:] changed"
            assert rel_err(y2[:, t:], y[:, t:]) > 1e-6, f"y[:, {t}:] ignores x[:, {t}:]"  # the probe is live


# -- default state ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_none_state_equals_init_state(name, dtype):
    mixer = make(name, dtype)
    x = rand(*input_shape(mixer, 2, 13), dtype=dtype, seed=4)
    with torch.no_grad():
        y0, s0 = mixer(x, None)
        y1, s1 = mixer(x, mixer.init_state(2, device=x.device, dtype=x.dtype))
    assert rel_err(y1, y0) <= 1e-12
    assert sorted(s0) == sorted(s1)
    for key in s0:
        assert rel_err(s1[key], s0[key]) <= 1e-12, key


# -- lengths, implementations ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("length", [1, 13, 67])
@pytest.mark.parametrize("name", NAMES)
def test_lengths_and_impls_agree(name, length, dtype):
    impls = impls_of(name)
    ref = make(name, dtype, impls[0])
    x = rand(*input_shape(ref, 2, length), dtype=dtype, seed=5 + length)
    with torch.no_grad():
        y_ref, s_ref = ref(x)
        assert y_ref.shape == x.shape and y_ref.dtype == dtype
        assert torch.isfinite(y_ref).all()
        x_next = rand(*input_shape(ref, 2, 3), dtype=dtype, seed=6)
        y_next_ref, _ = ref(x_next, s_ref)
        for impl in impls[1:]:
            other = make(name, dtype, impl, like=ref)
            y, s = other(x)
            assert rel_err(y, y_ref) <= TOL[dtype], f"impl {impl!r} vs {impls[0]!r}: {rel_err(y, y_ref):.3g}"
            y_next, _ = other(x_next, s)  # the states are interchangeable too
            assert rel_err(y_next, y_next_ref) <= TOL[dtype], f"impl {impl!r}: state continuation"


@pytest.mark.parametrize("name", NAMES)
def test_gradients_agree_across_impls(name):
    impls = impls_of(name)
    ref = make(name, torch.float64, impls[0])
    x = rand(*input_shape(ref, 2, 13), seed=7)
    weight = rand(*input_shape(ref, 2, 13), seed=8)

    def grads(mixer, sizes=None):
        xg = x.clone().requires_grad_(True)
        y, _ = mixer(xg) if sizes is None else run_split(mixer, xg, sizes)
        (y * weight).sum().backward()
        return xg.grad, {n: p.grad for n, p in mixer.named_parameters() if p.requires_grad}

    gx_ref, gp_ref = grads(ref)
    assert torch.isfinite(gx_ref).all() and gx_ref.abs().max() > 0
    for impl in impls[1:]:
        other = make(name, torch.float64, impl, like=ref)
        gx, gp = grads(other)
        assert rel_err(gx, gx_ref) <= 1e-8, f"input grad, impl {impl!r}: {rel_err(gx, gx_ref):.3g}"
        for pname, g in gp_ref.items():
            if g is None:
                assert gp[pname] is None, pname
                continue
            assert rel_err(gp[pname], g) <= 1e-8, f"grad of {pname}, impl {impl!r}: {rel_err(gp[pname], g):.3g}"
    if mixer_cls(name).causal:  # back-propagation through a threaded state (truncated-BPTT style training)
        split = make(name, torch.float64, impls[0], like=ref)
        gx, gp = grads(split, [5, 1, 7])
        assert rel_err(gx, gx_ref) <= 1e-8, "input grad through the state"
        for pname, g in gp_ref.items():
            if g is not None:
                assert rel_err(gp[pname], g) <= 1e-8, f"grad of {pname} through the state"


# -- batches ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_batch_rows_are_independent(name):
    mixer = make(name, torch.float64)
    x = rand(*input_shape(mixer, 3, 13), seed=9)
    with torch.no_grad():
        y, state = mixer(x)
        for leaf in float_leaves(state) + [t for t in state.values() if not t.is_floating_point()]:
            assert leaf.shape[0] == 3, "every state tensor has the batch as its first dimension"
        for b in range(3):
            y_b, _ = mixer(x[b:b + 1])
            assert rel_err(y_b, y[b:b + 1]) <= 1e-10, f"row {b} differs when run alone (batch 1)"
        x2 = x.clone()
        x2[0] += 1.0
        y2, _ = mixer(x2)
        assert rel_err(y2[1:], y[1:]) <= 1e-12, "changing row 0 changed other rows"


@pytest.mark.parametrize("name", NAMES)
def test_call_does_not_modify_its_inputs(name):
    mixer = make(name, torch.float64)
    x = rand(*input_shape(mixer, 3, 7), seed=10)
    with torch.no_grad():
        _, state = mixer(x)
        x_copy, state_copy = x.clone(), map_state(state, torch.clone)
        y_a, _ = mixer(x, state)
        y_b, _ = mixer(x, state)  # the same state can be used twice (beam search, branching)
    assert torch.equal(x, x_copy)
    for key in state:
        assert torch.equal(state[key], state_copy[key]), f"state[{key!r}] was modified in place"
    assert torch.equal(y_a, y_b)


# -- dtypes of the state ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_state_dtypes(name):
    constant = mixer_cls(name).constant_state
    for dtype, expect in ((torch.bfloat16, torch.float32), (torch.float32, torch.float32),
                          (torch.float64, torch.float64)):
        mixer = make(name, dtype)
        x = rand(*input_shape(mixer, 2, 13), dtype=dtype, seed=11)
        with torch.no_grad():
            y, state = mixer(x[:, :6])
            y2, state = mixer(x[:, 6:], state)
        assert y.dtype == dtype and y2.dtype == dtype
        assert torch.isfinite(y).all() and torch.isfinite(y2).all()
        for leaf in float_leaves(state):
            if constant:  # a recurrent state: float32, float64 for float64 inputs
                assert leaf.dtype == expect, f"{dtype} inputs: state tensor of dtype {leaf.dtype}, want {expect}"
            else:  # a cache may be kept in the compute dtype
                assert leaf.dtype in (expect, dtype), f"{dtype} inputs: state tensor of dtype {leaf.dtype}"


@pytest.mark.parametrize("name", NAMES)
def test_state_size(name):
    mixer = make(name, torch.float32)
    sizes = {}
    for length in (1, 8, 13, 64):
        size = mixer.state_size(length)
        assert isinstance(size, int) and not isinstance(size, bool) and size > 0
        with torch.no_grad():
            _, state = mixer(torch.zeros(input_shape(mixer, 1, length)))
        assert size == state_numel(state), f"state_size({length}) = {size}, measured {state_numel(state)}"
        sizes[length] = size
    if mixer_cls(name).constant_state:
        assert sizes[8] == sizes[64], "constant_state = True but the state grows with T"
    else:
        assert sizes[64] > sizes[8], "constant_state = False but the state does not grow with T"
