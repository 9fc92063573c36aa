"""Pretraining data for time-series foundation models (Time-MoE, GPHT): synthetic generators and real series that
install offline, mixed into channel-independent, per-window normalised windows, deterministically from a seed.

Why: Time-MoE (arXiv 2409.16040) pretrains on Time-300B and GPHT (arXiv 2402.16516) on a mixture of eight LTSF
data sets; neither can be downloaded here. This module builds a small stand-in corpus:

* **Synthetic generators** (``SYNTHETIC``), each drawing fresh random parameters per window:
  ``seasonal``   Σ_i a_i sin(2π t / P_i + φ_i) with 1–3 periods (half of them from the calendar set
                 {7, 12, 24, 48, 168}, the rest log-uniform in [4, T/2]) plus Gaussian noise;
  ``ar``         a stationary AR(p), p ∈ 1…5: x_t = Σ_i c_i x_{t−i} + ε_t, the c_i built from random poles of
                 modulus 0.3–0.97 (real or conjugate pairs), so the process is stationary; 200 burn-in steps;
  ``trend``      linear, quadratic or logistic (saturating) trend + a weaker seasonality + noise;
  ``random_walk`` x_t = x_{t−1} + μ + σ ε_t;
  ``regime``     a Markov chain over 2–4 regimes (geometric durations), each with its own level, noise scale,
                 AR(1) coefficient and seasonal amplitude;
  ``composite``  trend + 1–2 seasonalities + AR(1) noise (an "industrial sensor" shape).
* **Real series** from small packages that ship their data (nothing is downloaded at run time; a package that is
  not installed is skipped):
  ``vega_datasets`` (MIT, 0.2 MB wheel): hourly Seattle and San Francisco temperatures 2010 (8,759 each
  points), Seattle daily weather 2012–2015 (4 variables × 1,461), US monthly employment 2006–2015 (22 × 120),
  monthly stock prices 2000–2010 (5 × ~123);
  ``statsmodels`` (BSD; its data sets are public domain): weekly Mauna Loa CO₂ 1958–2001 (2,284, gaps linearly
  interpolated), yearly sunspots (309), monthly electrical equipment orders (257), monthly El Niño SST
  (61 × 12 = 732), quarterly US macro data (12 × 203).
  Multivariate tables become one univariate series per column (channel independence). ``csv_series`` adds the
  numeric columns of any CSV. ETTh1/ETTh2 are never part of the mixture (they are the zero-shot test sets):
  names containing ``ETT`` are refused.

A window of length ``window`` is drawn by first choosing synthetic (probability ``synthetic_share``) or real, then a
generator uniformly, or a real series with probability ∝ √(number of windows it holds) and a uniform offset. Real
series contribute their first 90 % to the ``train`` split and their last 10 % to ``val``; synthetic windows of
the two splits come from disjoint seed streams. Every window is normalised by its own mean and standard deviation
(x − μ) / max(σ, 1e−5). ``PretrainMixture.get_batch(split, index, batch_size)`` returns the same batch for the
same arguments (the batch contract of ``seqzoo.core.data``) with ``inputs = targets`` = the windows ``[B, window]``.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import torch

from ...core.errors import SeqzooError

SYNTHETIC = ("seasonal", "ar", "trend", "random_walk", "regime", "composite")
CALENDAR_PERIODS = (7, 12, 24, 48, 168)
SPLITS = {"train": 0, "val": 1}


# -- synthetic generators ------------------------------------------------------------------------------------------

def _seasonal_part(rng: np.random.Generator, t: np.ndarray, count: int) -> np.ndarray:
    length = len(t)
    out = np.zeros(length)
    for _ in range(count):
        if rng.random() < 0.5:
            period = float(rng.choice(CALENDAR_PERIODS))
        else:
            period = float(np.exp(rng.uniform(np.log(4.0), np.log(max(8.0, length / 2)))))
        amplitude = float(np.exp(rng.uniform(np.log(0.2), np.log(2.0))))
        out += amplitude * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
    return out


def _stationary_ar_coefficients(rng: np.random.Generator, order: int) -> np.ndarray:
    """c_1 … c_p of x_t = Σ c_i x_{t−i} + ε_t with every pole inside the unit circle."""
    poles: list[complex] = []
    while len(poles) < order:
        radius = rng.uniform(0.3, 0.97)
        if order - len(poles) >= 2 and rng.random() < 0.5:
            angle = rng.uniform(0.05, np.pi - 0.05)
            poles += [radius * np.exp(1j * angle), radius * np.exp(-1j * angle)]
        else:
            poles.append(radius * (1 if rng.random() < 0.7 else -1))
    poly = np.real(np.poly(poles))  # 1, −c_1, …, −c_p
    return -poly[1:]


def _ar_process(rng: np.random.Generator, coeffs: np.ndarray, length: int, burn_in: int = 200,
                noise: np.ndarray | None = None) -> np.ndarray:
    order = len(coeffs)
    eps = rng.standard_normal(length + burn_in) if noise is None else noise
    x = np.zeros(length + burn_in + order)
    for i in range(length + burn_in):
        x[i + order] = coeffs @ x[i:i + order][::-1] + eps[i]
    return x[-length:]


def generate(kind: str, length: int, rng: np.random.Generator) -> np.ndarray:
    """One synthetic series of ``length`` points from generator ``kind`` (one of ``SYNTHETIC``)."""
    t = np.arange(length, dtype=np.float64)
    noise_scale = float(np.exp(rng.uniform(np.log(0.01), np.log(0.3))))
    if kind == "seasonal":
        x = _seasonal_part(rng, t, int(rng.integers(1, 4)))
        return x + noise_scale * rng.standard_normal(length)
    if kind == "ar":
        return _ar_process(rng, _stationary_ar_coefficients(rng, int(rng.integers(1, 6))), length)
    if kind == "trend":
        u = t / length
        shape = rng.integers(3)
        if shape == 0:
            trend = rng.normal(0, 3) * u
        elif shape == 1:
            trend = rng.normal(0, 3) * u + rng.normal(0, 3) * u ** 2
        else:
            trend = rng.normal(0, 3) / (1 + np.exp(-(u - rng.uniform(0.2, 0.8)) * rng.uniform(5, 30)))
        return trend + 0.3 * _seasonal_part(rng, t, 1) + noise_scale * rng.standard_normal(length)
    if kind == "random_walk":
        return np.cumsum(rng.normal(0, 0.02) + rng.uniform(0.05, 1.0) * rng.standard_normal(length))
    if kind == "regime":
        n_regimes = int(rng.integers(2, 5))
        level = rng.normal(0, 2, n_regimes)
        scale = np.exp(rng.uniform(np.log(0.05), np.log(1.0), n_regimes))
        phi = rng.uniform(-0.5, 0.95, n_regimes)
        seasonal_amp = rng.uniform(0, 1.5, n_regimes)
        period = float(rng.choice(CALENDAR_PERIODS))
        stay = 1 - 1 / max(2.0, length / rng.uniform(2, 6))  # mean regime duration T/2 … T/6
        x, state, prev = np.zeros(length), int(rng.integers(n_regimes)), 0.0
        for i in range(length):
            if rng.random() > stay:
                state = int(rng.integers(n_regimes))
            prev = phi[state] * prev + scale[state] * rng.standard_normal()
            x[i] = level[state] + seasonal_amp[state] * np.sin(2 * np.pi * i / period) + prev
        return x
    if kind == "composite":
        trend = rng.normal(0, 2) * t / length
        seasonal = _seasonal_part(rng, t, int(rng.integers(1, 3)))
        ar_noise = _ar_process(rng, np.array([rng.uniform(0.3, 0.95)]), length) * noise_scale * 3
        return trend + seasonal + ar_noise
    raise SeqzooError(f"unknown synthetic generator {kind!r}; valid: {', '.join(SYNTHETIC)}")


# -- real series -----------------------------------------------------------------------------------------------------

def _package_dir(package: str, root: str | Path | None) -> Path | None:
    if root is not None:
        return Path(root)
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _columns(name: str, frame, columns) -> dict[str, np.ndarray]:
    out = {}
    for col in columns:
        values = frame[col].astype(float).interpolate(limit_direction="both").to_numpy()
        if np.isfinite(values).all() and len(values) > 1:
            out[f"{name}/{col}"] = values
    return out


def vega_series(root: str | Path | None = None) -> dict[str, np.ndarray]:
    """Series shipped in the ``vega_datasets`` package (``root``: its package folder; {} if not installed)."""
    import pandas as pd

    base = _package_dir("vega_datasets", root)
    if base is None or not (base / "_data").is_dir():
        return {}
    data, out = base / "_data", {}
    if (data / "seattle-temps.csv").exists():
        out.update(_columns("vega/seattle-temps", pd.read_csv(data / "seattle-temps.csv"), ["temp"]))
    if (data / "sf-temps.csv").exists():
        out.update(_columns("vega/sf-temps", pd.read_csv(data / "sf-temps.csv"), ["temp"]))
    if (data / "seattle-weather.csv").exists():
        frame = pd.read_csv(data / "seattle-weather.csv")
        out.update(_columns("vega/seattle-weather", frame, ["precipitation", "temp_max", "temp_min", "wind"]))
    if (data / "us-employment.csv").exists():
        frame = pd.read_csv(data / "us-employment.csv")
        out.update(_columns("vega/us-employment", frame, [c for c in frame.columns if c not in ("month",)]))
    if (data / "stocks.csv").exists():
        frame = pd.read_csv(data / "stocks.csv")
        for symbol, rows in frame.groupby("symbol", sort=True):
            out.update(_columns(f"vega/stocks-{symbol}", rows.reset_index(drop=True), ["price"]))
    return out


def statsmodels_series(root: str | Path | None = None) -> dict[str, np.ndarray]:
    """Series shipped in ``statsmodels/datasets`` (read as CSV files, without importing statsmodels; ``root``: the
    package folder; {} if not installed)."""
    import pandas as pd

    base = _package_dir("statsmodels", root)
    if base is None or not (base / "datasets").is_dir():
        return {}
    data, out = base / "datasets", {}
    tables = {"co2/co2.csv": None, "sunspots/sunspots.csv": None, "elec_equip/elec_equip.csv": None,
              "macrodata/macrodata.csv": ("year", "quarter")}
    for rel, skip in tables.items():
        if (data / rel).exists():
            frame = pd.read_csv(data / rel)
            skip = skip or (frame.columns[0],)  # the first column is the date / year
            out.update(_columns(f"statsmodels/{rel.split('/')[0]}", frame, [c for c in frame.columns if c not in skip]))
    if (data / "elnino/elnino.csv").exists():
        frame = pd.read_csv(data / "elnino/elnino.csv")
        flat = frame.drop(columns=[frame.columns[0]]).to_numpy(dtype=float).reshape(-1)
        flat = flat[np.isfinite(flat)]
        if len(flat) > 1:
            out["statsmodels/elnino"] = flat
    return out


def csv_series(path: str | Path, name: str | None = None) -> dict[str, np.ndarray]:
    """The numeric columns of a CSV as univariate series (a user's own data for the mixture)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise SeqzooError(f"CSV file {str(path)!r} does not exist")
    frame = pd.read_csv(path)
    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
    if not numeric:
        columns = ", ".join(map(str, frame.columns))
        raise SeqzooError(f"CSV file {str(path)!r} has no numeric column; columns: {columns}")
    return _columns(name or path.stem, frame, numeric)


def real_series(sources: tuple[str, ...] = ("vega_datasets", "statsmodels")) -> dict[str, np.ndarray]:
    """Every real series of the installed ``sources`` (packages that are missing contribute nothing)."""
    loaders = {"vega_datasets": vega_series, "statsmodels": statsmodels_series}
    out = {}
    for source in sources:
        if source not in loaders:
            raise SeqzooError(f"unknown real-series source {source!r}; valid: {', '.join(loaders)}")
        out.update(loaders[source]())
    return out


# -- the mixture -------------------------------------------------------------------------------------------------------

def normalize_window(x: np.ndarray) -> np.ndarray:
    """(x − mean) / max(std, 1e−5) along the last axis."""
    mean = x.mean(-1, keepdims=True)
    return (x - mean) / np.maximum(x.std(-1, keepdims=True), 1e-5)


class PretrainMixture:
    """Channel-independent, per-window normalised pretraining windows (module docstring).

    ``window``: points per window; ``synthetic_share``: probability that a window is synthetic; ``kinds``: the
    synthetic generators used; ``real``: named univariate series (default: :func:`real_series`; {} for synthetic
    only); series shorter than one window (in a split) are left out of that split and listed in ``skipped``.
    """

    def __init__(self, window: int = 256, *, seed: int = 0, synthetic_share: float = 0.5,
                 kinds: tuple[str, ...] = SYNTHETIC, real: dict[str, np.ndarray] | None = None,
                 val_fraction: float = 0.1):
        if not isinstance(window, int) or isinstance(window, bool) or window < 2:
            raise SeqzooError(f"window must be an int >= 2, got {window!r}")
        if not 0.0 <= synthetic_share <= 1.0:
            raise SeqzooError(f"synthetic_share must lie in [0, 1], got {synthetic_share!r}")
        unknown = [k for k in kinds if k not in SYNTHETIC]
        if unknown or not kinds:
            raise SeqzooError(f"unknown synthetic generator {unknown[0] if unknown else '(none given)'!r}; "
                              f"valid: {', '.join(SYNTHETIC)}")
        real = real_series() if real is None else real
        leaked = [name for name in real if "ett" in name.lower()]
        if leaked:
            raise SeqzooError(f"series {leaked[0]!r} looks like ETT data, which is held out for zero-shot "
                              f"evaluation; valid: any other series")
        self.window, self.seed, self.kinds = window, seed, tuple(kinds)
        self.synthetic_share = float(synthetic_share)
        self.splits: dict[str, dict[str, np.ndarray]] = {"train": {}, "val": {}}
        self.skipped: dict[str, list[str]] = {"train": [], "val": []}
        for name, values in sorted(real.items()):
            values = np.asarray(values, dtype=np.float64)
            cut = int(round(len(values) * (1 - val_fraction)))
            for split, part in (("train", values[:cut]), ("val", values[cut:])):
                (self.splits[split].__setitem__(name, part) if len(part) >= window
                 else self.skipped[split].append(name))
        if not self.splits["train"] and self.synthetic_share < 1.0:
            self.synthetic_share = 1.0  # nothing real is long enough: synthetic only
        self._weights = {}
        for split, series in self.splits.items():
            names = sorted(series)
            w = np.array([math.sqrt(len(series[n]) - window + 1) for n in names], dtype=np.float64)
            self._weights[split] = (names, w / w.sum() if len(w) else w)

    @property
    def real_names(self) -> list[str]:
        return sorted(self.splits["train"])

    def _rng(self, split: str, index: int) -> np.random.Generator:
        if split not in SPLITS:
            raise SeqzooError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        return np.random.default_rng([self.seed, SPLITS[split], index])

    def sample(self, rng: np.random.Generator, split: str = "train") -> tuple[str, np.ndarray]:
        """One raw (not normalised) window and the name of its source."""
        names, weights = self._weights[split]
        if not names or rng.random() < self.synthetic_share:
            kind = self.kinds[int(rng.integers(len(self.kinds)))]
            return f"synthetic/{kind}", generate(kind, self.window, rng)
        name = names[int(rng.choice(len(names), p=weights))]
        values = self.splits[split][name]
        start = int(rng.integers(len(values) - self.window + 1))
        return name, values[start:start + self.window]

    def windows(self, split: str, index: int, batch_size: int) -> tuple[np.ndarray, list[str]]:
        """Batch ``index`` of ``split``: normalised windows ``[batch_size, window]`` and their sources."""
        rng = self._rng(split, index)
        names, rows = [], []
        for _ in range(batch_size):
            name, values = self.sample(rng, split)
            names.append(name)
            rows.append(values)
        return normalize_window(np.stack(rows)), names

    def get_batch(self, split: str, index: int, batch_size: int) -> dict[str, torch.Tensor]:
        x = torch.from_numpy(self.windows(split, index, batch_size)[0]).float()
        return {"inputs": x, "targets": x}


__all__ = ["SYNTHETIC", "PretrainMixture", "csv_series", "generate", "normalize_window", "real_series",
           "statsmodels_series", "vega_series"]
