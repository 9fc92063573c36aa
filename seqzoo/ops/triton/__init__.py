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


def patch_interpreter_loop_bounds() -> None:
    """Let ``range(n)`` take a tensor ``n`` in Triton 3.6's CPU interpreter under NumPy ≥ 2.3.

    The interpreter keeps scalars as one-element 1-d arrays and converts them with ``int(array)``, which NumPy 2
    rejects, so every data-dependent loop bound fails there (compiled kernels are unaffected). Patched once, only
    when the interpreter is on (the kernel modules call this at import).
    """
    if not (HAS_TRITON and interpreting()):
        return
    from triton.runtime import interpreter

    if getattr(interpreter, "_seqzoo_loop_bounds", False):
        return
    original = interpreter._patch_lang_tensor

    def patch(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    interpreter._patch_lang_tensor = patch
    interpreter._seqzoo_loop_bounds = True


def triton_usable(*tensors) -> bool:
    """Whether the Triton kernels can run on these tensors: Triton importable and all tensors on CUDA, or all on
    CPU under the interpreter."""
    if not HAS_TRITON or not tensors:
        return False
    if all(t.is_cuda for t in tensors):
        return True
    return interpreting() and all(t.device.type == "cpu" for t in tensors)
