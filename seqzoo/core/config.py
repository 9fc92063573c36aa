"""Configuration: nested dataclasses loaded from TOML and overridden with ``--set section.key=value``.

Unknown sections or keys, wrong types and malformed values are one-line :class:`SeqzooError`s that name the
valid choices. Values given on the command line are parsed as TOML literals (``3``, ``1e-3``, ``true``,
``"text"``, ``["attention", "retention"]``); a bare word that is not a TOML literal is taken as a string.
"""

from __future__ import annotations

import dataclasses
try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from .errors import SeqzooError

T = TypeVar("T")


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (int → float is allowed) and return it."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except SeqzooError as e:
                errors.append(str(e))
        raise SeqzooError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise SeqzooError(f"{where}: {value!r} is not valid; valid: {', '.join(map(repr, choices))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise SeqzooError(f"{where}: expected a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise SeqzooError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise SeqzooError(f"{where}: expected a table of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, where)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SeqzooError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SeqzooError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise SeqzooError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise SeqzooError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict, where: str = "config") -> T:
    """Build dataclass ``cls`` from a (nested) dict, refusing unknown keys and wrong types."""
    types_ = _field_types(cls)
    unknown = [k for k in data if k not in types_]
    if unknown:
        raise SeqzooError(f"unknown key {where}.{unknown[0]}; valid: {', '.join(types_)}".replace("config.", "", 1))
    kwargs = {k: _coerce(v, types_[k], f"{where}.{k}".replace("config.", "", 1)) for k, v in data.items()}
    try:
        obj = cls(**kwargs)
    except TypeError as e:  # a missing required field
        raise SeqzooError(f"{where}: {e}") from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def to_dict(obj) -> dict:
    """A dataclass config as a plain nested dict (TOML/JSON serialisable)."""
    return dataclasses.asdict(obj)


def parse_value(text: str) -> Any:
    """Parse a command-line value as a TOML literal, falling back to a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` strings to a nested dict (a copy is returned)."""
    import copy

    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise SeqzooError(f"override {item!r} must look like section.key=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SeqzooError(f"override {key!r}: {part!r} is a value, not a section")
        node[parts[-1]] = parse_value(text.strip())
    return data


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SeqzooError(f"config file {str(path)!r} does not exist")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise SeqzooError(f"config file {str(path)!r} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise SeqzooError(f"config file {str(path)!r} is not valid TOML: {e}") from None


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Load dataclass ``cls`` from a TOML file (or defaults) plus ``--set`` overrides."""
    data = read_toml(path) if path is not None else {}
    return from_dict(cls, apply_overrides(data, overrides or []))
