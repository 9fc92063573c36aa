"""Reproductions: ``seqzoo repro <paper-id>`` runs a paper's headline claim at small scale (DESIGN.md, Contract 4).

A reproduction is a function ``run(quick: bool) -> ReproResult`` registered with :func:`register_repro`. It returns
named checks, each with the measured value beside the expectation (from the paper or the reference notes) and
whether it held; the command prints them and exits non-zero when any check fails. ``quick`` shrinks the run to a
smoke test (used by the test suite), whose checks are reported but not meant to hold.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from dataclasses import asdict, dataclass, field
from typing import Callable

from ..core.errors import choice_error


@dataclass
class Check:
    name: str
    measured: str
    expected: str
    held: bool


@dataclass
class ReproResult:
    paper_id: str
    checks: list[Check] = field(default_factory=list)
    details: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def held(self) -> bool:
        return bool(self.checks) and all(c.held for c in self.checks)

    def check(self, name: str, measured, expected: str, held: bool) -> None:
        text = f"{measured:.4g}" if isinstance(measured, float) else str(measured)
        self.checks.append(Check(name, text, expected, bool(held)))

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "held": self.held}, indent=2, default=str)

    def render(self) -> str:
        lines = [f"reproduction {self.paper_id}: {'HELD' if self.held else 'DID NOT HOLD'}"]
        for c in self.checks:
            lines.append(f"  [{'ok' if c.held else 'FAIL'}] {c.name}: measured {c.measured}; expected {c.expected}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


@dataclass(frozen=True)
class ReproEntry:
    paper_id: str
    title: str
    arxiv: str
    claim: str
    run: Callable[[bool], ReproResult]


_REPROS: dict[str, ReproEntry] = {}


def register_repro(paper_id: str, *, title: str, arxiv: str = "", claim: str):
    def decorate(fn):
        _REPROS[paper_id] = ReproEntry(paper_id, title, arxiv, claim, fn)
        return fn

    return decorate


def _load_all() -> None:
    from .. import repro

    for info in pkgutil.iter_modules(repro.__path__):
        if not info.name.startswith("_") and info.name not in ("base", "common"):
            importlib.import_module(f"{repro.__name__}.{info.name}")


def list_repros() -> list[ReproEntry]:
    _load_all()
    return [_REPROS[k] for k in sorted(_REPROS)]


def get_repro(paper_id: str) -> ReproEntry:
    _load_all()
    if paper_id not in _REPROS:
        raise choice_error("reproduction", paper_id, _REPROS)
    return _REPROS[paper_id]
