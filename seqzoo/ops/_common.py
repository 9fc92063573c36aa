"""Shared plumbing of the functional ops: input validation, impl resolution and dtype handling.

Written once here so that every op in :mod:`seqzoo.ops` checks its inputs the same way and reports bad input as a
one-line :class:`~seqzoo.core.errors.SeqzooError` naming what was wrong and what is valid (DESIGN.md, Contract 1).

No paper of its own: the mechanisms, their papers (title, arXiv id) and equations are in the op modules. The only
arithmetic here is :func:`matmul_add_`, ``scale · (acc + a @ b)``, the last step of the chunked forms.

Conventions shared by the ops:

* layout is sequence-first ``[B, T, H, D]``; the matrix-state ops work internally heads-first ``[B, H, T, D]``;
* the recurrent state is float32, or float64 when the inputs are float64 (:func:`seqzoo.core.state.state_dtype`),
  and all accumulation happens in that dtype; the output takes the dtype of the values (``v``, or ``u`` for the
  selective scan);
* ``scale=None`` means ``K ** -0.5``, applied to the queries.
"""

from __future__ import annotations

import functools
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.errors import SeqzooError
from ..core.state import state_dtype


def fail(op: str, message: str) -> SeqzooError:
    """The error to raise for bad input to ``op`` (callers write ``raise fail(...)``)."""
    return SeqzooError(f"{op}: {message}")


# "auto" uses the step-by-step form for calls this short (decoding): it has no chunk set-up cost.
AUTO_RECURRENT_MAX_T = 4


def auto_for_length(auto: str, length: int) -> str:
    """The impl ``"auto"`` stands for at sequence length ``length``."""
    return "recurrent" if length <= AUTO_RECURRENT_MAX_T else auto


def resolve_impl(op: str, impl: str, valid: tuple[str, ...], auto: str) -> str:
    """Map ``impl`` to one of ``valid`` (``"auto"`` becomes ``auto``); anything else is a :class:`SeqzooError`."""
    if impl == "auto":
        return auto
    if not isinstance(impl, str) or impl not in valid:
        raise SeqzooError(f"impl {impl!r} is not valid for {op}; valid: {', '.join(('auto',) + valid)}")
    return impl


def check_chunk_size(op: str, chunk_size) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise fail(op, f"chunk_size must be a positive int, got {chunk_size!r}")
    return chunk_size


def check_tensor(op: str, name: str, x, dims: str) -> Tensor:
    """Check that ``x`` is a floating-point tensor with one dimension per comma-separated name in ``dims``."""
    if not isinstance(x, Tensor):
        raise fail(op, f"{name} must be a torch.Tensor of shape [{dims}], got {type(x).__name__}")
    ndim = len(dims.split(","))
    if x.dim() != ndim:
        raise fail(op, f"{name} must have {ndim} dims [{dims}], got shape {list(x.shape)}")
    if not x.is_floating_point():
        raise fail(op, f"{name} must be a floating-point tensor, got {x.dtype}")
    return x


def check_shape(op: str, name: str, x, shape: tuple[int, ...], dims: str) -> Tensor:
    """Check ``x`` has exactly ``shape`` (named ``dims``), e.g. ``check_shape(op, "g", g, (B, T, H), "B, T, H")``."""
    check_tensor(op, name, x, dims)
    if tuple(x.shape) != tuple(shape):
        raise fail(op, f"{name} must have shape [{dims}] = {list(shape)}, got {list(x.shape)}")
    return x


def check_same_device(op: str, **tensors: Tensor) -> torch.device:
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    first = next(iter(devices.values()))
    for name, dev in devices.items():
        if dev != first:
            raise fail(op, f"all inputs must be on one device; {name} is on {dev}, others on {first}")
    return first


def check_qkv(op: str, q, k, v) -> tuple[int, int, int, int, int]:
    """Validate ``q, k: [B, T, H, K]`` and ``v: [B, T, H, V]``; return ``(B, T, H, K, V)``."""
    check_tensor(op, "q", q, "B, T, H, K")
    B, T, H, K = q.shape
    check_shape(op, "k", k, (B, T, H, K), "B, T, H, K")
    check_tensor(op, "v", v, "B, T, H, V")
    if tuple(v.shape[:3]) != (B, T, H):
        raise fail(op, f"v must have shape [B, T, H, V] with [B, T, H] = {[B, T, H]} like q, got {list(v.shape)}")
    check_same_device(op, q=q, k=k, v=v)
    return B, T, H, K, v.shape[3]


def acc_dtype(*tensors: Tensor) -> torch.dtype:
    """Accumulation / state dtype: float64 if any input is float64, else float32."""
    dtype = functools.reduce(torch.promote_types, (t.dtype for t in tensors if t is not None))
    return state_dtype(dtype)


