"""Triton kernels for the recurrent ops (forward and backward), used by ``impl="triton"`` and, on CUDA, ``"auto"``.

The pure-PyTorch forms in :mod:`seqzoo.ops` stay the reference: every kernel here is tested against the float64
recurrence. Triton is optional: on a machine without it (or without a CUDA device) this package still imports,
:data:`HAS_TRITON` is False and the ops never pick a Triton form. With ``TRITON_INTERPRET=1`` the kernels run on
CPU tensors through Triton's interpreter (slow; used by the tests on tiny shapes).
"""

from __future__ import annotations

import functools
import os

import torch

try:  # Triton is not a dependency of the CPU install.
    import triton  # noqa: F401
    import triton.language as tl  # noqa: F401

    HAS_TRITON = True
except ImportError:  # pragma: no cover - depends on the machine
    HAS_TRITON = False


def interpreting() -> bool:
    """True when Triton's CPU interpreter is on (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def patch_interpreter() -> None:
    """Make Triton 3.6's CPU interpreter compute what the GPU computes, in two places (patched once, only when the
    interpreter is on; the kernel modules call this at import; compiled kernels are unaffected):

    * **loop bounds**: the interpreter keeps scalars as one-element 1-d arrays and converts them with
      ``int(array)``, which NumPy ≥ 2.3 rejects, so every data-dependent ``range(n)`` failed;
    * **float32 → bfloat16 casts**: the interpreter truncated (rounded toward zero) where the GPU rounds to nearest
      even, a biased error of up to one unit in the last place that inflated every bf16 error measured on CPU
      (about 2× for the delta rule's outputs). Casts now round through PyTorch, as the GPU does.
    """
    if not (HAS_TRITON and interpreting()):
        return
    from triton.runtime import interpreter

    if getattr(interpreter, "_seqzoo_patched", False):
        return
    original_patch = interpreter._patch_lang_tensor

    def patch(tensor, scope):
        original_patch(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    interpreter._patch_lang_tensor = patch

    import numpy as np
    import torch

    original_cast = interpreter.InterpreterBuilder.cast_impl

    def cast_impl(self, src, dst_type):
        if src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16:
            values = torch.from_numpy(np.ascontiguousarray(src.data, dtype=np.float32))
            bits = values.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
            return interpreter.TensorHandle(bits.reshape(np.shape(src.data)), tl.bfloat16)
        return original_cast(self, src, dst_type)

    interpreter.InterpreterBuilder.cast_impl = cast_impl
    interpreter._seqzoo_patched = True


def triton_usable(*tensors) -> bool:
    """Whether the Triton kernels can run on these tensors: Triton importable and all tensors on CUDA, or all on
    CPU under the interpreter."""
    if not HAS_TRITON or not tensors:
        return False
    if all(t.is_cuda for t in tensors):
        return True
    return interpreting() and all(t.device.type == "cpu" for t in tensors)


def cached_layout(build):
    """Cache the small, read-only index tensors that ``build(*sizes, device)`` makes from shapes alone (chunk and
    sequence offsets): making them costs several tiny launches per call, a measurable share of a short call's host
    time. Not cached while a CUDA graph is being captured, whose memory pool must not hold them."""
    cached = functools.lru_cache(maxsize=32)(build)

    @functools.wraps(build)
    def layout(*key):
        device = key[-1]
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            return build(*key)
        return cached(*key)

    return layout
