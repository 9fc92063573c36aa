"""Generation engine: prefill + stepping through the model state; greedy / temperature / top-k / top-p."""

from .generate import generate
from .sampling import filter_logits, sample_next

__all__ = ["generate", "sample_next", "filter_logits"]
