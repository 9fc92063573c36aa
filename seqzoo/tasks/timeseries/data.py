"""Forecasting data under the Time-Series-Library protocol (TSLib ``data_provider/data_loader.py``).

A CSV with a date column and numeric columns becomes three chronological splits of stride-1 windows:

* **Splits.** ``layout="ett_hour"`` (``Dataset_ETT_hour``): train = the first 12·30·24 = 8640 rows, val = the next
  4·30·24 = 2880, test = the next 2880 (rows after 20 "months" are never used); ``"ett_minute"``: the same ×4.
  ``"ratio"`` (``Dataset_Custom``): ``n_train = int(0.7 n)``, ``n_test = int(0.2 n)``, val = the rest.
  ``"auto"`` picks ``ett_hour`` / ``ett_minute`` for files named ``ETTh*`` / ``ETTm*`` and ``ratio`` otherwise.
  Val and test start ``seq_len`` rows early (``border1 = split_start − seq_len``), so their first window's history
  lies in the previous split.
* **Columns.** The date column is dropped from the values, the target (default: the last column; ``OT`` for ETT)
  is moved last (``Dataset_Custom``'s ``[date, others…, target]``). ``features``: ``M`` — all variates in and out;
  ``S`` — the target alone; ``MS`` — all variates in, the target scored (the model still outputs every variate;
  :meth:`ForecastData.select_target` keeps the last one, as TSLib's ``f_dim = -1``).
* **Scaling.** A standard scaler (mean, population std — sklearn's ``StandardScaler``) fit on the train rows only,
  applied to the whole series; metrics are on this scaled data (TSLib's default, ``--inverse`` off).
* **Windows.** Window ``i`` of a split with rows ``[b1, b2)``: history ``x = v[b1+i : b1+i+L]``, horizon
  ``y = v[b1+i+L : b1+i+L+H]``, calendar marks (``timeF``, :mod:`.timefeatures`) for both; a split has
  ``(b2 − b1) − L − H + 1`` windows. Batches are ``(x [B,L,C], y [B,H,C'], x_mark [B,L,F], y_mark [B,H,F])`` torch
  float32 tensors; ``y`` is the horizon only (models that need a decoder "label" part read ``x[:, -label_len:]``).
  Evaluation loaders keep every window (no dropped last batch; TSLib ``drop_last=False``).

Malformed input (missing file, date or target column, unparsable dates, non-numeric cells, NaNs, too few rows for
``seq_len + pred_len`` in a split) raises a one-line :class:`SeqzooError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ...core.errors import SeqzooError, choice_error
from .timefeatures import time_features

SPLITS = ("train", "val", "test")
FEATURES = ("M", "S", "MS")
LAYOUTS = ("auto", "ett_hour", "ett_minute", "ratio")
_ETT_MONTH_ROWS = {"ett_hour": 30 * 24, "ett_minute": 30 * 24 * 4}


class StandardScaler:
    """``(v − mean) / std`` per column, fit on one block of rows (sklearn's ``StandardScaler``: population std,
    a zero std replaced by 1)."""

    def __init__(self, mean: np.ndarray | None = None, std: np.ndarray | None = None):
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float64)
        self.std = None if std is None else np.asarray(std, dtype=np.float64)

    def fit(self, values: np.ndarray) -> "StandardScaler":
        values = np.asarray(values, dtype=np.float64)
        self.mean = values.mean(axis=0)
        std = values.std(axis=0)
        self.std = np.where(std == 0.0, 1.0, std)
        return self

    def transform(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, dtype=np.float64) - self.mean) / self.std

    def inverse_transform(self, values, columns: slice | list[int] | None = None) -> np.ndarray:
        """Back to original units; ``columns`` selects the scaler columns that ``values``' last axis holds."""
        cols = slice(None) if columns is None else columns
        return np.asarray(values, dtype=np.float64) * self.std[cols] + self.mean[cols]

    def state(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}


