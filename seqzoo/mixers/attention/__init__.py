"""Softmax-attention family."""

from . import rope, softmax  # noqa: F401
