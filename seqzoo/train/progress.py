"""Training progress display: a ``rich`` progress bar on an interactive terminal, quiet otherwise.

The bar shows the step, loss, learning rate and throughput. It is only drawn when enabled, on rank 0, and when
stderr is a terminal (so logs of batch jobs and CI stay clean); evaluation results are printed as plain lines
whenever progress is enabled on rank 0, terminal or not. The machine-readable record is ``metrics.jsonl``.
"""

from __future__ import annotations

import sys


class TrainProgress:
    """``update(step, **info)`` after each logged step, ``note(text)`` for evaluation lines, ``close()``."""

    def __init__(self, total: int, start: int, *, enabled: bool):
        self.enabled = enabled
        self._bar = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self._bar = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                                 console=Console(stderr=True), transient=False)
            self._task = self._bar.add_task("train", total=total, completed=start, info="")
            self._bar.start()

    def update(self, step: int, **info: float) -> None:
        if self._bar is None:
            return
        text = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items())
        self._bar.update(self._task, completed=step, info=text)

    def note(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.console.print(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
