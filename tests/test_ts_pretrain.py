"""Pretraining mixture (seqzoo/tasks/timeseries/pretrain.py): generators, real-series loaders, splits, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from seqzoo.core.errors import SeqzooError
from seqzoo.tasks.timeseries.pretrain import (SYNTHETIC, PretrainMixture, _stationary_ar_coefficients, csv_series,
                                              generate, statsmodels_series, vega_series)


@pytest.mark.parametrize("kind", SYNTHETIC)
def test_generators_give_finite_varied_series_of_the_requested_length(kind):
    rng = np.random.default_rng(0)
    a, b = generate(kind, 300, rng), generate(kind, 300, rng)
    assert a.shape == b.shape == (300,)
    assert np.isfinite(a).all() and a.std() > 0
    assert not np.allclose(a, b), "each call must draw fresh parameters"


def test_ar_coefficients_are_stationary():
    rng = np.random.default_rng(1)
    for _ in range(200):
        order = int(rng.integers(1, 6))
        c = _stationary_ar_coefficients(rng, order)
        assert len(c) == order
        poles = np.roots(np.concatenate([[1.0], -c]))  # z^p − c_1 z^{p−1} − … − c_p
        assert np.abs(poles).max() < 0.98


def test_ar_generator_has_the_autocorrelation_of_an_ar_process():
    """A long AR sample's lag-1 autocorrelation matches the Yule–Walker value of its coefficients (AR(1): c)."""
    from seqzoo.tasks.timeseries.pretrain import _ar_process

    rng = np.random.default_rng(2)
    x = _ar_process(rng, np.array([0.8]), 20000)
    rho = np.corrcoef(x[:-1], x[1:])[0, 1]
    assert rho == pytest.approx(0.8, abs=0.03)


def test_seasonal_generator_period_shows_in_the_spectrum():
    rng = np.random.default_rng(3)
    hits = 0
    for _ in range(20):
        x = generate("seasonal", 336, rng)
        spectrum = np.abs(np.fft.rfft(x - x.mean()))
        hits += spectrum.max() > 10 * np.median(spectrum)
    assert hits >= 18  # a sum of sinusoids is dominated by a few spectral lines


def test_unknown_generator_is_a_one_line_error():
    with pytest.raises(SeqzooError, match="unknown synthetic generator"):
        generate("fourier", 10, np.random.default_rng(0))
    with pytest.raises(SeqzooError, match="unknown synthetic generator"):
        PretrainMixture(32, kinds=("nope",), real={})


def test_batches_are_deterministic_normalised_and_seed_dependent():
    mix = PretrainMixture(64, seed=0, real={"a": np.sin(np.arange(500) / 3.0)})
    first, names = mix.windows("train", 5, 16)
    again, _ = mix.windows("train", 5, 16)
    other, _ = mix.windows("train", 6, 16)
    reseeded, _ = PretrainMixture(64, seed=1, real={"a": np.sin(np.arange(500) / 3.0)}).windows("train", 5, 16)
    assert first.shape == (16, 64) and len(names) == 16
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other) and not np.allclose(first, reseeded)
    np.testing.assert_allclose(first.mean(1), 0, atol=1e-9)
    np.testing.assert_allclose(first.std(1), 1, atol=1e-6)
    batch = mix.get_batch("val", 0, 4)
    assert tuple(batch["inputs"].shape) == (4, 64) and batch["inputs"] is batch["targets"]
    with pytest.raises(SeqzooError, match="unknown split"):
        mix.get_batch("test", 0, 4)


def test_mixture_draws_both_sources_in_proportion():
    mix = PretrainMixture(32, seed=0, synthetic_share=0.25, real={"a": np.random.default_rng(0).normal(size=400)})
    names = sum((mix.windows("train", i, 50)[1] for i in range(8)), [])
    share = np.mean([n.startswith("synthetic/") for n in names])
    assert 0.15 < share < 0.35
    kinds = {n for n in names if n.startswith("synthetic/")}
    assert len(kinds) >= 4


