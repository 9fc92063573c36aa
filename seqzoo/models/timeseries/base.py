"""The forecaster contract and registry (time-series domain; DESIGN.md Contract 3 for forecasting backbones).

Every forecaster maps a lookback window to a horizon, in the layout and conventions of Time-Series-Library:

    forward(x, x_mark=None, y_mark=None) -> y_hat
        x       [B, seq_len, n_vars]   normalised history (the protocol's scaler is fit on the train split only)
        x_mark  [B, seq_len, n_time]   calendar features of the history (``timeF``: values in [-0.5, 0.5]), or None
        y_mark  [B, pred_len, n_time]  calendar features of the horizon, or None
        y_hat   [B, pred_len, n_vars]  (for the ``MS`` setting the protocol reads the last variate)

Encoder–decoder models that need Informer-style decoder inputs build them themselves: the known part
(``label_len`` steps) is ``x[:, -label_len:]`` and its marks are ``x_mark[:, -label_len:]`` — exactly what
Time-Series-Library feeds (its ``batch_y[:, :label_len]`` equals the end of ``batch_x``).

A forecaster may also expose ``aux_loss`` (a scalar tensor set during ``forward``, e.g. a mixture-of-experts load
balancing loss) which the trainer adds to the loss; it defaults to None.

Registry: ``register_forecaster(name, paper=..., arxiv=...)`` (class decorator), ``list_forecasters()``,
``build_forecaster(name, seq_len=, pred_len=, n_vars=, n_time=4, **options)``. Unknown options are a one-line error
naming the valid ones.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from dataclasses import dataclass

from torch import Tensor, nn

from ...core.errors import SeqzooError, choice_error


class Forecaster(nn.Module):
    """Base class: stores the window geometry and validates inputs; subclasses implement ``forecast``."""

    registry_name: str = ""

    def __init__(self, seq_len: int, pred_len: int, n_vars: int, n_time: int = 4):
        super().__init__()
        for label, value in (("seq_len", seq_len), ("pred_len", pred_len), ("n_vars", n_vars)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise SeqzooError(f"{label} must be a positive int, got {value!r}")
        if not isinstance(n_time, int) or n_time < 0:
            raise SeqzooError(f"n_time must be a non-negative int, got {n_time!r}")
        self.seq_len, self.pred_len, self.n_vars, self.n_time = seq_len, pred_len, n_vars, n_time
        self.aux_loss: Tensor | None = None

    def forward(self, x: Tensor, x_mark: Tensor | None = None, y_mark: Tensor | None = None) -> Tensor:
        if x.dim() != 3 or x.shape[2] != self.n_vars:
            raise SeqzooError(f"{type(self).__name__} expects x of shape [B, T, {self.n_vars}], got {list(x.shape)}")
        if x.shape[1] != self.seq_len and not getattr(self, "any_length", False):
            raise SeqzooError(f"{type(self).__name__} was built for seq_len={self.seq_len}, got a window of {x.shape[1]}")
        for label, mark, steps in (("x_mark", x_mark, x.shape[1]), ("y_mark", y_mark, self.pred_len)):
            if mark is not None and (mark.dim() != 3 or mark.shape[0] != x.shape[0] or mark.shape[1] != steps):
                raise SeqzooError(f"{label} must have shape [{x.shape[0]}, {steps}, n_time], got {list(mark.shape)}")
        self.aux_loss = None
        y = self.forecast(x, x_mark, y_mark)
        if y.shape != (x.shape[0], self.pred_len, self.n_vars):
            raise RuntimeError(f"{type(self).__name__}.forecast returned {list(y.shape)}, "
                               f"expected {[x.shape[0], self.pred_len, self.n_vars]}")
        return y

    def forecast(self, x: Tensor, x_mark: Tensor | None, y_mark: Tensor | None) -> Tensor:  # pragma: no cover
        raise NotImplementedError


@dataclass(frozen=True)
class ForecasterEntry:
    name: str
    cls: type
    paper: str
    arxiv: str


_FORECASTERS: dict[str, ForecasterEntry] = {}


def register_forecaster(name: str, *, paper: str, arxiv: str = ""):
    def decorate(cls):
        if name in _FORECASTERS and _FORECASTERS[name].cls is not cls:
            raise SeqzooError(f"forecaster name {name!r} is registered twice")
        _FORECASTERS[name] = ForecasterEntry(name, cls, paper, arxiv)
        cls.registry_name = name
        return cls

    return decorate


def _load_builtin() -> None:
    from . import __path__ as pkg_path

    for info in pkgutil.iter_modules(pkg_path):
        if not info.name.startswith("_") and info.name != "base":
            importlib.import_module(f"{__package__}.{info.name}")


def list_forecasters() -> list[str]:
    _load_builtin()
    return sorted(_FORECASTERS)


def forecaster_entry(name: str) -> ForecasterEntry:
    _load_builtin()
    if name not in _FORECASTERS:
        raise choice_error("forecaster", name, _FORECASTERS)
    return _FORECASTERS[name]


def build_forecaster(name: str, *, seq_len: int, pred_len: int, n_vars: int, n_time: int = 4, **options) -> Forecaster:
    entry = forecaster_entry(name)
    params = inspect.signature(entry.cls.__init__).parameters
    valid = [p for p in params if p not in ("self", "seq_len", "pred_len", "n_vars", "n_time")]
    unknown = [k for k in options if k not in valid]
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise SeqzooError(f"unknown option {unknown[0]!r} for forecaster {name!r}; valid: {', '.join(valid) or '(none)'}")
    return entry.cls(seq_len=seq_len, pred_len=pred_len, n_vars=n_vars, n_time=n_time, **options)
