"""Registry of mixers: ``register_mixer`` (a class decorator), ``list_mixers`` and ``build_mixer``.

Each entry records the paper the mixer implements, so ``seqzoo list`` can show where it comes from.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from .errors import SeqzooError, choice_error


@dataclass(frozen=True)
class MixerEntry:
    name: str
    cls: type
    paper: str
    arxiv: str
    summary: str


_MIXERS: dict[str, MixerEntry] = {}


def register_mixer(name: str, *, paper: str, arxiv: str = ""):
    """Class decorator: register ``cls`` under ``name`` with its paper title and arXiv id."""

    def decorate(cls):
        if name in _MIXERS and _MIXERS[name].cls is not cls:
            raise SeqzooError(f"mixer name {name!r} is registered twice ({_MIXERS[name].cls.__name__}, {cls.__name__})")
        doc = inspect.getdoc(cls) or ""
        _MIXERS[name] = MixerEntry(name, cls, paper, arxiv, doc.splitlines()[0] if doc else "")
        cls.registry_name = name
        return cls

    return decorate


def _load_builtin_mixers() -> None:
    from .. import mixers  # noqa: F401  (importing registers every built-in mixer)


def list_mixers() -> list[str]:
    """Names of all registered mixers, sorted."""
    _load_builtin_mixers()
    return sorted(_MIXERS)


def mixer_entry(name: str) -> MixerEntry:
    _load_builtin_mixers()
    if name not in _MIXERS:
        raise choice_error("mixer", name, _MIXERS)
    return _MIXERS[name]


def build_mixer(name: str, d_model: int, **kwargs):
    """Build the mixer ``name`` for width ``d_model``; unknown keyword arguments are a one-line error."""
    entry = mixer_entry(name)
    if not isinstance(d_model, int) or isinstance(d_model, bool) or d_model <= 0:
        raise SeqzooError(f"d_model must be a positive int, got {d_model!r}")
    params = inspect.signature(entry.cls.__init__).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    valid = [p for p in params if p not in ("self", "d_model")]
    unknown = [k for k in kwargs if k not in valid]
    if unknown and not accepts_any:
        raise SeqzooError(f"unknown option {unknown[0]!r} for mixer {name!r}; valid: {', '.join(valid) or '(none)'}")
    return entry.cls(d_model, **kwargs)


def mixer_options(name: str) -> dict[str, object]:
    """The keyword options of mixer ``name`` with their defaults."""
    params = inspect.signature(mixer_entry(name).cls.__init__).parameters
    return {k: p.default for k, p in params.items()
            if k not in ("self", "d_model") and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