def test_real_series_splits_are_disjoint_in_time_and_short_series_are_skipped():
    ramp = np.arange(1000, dtype=float)
    mix = PretrainMixture(50, seed=0, synthetic_share=0.0, real={"ramp": ramp, "short": ramp[:40]})
    assert mix.real_names == ["ramp"] and "short" in mix.skipped["train"]
    rng = np.random.default_rng(0)
    train = [mix.sample(rng, "train")[1] for _ in range(200)]
    val = [mix.sample(rng, "val")[1] for _ in range(50)]
    assert max(w.max() for w in train) < 900 and min(w.min() for w in val) >= 900
    assert all(len(w) == 50 and np.all(np.diff(w) == 1) for w in train + val)  # contiguous slices


def test_ett_series_are_refused():
    with pytest.raises(SeqzooError, match="zero-shot"):
        PretrainMixture(16, real={"ETTh1/OT": np.zeros(100)})


def test_default_mixture_has_no_ett():
    mix = PretrainMixture(64)
    assert not [n for n in mix.real_names if "ett" in n.lower()]


def test_vega_loader_reads_the_package_layout(tmp_path):
    data = tmp_path / "_data"
    data.mkdir()
    hours = "".join(f"2010/01/01 {i:02d}:00,{i}.5\n" for i in range(24))
    (data / "seattle-temps.csv").write_text("date,temp\n" + hours)
    (data / "stocks.csv").write_text("symbol,date,price\nA,Jan 1 2000,1\nA,Feb 1 2000,2\nB,Jan 1 2000,3\n"
                                     "B,Feb 1 2000,\nB,Mar 1 2000,5\n")
    series = vega_series(tmp_path)
    assert set(series) == {"vega/seattle-temps/temp", "vega/stocks-A/price", "vega/stocks-B/price"}
    assert len(series["vega/seattle-temps/temp"]) == 24 and series["vega/seattle-temps/temp"][3] == 3.5
    np.testing.assert_array_equal(series["vega/stocks-B/price"], [3, 4, 5])  # the gap is interpolated


def test_statsmodels_loader_reads_the_package_layout(tmp_path):
    (tmp_path / "datasets" / "co2").mkdir(parents=True)
    (tmp_path / "datasets" / "elnino").mkdir(parents=True)
    (tmp_path / "datasets" / "co2" / "co2.csv").write_text("date,co2\n19580329,316.1\n19580405,\n19580412,317.5\n")
    months = ",".join(f'"{m}"' for m in ("JAN", "FEB", "MAR"))
    (tmp_path / "datasets" / "elnino" / "elnino.csv").write_text(f'"YEAR",{months}\n1950,1,2,3\n1951,4,5,6\n')
    series = statsmodels_series(tmp_path)
    np.testing.assert_allclose(series["statsmodels/co2/co2"], [316.1, 316.8, 317.5])
    np.testing.assert_array_equal(series["statsmodels/elnino"], [1, 2, 3, 4, 5, 6])


def test_loaders_return_nothing_for_a_missing_package(tmp_path):
    assert vega_series(tmp_path / "absent") == {} and statsmodels_series(tmp_path / "absent") == {}


def test_installed_vega_datasets_gives_hourly_temperatures():
    pytest.importorskip("vega_datasets")
    series = vega_series()
    assert len(series["vega/seattle-temps/temp"]) == 8759 and len(series["vega/sf-temps/temp"]) == 8759


def test_csv_series_and_its_errors(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("date,a,b,label\n1,1.0,2.0,x\n2,2.0,3.0,y\n3,3.0,4.0,z\n")
    series = csv_series(path)
    assert set(series) == {"mine/date", "mine/a", "mine/b"}
    with pytest.raises(SeqzooError, match="does not exist"):
        csv_series(tmp_path / "missing.csv")
    (tmp_path / "words.csv").write_text("w\nx\ny\n")
    with pytest.raises(SeqzooError, match="no numeric column"):
        csv_series(tmp_path / "words.csv")
