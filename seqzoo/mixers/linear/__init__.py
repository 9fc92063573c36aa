"""Linear-recurrent family: linear attention, retention (and later DeltaNet, hybrids)."""

from . import linear_attention, retention  # noqa: F401
