"""Run a Triton test file as a script under Triton's CPU interpreter (``TRITON_INTERPRET=1`` must be set before
Triton is imported, so the CPU checks of the kernel tests run in a fresh process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_under_interpreter(test_file: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python test_file`` with ``TRITON_INTERPRET=1``, one thread and the repository on ``PYTHONPATH``."""
    root = Path(test_file).resolve().parents[1]
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(root)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return subprocess.run([sys.executable, str(Path(test_file).resolve())], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=root)
