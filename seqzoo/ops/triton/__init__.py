"""Triton kernels for the recurrent ops (forward and backward), used by ``impl="triton"`` and, on CUDA, ``"auto"``.

The pure-PyTorch forms in :mod:`seqzoo.ops` stay the reference: every kernel here is tested against the float64
recurrence. Triton is optional: on a machine without it (or without a CUDA device) this package still imports,
:data:`HAS_TRITON` is False and the ops never pick a Triton form. With ``TRITON_INTERPRET=1`` the kernels run on
CPU tensors through Triton's interpreter (slow; used by the tests on tiny shapes).
"""

from __future__ import annotations

import os

try:  # Triton is not a dependency of the CPU install.
    import triton  # noqa: F401
    import triton.language as tl  # noqa: F401

    HAS_TRITON = True
except ImportError:  # pragma: no cover - depends on the machine
    HAS_TRITON = False


def interpreting() -> bool:
    """True when Triton's CPU interpreter is on (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_usable(*tensors) -> bool:
    """Whether the Triton kernels can run on these tensors: Triton importable and all tensors on CUDA, or all on
    CPU under the interpreter."""
    if not HAS_TRITON or not tensors:
        return False
    if all(t.is_cuda for t in tensors):
        return True
    return interpreting() and all(t.device.type == "cpu" for t in tensors)
