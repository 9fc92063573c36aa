"""Sequence mixers, one file per mechanism, grouped by family. Importing this package registers them all."""

from . import attention, linear, rnn, ssm  # noqa: F401
