"""The TSLib forecasting protocol: splits and window counts, train-only scaling, S/MS settings, timeF marks,
loaders that keep every window, and one-line errors for malformed CSVs (synthetic CSVs, plus ETTh1 when present)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from seqzoo.core.errors import SeqzooError
from seqzoo.tasks.timeseries.data import load_forecast_data, read_series_csv
from seqzoo.tasks.timeseries.timefeatures import time_features

ETTH1 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ett" / "ETTh1.csv"


def write_csv(path: Path, rows: int, columns=("a", "b", "OT"), seed: int = 0, start="2016-07-01") -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    frame = pd.DataFrame({"date": pd.date_range(start, periods=rows, freq="h").strftime("%Y-%m-%d %H:%M:%S")})
    for i, c in enumerate(columns):
        frame[c] = (i + 1) * np.sin(2 * np.pi * t / 24 + i) + 0.1 * i * t / rows + rng.standard_normal(rows) + 3 * i
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def ett_like(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("ts") / "ETTh_synthetic.csv", 14400 + 50)


@pytest.mark.parametrize("horizon, counts", [(96, (8449, 2785, 2785)), (720, (7825, 2161, 2161))])
def test_ett_hour_layout_window_counts(ett_like, horizon, counts):
    data = load_forecast_data(ett_like, seq_len=96, pred_len=horizon)
    assert data.layout == "ett_hour"
    assert tuple(data.num_windows(s) for s in ("train", "val", "test")) == counts
    assert data.borders == {"train": (0, 8640), "val": (8544, 11520), "test": (11424, 14400)}


def test_ratio_layout_borders_and_first_windows(tmp_path):
    path = write_csv(tmp_path / "custom.csv", 1000)
    data = load_forecast_data(path, seq_len=48, pred_len=24)
    assert data.layout == "ratio"
    assert data.borders == {"train": (0, 700), "val": (652, 800), "test": (752, 1000)}
    assert [data.num_windows(s) for s in ("train", "val", "test")] == [629, 77, 177]
    raw = pd.read_csv(path)[["a", "b", "OT"]].to_numpy()
    scaled = (raw - raw[:700].mean(0)) / raw[:700].std(0)
    x, y, x_mark, y_mark = data.window("val", 0)      # history ends where the train split ends
    np.testing.assert_allclose(x[0].numpy(), scaled[652:700], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y[0].numpy(), scaled[700:724], rtol=1e-5, atol=1e-5)
    x, y, _, _ = data.window("test", 176)              # the last test window ends at the last row
    np.testing.assert_allclose(y[0, -1].numpy(), scaled[-1], rtol=1e-5, atol=1e-5)
    assert x_mark.shape == (1, 48, 4) and y_mark.shape == (1, 24, 4)


def test_scaler_sees_no_validation_or_test_value(tmp_path):
    base = write_csv(tmp_path / "base.csv", 1000)
    frame = pd.read_csv(base)
    data = load_forecast_data(base, seq_len=48, pred_len=24)
    leaked = frame.copy()
    leaked.loc[700:, ["a", "b", "OT"]] = leaked.loc[700:, ["a", "b", "OT"]] * 100 + 50   # every val/test row
    leaked.to_csv(tmp_path / "leaked.csv", index=False)
    other = load_forecast_data(tmp_path / "leaked.csv", seq_len=48, pred_len=24)
    np.testing.assert_array_equal(data.scaler.mean, other.scaler.mean)
    np.testing.assert_array_equal(data.scaler.std, other.scaler.std)
    x1, y1, _, _ = data.gather(data.starts("train"))
    x2, y2, _, _ = other.gather(other.starts("train"))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    changed = frame.copy()
    changed.loc[10, "a"] += 1000.0                     # a train row does move the scaler (the test is not vacuous)
    changed.to_csv(tmp_path / "changed.csv", index=False)
    assert load_forecast_data(tmp_path / "changed.csv", seq_len=48, pred_len=24).scaler.mean[0] != data.scaler.mean[0]
    train = data.values[:700]
    np.testing.assert_allclose(train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(train.std(0), 1, atol=1e-4)


def test_target_moves_last_and_s_ms_shapes(tmp_path):
    path = write_csv(tmp_path / "custom.csv", 600, columns=("load", "temp", "price"))
    data = load_forecast_data(path, seq_len=32, pred_len=8, features="M", target="temp")
    assert data.columns == ["load", "price", "temp"]
    x, y, _, _ = next(iter(data.loader("train", 5)))
    assert x.shape == (5, 32, 3) and y.shape == (5, 8, 3)
    ms = load_forecast_data(path, seq_len=32, pred_len=8, features="MS", target="temp")
    x, y, _, _ = next(iter(ms.loader("train", 5)))
    assert x.shape == (5, 32, 3) and y.shape == (5, 8, 1) and ms.n_vars == 3
    full = data.gather(data.starts("train")[:5])[1]
    torch.testing.assert_close(y, full[..., -1:])       # MS scores the target, scaled as in M
    assert ms.select_target(torch.zeros(2, 8, 3)).shape == (2, 8, 1)
    s = load_forecast_data(path, seq_len=32, pred_len=8, features="S", target="temp")
    x, y, _, _ = next(iter(s.loader("test", 4)))
    assert x.shape == (4, 32, 1) and y.shape == (4, 8, 1) and s.columns == ["temp"]
    np.testing.assert_allclose(s.scaler.mean, data.scaler.mean[-1:])


def test_loaders_visit_every_window_once(tmp_path):
    data = load_forecast_data(write_csv(tmp_path / "c.csv", 500), seq_len=24, pred_len=12)
    n = data.num_windows("test")
    ordered = list(data.loader("test", 7))
    assert sum(b[0].shape[0] for b in ordered) == n and len(ordered) == -(-n // 7)
    first = lambda batches: sorted(float(v) for b in batches for v in b[0][:, 0, 0])  # noqa: E731
    shuffled = list(data.loader("test", 7, shuffle=True, seed=3))
    assert first(shuffled) == first(ordered)
    again = list(data.loader("test", 7, shuffle=True, seed=3))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(shuffled, again))
    assert not torch.equal(shuffled[0][0], ordered[0][0])


def test_timef_calendar_features():
    dates = pd.to_datetime(["2016-07-01 00:00:00", "2016-07-03 23:00:00", "2016-12-31 12:00:00"])
    f = time_features(dates, "h")
    assert f.shape == (3, 4)
    expected = np.array([[0 / 23 - 0.5, 4 / 6 - 0.5, 0 / 30 - 0.5, 182 / 365 - 0.5],     # Friday, day-of-year 183
                         [23 / 23 - 0.5, 6 / 6 - 0.5, 2 / 30 - 0.5, 184 / 365 - 0.5],    # Sunday
                         [12 / 23 - 0.5, 5 / 6 - 0.5, 30 / 30 - 0.5, 365 / 365 - 0.5]])  # leap year: day 366
    np.testing.assert_allclose(f, expected, atol=1e-6)
    assert time_features(dates, "t").shape == (3, 5)
    with pytest.raises(SeqzooError, match="time-feature frequency"):
        time_features(dates, "fortnightly")


@pytest.mark.parametrize("mutate, match", [
    (lambda f: f.drop(columns=["date"]), "no 'date' column"),
    (lambda f: f.assign(b=f["b"].astype(object).where(f.index != 7, "oops")), "non-numeric value 'oops'"),
    (lambda f: f.assign(OT=f["OT"].where(f.index != 3)), "missing value"),
    (lambda f: f.assign(date=f["date"].where(f.index != 5, "not a date")), "not a date"),
    (lambda f: f.head(100), "too few"),
])
def test_malformed_csvs_are_one_line_errors(tmp_path, mutate, match):
    path = write_csv(tmp_path / "c.csv", 400)
    mutate(pd.read_csv(path)).to_csv(path, index=False)
    with pytest.raises(SeqzooError, match=match) as info:
        load_forecast_data(path, seq_len=48, pred_len=24)
    assert "\n" not in str(info.value)


def test_bad_arguments_are_one_line_errors(tmp_path):
    path = write_csv(tmp_path / "c.csv", 400)
    with pytest.raises(SeqzooError, match="does not exist"):
        load_forecast_data(tmp_path / "missing.csv")
    with pytest.raises(SeqzooError, match="target column 'XYZ'"):
        load_forecast_data(path, seq_len=24, pred_len=12, target="XYZ")
    with pytest.raises(SeqzooError, match="unknown features setting"):
        load_forecast_data(path, seq_len=24, pred_len=12, features="MM")
    with pytest.raises(SeqzooError, match="needs 14400 rows"):
        load_forecast_data(path, seq_len=24, pred_len=12, layout="ett_hour")
    with pytest.raises(SeqzooError, match="seq_len must be a positive int"):
        load_forecast_data(path, seq_len=0, pred_len=12)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(SeqzooError, match="cannot read"):
        read_series_csv(tmp_path / "empty.csv")


@pytest.mark.skipif(not ETTH1.is_file(), reason="ETTh1 not available (../shared/data/ett/ETTh1.csv)")
def test_etth1_protocol():
    data = load_forecast_data(ETTH1, seq_len=96, pred_len=96)
    assert data.columns == ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"] and len(data.dates) == 17420
    assert [data.num_windows(s) for s in ("train", "val", "test")] == [8449, 2785, 2785]
    assert load_forecast_data(ETTH1, seq_len=96, pred_len=720).num_windows("test") == 2161
    test_start = data.borders["test"][0] + data.seq_len
    assert str(data.dates[test_start]) == "2017-10-24 00:00:00"
    assert str(data.dates[data.borders["test"][1] - 1]) == "2018-02-20 23:00:00"
