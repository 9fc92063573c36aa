"""Synthetic token tasks that tell architectures apart (deterministic from a seed)."""

from .mqar import MQAR
from .selective_copying import SelectiveCopying

__all__ = ["MQAR", "SelectiveCopying"]
