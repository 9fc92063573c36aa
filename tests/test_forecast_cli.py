"""``seqzoo forecast train | eval | predict`` on a small synthetic CSV: checkpoint and metrics written, eval agrees
with training's test metrics, forecasts in original units with their dates, a PNG plot, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from seqzoo.cli.main import main

ROWS, SEQ, H = 500, 48, 12


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("forecast")
    t = np.arange(ROWS)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"date": pd.date_range("2021-03-01", periods=ROWS, freq="h"),
                          "load": 100 + 10 * np.sin(2 * np.pi * t / 24) + rng.standard_normal(ROWS),
                          "temp": 20 + 5 * np.cos(2 * np.pi * t / 24) + 0.5 * rng.standard_normal(ROWS)})
    path = root / "power.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def trained(csv_path):
    out = csv_path.parent / "run"
    code = main(["forecast", "train", "--data", str(csv_path), "--model", "dlinear", "--horizon", str(H),
                 "--seq-len", str(SEQ), "--out", str(out), "--epochs", "2", "--lr", "0.01", "--quiet",
                 "--set", "moving_avg=13"])
    assert code == 0
    return out


def test_train_writes_checkpoint_and_metrics(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["model"] == "dlinear" and metrics["history"]["epochs_run"] == 2
    assert metrics["test"]["windows"] == int(0.2 * ROWS) + SEQ - SEQ - H + 1
    state = json.loads((trained / "checkpoint" / "state.json").read_text())
    assert state["config"]["options"]["moving_avg"] == 13 and state["config"]["data"]["columns"] == ["load", "temp"]
    assert (trained / "checkpoint" / "model.safetensors").is_file()


def test_eval_reproduces_the_test_metrics(trained, capsys):
    assert main(["forecast", "eval", str(trained)]) == 0
    result = json.loads((trained / "eval.json").read_text())
    metrics = json.loads((trained / "metrics.json").read_text())
    assert result["mse"] == pytest.approx(metrics["test"]["mse"], rel=1e-9)
    assert result["windows"] == metrics["test"]["windows"]


def test_predict_writes_forecast_in_original_units_and_a_plot(trained, csv_path):
    assert main(["forecast", "predict", str(trained), "--window", "0"]) == 0
    table = pd.read_csv(trained / "forecast.csv", parse_dates=["date"])
    raw = pd.read_csv(csv_path, parse_dates=["date"])
    assert list(table.columns) == ["date", "load", "load_true", "temp", "temp_true"] and len(table) == H
    first = ROWS - int(0.2 * ROWS)                      # test window 0's horizon starts where the test split starts
    np.testing.assert_allclose(table["load_true"], raw["load"][first:first + H], rtol=1e-6)
    assert (table["date"].to_numpy() == raw["date"][first:first + H].to_numpy()).all()
    assert 80 < table["load"].mean() < 120              # original units, not the scaled ones
    assert (trained / "forecast.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predict_future_continues_the_dates(trained, csv_path):
    out = trained / "future.csv"
    assert main(["forecast", "predict", str(trained), "--future", "--csv", str(out)]) == 0
    table = pd.read_csv(out, parse_dates=["date"])
    assert list(table.columns) == ["date", "load", "temp"] and len(table) == H
    assert table["date"][0] == pd.Timestamp("2021-03-01") + pd.Timedelta(hours=ROWS)
    assert out.with_suffix(".png").is_file()


def test_ms_setting_forecasts_only_the_target(csv_path, tmp_path):
    out = tmp_path / "ms"
    assert main(["forecast", "train", "--data", str(csv_path), "--model", "rlinear", "--horizon", "6",
                 "--seq-len", "24", "--features", "MS", "--target", "load", "--epochs", "1", "--quiet",
                 "--out", str(out)]) == 0
    assert main(["forecast", "predict", str(out)]) == 0
    assert list(pd.read_csv(out / "forecast.csv").columns) == ["date", "load", "load_true"]


@pytest.mark.parametrize("argv, match", [
    (["--model", "no-such-model"], "unknown forecaster"),
    (["--model", "dlinear", "--target", "price"], "target column 'price'"),
    (["--model", "dlinear", "--set", "no_such_option=1"], "unknown option"),
    (["--model", "dlinear", "--set", "moving_avg"], "bad --set"),
])
def test_bad_input_is_a_one_line_error(csv_path, tmp_path, capsys, argv, match):
    code = main(["forecast", "train", "--data", str(csv_path), "--horizon", "6", "--seq-len", "24",
                 "--out", str(tmp_path / "x"), "--epochs", "1", *argv])
    err = capsys.readouterr().err
    assert code == 2 and match in err and err.count("\n") == 1


def test_eval_of_a_missing_run_is_a_one_line_error(tmp_path, capsys):
    assert main(["forecast", "eval", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err
