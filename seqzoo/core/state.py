"""Recurrent state handling.

A mixer's state is a ``dict[str, Tensor]`` whose tensors all have the batch as their first dimension (a KV cache,
a recurrent matrix state, a convolution tail, a position counter of shape ``[B]``). A model's state is a list of
those, one per layer. These helpers work on any nesting of dicts, lists and tuples of tensors.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

State = dict[str, Tensor]


def map_state(state: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """Apply ``fn`` to every tensor in a (nested) state."""
    if isinstance(state, Tensor):
        return fn(state)
    if isinstance(state, dict):
        return {k: map_state(v, fn) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(map_state(v, fn) for v in state)
    if state is None:
        return None
    raise TypeError(f"state leaves must be tensors, got {type(state).__name__}")


def select_batch(state: Any, index: Tensor) -> Any:
    """Keep (and reorder) the batch rows ``index`` of every tensor in the state."""
    return map_state(state, lambda t: t.index_select(0, index.to(t.device)))


def state_numel(state: Any) -> int:
    """Number of elements per sequence (batch dimension excluded) held by a state."""
    total = 0

    def count(t: Tensor) -> Tensor:
        nonlocal total
        total += t[0].numel() if t.dim() > 0 else 1
        return t

    map_state(state, count)
    return total


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """Recurrent states are float32, or float64 when the inputs are float64 (DESIGN.md, Contract 1)."""
    return torch.float64 if dtype == torch.float64 else torch.float32