def _check_positive(label: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise SeqzooError(f"{label} must be a positive int, got {value!r}")
    return int(value)


def read_series_csv(path, *, target: str | None = None, date_column: str = "date"):
    """Read and validate a CSV: returns ``(dates: DatetimeIndex, frame of float64 values with the target last,
    target name)``. Every problem is a one-line :class:`SeqzooError`."""
    p = Path(path)
    if not p.is_file():
        raise SeqzooError(f"data file {str(p)!r} does not exist; give a CSV with a {date_column!r} column "
                          "(e.g. ../shared/data/ett/ETTh1.csv)")
    try:
        raw = pd.read_csv(p)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SeqzooError(f"cannot read {str(p)!r} as CSV: {first}") from None
    if date_column not in raw.columns:
        raise SeqzooError(f"{str(p)!r} has no {date_column!r} column; columns: {', '.join(map(str, raw.columns))}")
    value_columns = [c for c in raw.columns if c != date_column]
    if not value_columns:
        raise SeqzooError(f"{str(p)!r} has no value columns besides {date_column!r}")
    if target is None:
        target = str(value_columns[-1])
    if target not in value_columns:
        raise SeqzooError(f"target column {target!r} is not in {str(p)!r}; value columns: "
                          f"{', '.join(map(str, value_columns))}")
    try:
        dates = pd.DatetimeIndex(pd.to_datetime(raw[date_column], errors="raise"))
    except (ValueError, TypeError, pd.errors.OutOfBoundsDatetime) as e:
        raise SeqzooError(f"{str(p)!r}: column {date_column!r} has a value that is not a date "
                          f"({str(e).splitlines()[0]})") from None
    if dates.hasnans:
        row = int(np.flatnonzero(dates.isna())[0])
        raise SeqzooError(f"{str(p)!r}: column {date_column!r} is empty at data row {row + 1}")
    ordered = [c for c in value_columns if c != target] + [target]
    values = {}
    for col in ordered:
        series = raw[col]
        numeric = pd.to_numeric(series, errors="coerce")
        bad = numeric.isna() & series.notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise SeqzooError(f"{str(p)!r}: column {col!r} has a non-numeric value {series.iloc[row]!r} at data "
                              f"row {row + 1}; every value column must be numeric")
        if numeric.isna().any():
            row = int(np.flatnonzero(numeric.isna().to_numpy())[0])
            raise SeqzooError(f"{str(p)!r}: column {col!r} has a missing value (NaN) at data row {row + 1}; "
                              "fill or drop missing values first")
        arr = numeric.to_numpy(dtype=np.float64)
        if not np.isfinite(arr).all():
            row = int(np.flatnonzero(~np.isfinite(arr))[0])
            raise SeqzooError(f"{str(p)!r}: column {col!r} has an infinite value at data row {row + 1}")
        values[str(col)] = arr
    return dates, pd.DataFrame(values, columns=[str(c) for c in ordered]), str(target)


def split_borders(n_rows: int, seq_len: int, layout: str) -> dict[str, tuple[int, int]]:
    """``{split: (border1, border2)}`` row ranges, val/test starting ``seq_len`` early (TSLib)."""
    if layout in _ETT_MONTH_ROWS:
        month = _ETT_MONTH_ROWS[layout]
        train_end, val_end, test_end = 12 * month, 16 * month, 20 * month
        if n_rows < test_end:
            raise SeqzooError(f"the {layout} layout needs {test_end} rows (12/4/4 months of 30 days), the file has "
                              f"{n_rows}; use layout='ratio' for other series")
    else:
        n_train, n_test = int(n_rows * 0.7), int(n_rows * 0.2)
        train_end, val_end, test_end = n_train, n_rows - n_test, n_rows
    return {"train": (0, train_end), "val": (train_end - seq_len, val_end), "test": (val_end - seq_len, test_end)}


def resolve_layout(path, layout: str) -> str:
    if layout not in LAYOUTS:
        raise choice_error("split layout", layout, LAYOUTS)
    if layout != "auto":
        return layout
    stem = Path(path).stem
    if stem.startswith("ETTh"):
        return "ett_hour"
    if stem.startswith("ETTm"):
        return "ett_minute"
    return "ratio"


@dataclass
class ForecastData:
    """A scaled series with its splits; see the module docstring. Build it with :func:`load_forecast_data`."""

    path: str
    columns: list[str]           # model variates, in order (target last)
    target: str
    features: str
    seq_len: int
    pred_len: int
    freq: str
    layout: str
    dates: pd.DatetimeIndex      # every row of the file
    values: np.ndarray           # [N, C] float32, scaled (every row)
    marks: np.ndarray            # [N, F] float32
    scaler: StandardScaler
    borders: dict[str, tuple[int, int]]
    _values_t: torch.Tensor = field(init=False, repr=False)
    _marks_t: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self):
        self._values_t = torch.from_numpy(np.ascontiguousarray(self.values, dtype=np.float32))
        self._marks_t = torch.from_numpy(np.ascontiguousarray(self.marks, dtype=np.float32))

    @property
    def n_vars(self) -> int:
        """Variates the model sees (and outputs)."""
        return self.values.shape[1]

    @property
    def n_time(self) -> int:
        return self.marks.shape[1]

    @property
    def target_only(self) -> bool:
        """True in the ``MS`` setting: only the last output variate is scored."""
        return self.features == "MS"

    def scored_columns(self) -> list[str]:
        return self.columns[-1:] if self.target_only else list(self.columns)

    def select_target(self, pred: torch.Tensor) -> torch.Tensor:
        """The part of a model output ``[..., C]`` that is scored (the last variate for ``MS``)."""
        return pred[..., -1:] if self.target_only else pred

    def num_windows(self, split: str) -> int:
        b1, b2 = self._borders(split)
        return (b2 - b1) - self.seq_len - self.pred_len + 1

    def _borders(self, split: str) -> tuple[int, int]:
        if split not in self.borders:
            raise choice_error("split", split, SPLITS)
        return self.borders[split]

    def starts(self, split: str) -> np.ndarray:
        """Absolute row index where each window's history starts."""
        b1, _ = self._borders(split)
        return b1 + np.arange(self.num_windows(split))

    def gather(self, starts) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Windows whose histories start at the absolute rows ``starts``: ``(x, y, x_mark, y_mark)``."""
        s = torch.as_tensor(np.asarray(starts), dtype=torch.long)
        hist = s[:, None] + torch.arange(self.seq_len)
        horizon = s[:, None] + self.seq_len + torch.arange(self.pred_len)
        y = self._values_t[horizon]
        return self._values_t[hist], (y[..., -1:] if self.target_only else y), self._marks_t[hist], \
            self._marks_t[horizon]

    def window(self, split: str, index: int):
        n = self.num_windows(split)
        if not 0 <= index < n:
            raise SeqzooError(f"window index {index} out of range for the {split} split ({n} windows)")
        return self.gather(self.starts(split)[index:index + 1])

    def loader(self, split: str, batch_size: int = 32, *, shuffle: bool = False, seed: int = 0) -> "WindowLoader":
        return WindowLoader(self, split, batch_size, shuffle=shuffle, seed=seed)

    def inverse_transform(self, values) -> np.ndarray:
        """Scaled values whose last axis holds the scored columns back to original units."""
        arr = np.asarray(values, dtype=np.float64)
        if arr.shape[-1] == len(self.columns):
            return self.scaler.inverse_transform(arr)
        if arr.shape[-1] == 1:
            return self.scaler.inverse_transform(arr, [len(self.columns) - 1])
        raise SeqzooError(f"cannot unscale values with {arr.shape[-1]} columns; expected {len(self.columns)} or 1")

    def describe(self) -> dict:
        return {"path": self.path, "layout": self.layout, "features": self.features, "target": self.target,
                "columns": self.columns, "seq_len": self.seq_len, "pred_len": self.pred_len, "freq": self.freq,
                "rows": len(self.dates), "borders": {k: list(v) for k, v in self.borders.items()},
                "windows": {s: self.num_windows(s) for s in SPLITS}}


class WindowLoader:
    """Batches of one split, in order or shuffled (a fresh permutation each pass from a seeded generator).

    Every window is visited once per pass; the last batch may be smaller (no ``drop_last``)."""

    def __init__(self, data: ForecastData, split: str, batch_size: int, *, shuffle: bool = False, seed: int = 0):
        self.data, self.split = data, split
        self.batch_size = _check_positive("batch_size", batch_size)
        self.shuffle = shuffle
        self.starts = data.starts(split)
        self.generator = torch.Generator().manual_seed(int(seed))

    @property
    def target_only(self) -> bool:
        return self.data.target_only

    def __len__(self) -> int:
        return math.ceil(len(self.starts) / self.batch_size)

    @property
    def num_windows(self) -> int:
        return len(self.starts)

    def __iter__(self):
        order = torch.randperm(len(self.starts), generator=self.generator).numpy() if self.shuffle \
            else np.arange(len(self.starts))
        for i in range(0, len(order), self.batch_size):
            yield self.data.gather(self.starts[order[i:i + self.batch_size]])


def load_forecast_data(path, *, seq_len: int = 96, pred_len: int = 96, features: str = "M",
                       target: str | None = None, freq: str = "h", layout: str = "auto",
                       date_column: str = "date", scaler: StandardScaler | None = None) -> ForecastData:
    """Load a CSV under the TSLib protocol (see the module docstring). ``target`` defaults to the last column.

    ``scaler``: use this fitted scaler instead of fitting one on the train split (forecasting new data with a
    trained model's scaler); its width must match the loaded columns."""
    seq_len, pred_len = _check_positive("seq_len", seq_len), _check_positive("pred_len", pred_len)
    if features not in FEATURES:
        raise choice_error("features setting", features, FEATURES)
    layout = resolve_layout(path, layout)
    dates, frame, target = read_series_csv(path, target=target, date_column=date_column)
    if features == "S":
        frame = frame[[target]]
    borders = split_borders(len(frame), seq_len, layout)
    for split, (b1, b2) in borders.items():
        if b1 < 0 or (b2 - b1) - seq_len - pred_len + 1 < 1:
            rows = b2 - max(b1, 0) if split == "train" else b2 - b1 - seq_len
            raise SeqzooError(f"the {split} split of {str(path)!r} has {rows} rows, too few for seq_len={seq_len} + "
                              f"pred_len={pred_len}; use a longer series or shorter windows")
    raw = frame.to_numpy(dtype=np.float64)
    if scaler is None:
        b1, b2 = borders["train"]
        scaler = StandardScaler().fit(raw[b1:b2])
    elif scaler.mean is None or len(scaler.mean) != raw.shape[1]:
        raise SeqzooError(f"the given scaler has {0 if scaler.mean is None else len(scaler.mean)} columns, the data "
                          f"{raw.shape[1]}; use the same columns and features setting as in training")
    values = scaler.transform(raw).astype(np.float32)
    marks = time_features(dates, freq)
    return ForecastData(path=str(path), columns=list(frame.columns), target=target, features=features,
                        seq_len=seq_len, pred_len=pred_len, freq=freq, layout=layout, dates=dates, values=values,
                        marks=marks, scaler=scaler, borders=borders)


def infer_step(dates: pd.DatetimeIndex) -> pd.Timedelta:
    """The series' sampling step: the most common difference between consecutive dates."""
    if len(dates) < 2:
        raise SeqzooError("need at least two dates to infer the sampling step")
    diffs = pd.Series(dates[1:] - dates[:-1])
    step = diffs.mode().iloc[0]
    if step <= pd.Timedelta(0):
        raise SeqzooError("dates are not increasing; sort the CSV by date")
    return step