def resolve_scale(op: str, scale, K: int) -> float:
    if scale is None:
        return K ** -0.5
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise fail(op, f"scale must be a number or None (meaning K ** -0.5), got {scale!r}")
    return float(scale)


def start_state(op: str, state, shape: tuple[int, ...], dims: str, dtype: torch.dtype, device) -> Tensor:
    """The starting state: zeros when ``state`` is None, else ``state`` checked for ``shape`` and cast to ``dtype``."""
    if state is None:
        return torch.zeros(shape, dtype=dtype, device=device)
    check_shape(op, "initial_state", state, shape, dims)
    if state.device != torch.device(device):
        raise fail(op, f"initial_state is on {state.device} but the inputs are on {device}")
    return state.to(dtype)


def swap_time_heads(x: Tensor, dtype: torch.dtype) -> Tensor:
    """``[B, T, H, ...] <-> [B, H, T, ...]`` as a fresh contiguous tensor of ``dtype`` (one copy, differentiable)."""
    x = x.transpose(1, 2)
    return torch.empty(x.shape, dtype=dtype, device=x.device).copy_(x)


def pad_time(x: Tensor, multiple: int, dim: int, value: float = 0.0) -> Tensor:
    """Pad dimension ``dim`` of ``x`` at its end with ``value`` up to a multiple of ``multiple``."""
    extra = -x.shape[dim] % multiple
    if extra == 0:
        return x
    dim = dim % x.dim()
    pad = [0, 0] * (x.dim() - 1 - dim) + [0, extra]
    return F.pad(x, pad, value=value)


def no_autocast(x: Tensor):
    """Context in which autocast is off on ``x``'s device: the ops compute in their accumulation dtype (float32 for
    16-bit inputs) as Contract 1 says, instead of letting autocast drop their matmuls back to 16 bits."""
    return torch.autocast(x.device.type, enabled=False)


def matmul_add_(acc: Tensor, a: Tensor, b: Tensor, scale: float = 1.0) -> Tensor:
    """``scale · (acc + a @ b)`` for batched matrices, computed in place in ``acc`` by one BLAS call.

    ``acc`` must be a fresh intermediate that autograd does not need (e.g. the result of another matmul).
    """
    acc3 = acc.view(-1, *acc.shape[-2:])
    acc3.baddbmm_(a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:]), beta=scale, alpha=scale)
    return acc


def causal_mask(n: int, device, strict: bool = False) -> Tensor:
    """Boolean ``[n, n]`` mask, True where key ``s`` is visible from query ``t``: ``s <= t`` (``s < t`` if strict)."""
    return torch.ones(n, n, dtype=torch.bool, device=device).tril(-1 if strict else 0)


class MatrixOpInputs:
    """Validated inputs of a matrix-state op, heads-first in the accumulation dtype.

    Attributes: ``q, k: [B, H, T, K]``, ``v: [B, H, T, V]``, ``gates`` (each ``[B, H, T]``, same order as given),
    ``state: [B, H, K, V]``, ``scale`` (a float; q is *not* scaled yet, so the chunk forms can fold the scale into
    their last matmul), ``impl``, ``chunk_size``, ``out_dtype`` (the dtype of ``v``) and ``empty`` (T == 0).
    """

    def __init__(self, op: str, q, k, v, gates: dict, *, scale, initial_state, impl, chunk_size,
                 valid: tuple[str, ...], auto: str):
        B, T, H, K, V = check_qkv(op, q, k, v)
        for name, g in gates.items():
            check_shape(op, name, g, (B, T, H), "B, T, H")
            check_same_device(op, q=q, **{name: g})
        self.impl = resolve_impl(op, impl, valid, auto_for_length(auto, T))
        self.chunk_size = check_chunk_size(op, chunk_size)
        dtype = acc_dtype(q, k, v, *gates.values())
        self.scale = resolve_scale(op, scale, K)
        self.state = start_state(op, initial_state, (B, H, K, V), "B, H, K, V", dtype, q.device)
        self.q = swap_time_heads(q, dtype)
        self.k = swap_time_heads(k, dtype)
        self.v = swap_time_heads(v, dtype)
        self.gates = [swap_time_heads(g, dtype) for g in gates.values()]
        self.out_dtype = v.dtype
        self.empty = T == 0

    def output(self, o: Tensor) -> Tensor:
        """Heads-first accumulation-dtype output ``[B, H, T, V]`` back to ``[B, T, H, V]`` in the dtype of ``v``."""
        return swap_time_heads(o, self.out_dtype)
