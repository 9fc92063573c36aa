"""The one error type of seqzoo.

Every message names what was wrong and what would have been valid, on one line, so the CLI can print it
and exit with code 2 instead of showing a traceback.
"""

from __future__ import annotations


class SeqzooError(ValueError):
    """Bad input to seqzoo: an unknown name, a wrong type or shape, a missing or malformed file.

    The message is one line: ``what was wrong; what is valid``.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def check(condition: bool, message: str) -> None:
    """Raise :class:`SeqzooError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise SeqzooError(message)


def choice_error(kind: str, got: object, valid) -> SeqzooError:
    """A uniform 'unknown X' error listing the valid choices."""
    return SeqzooError(f"unknown {kind} {got!r}; valid: {', '.join(map(str, sorted(valid)))}")
