"""Backbones built from registered mixers."""

from .causal_lm import Block, CausalLM
from .config import ModelConfig

__all__ = ["CausalLM", "Block", "ModelConfig"]
