"""``seqzoo repro ltsf``: the quick smoke run trains DLinear and RLinear through the registry and their recipes and
prints them beside the published numbers; options and a missing data file are one-line errors."""

from __future__ import annotations

import pytest

from seqzoo.cli.main import main
from seqzoo.core.errors import SeqzooError
from seqzoo.repro import get_repro
from seqzoo.repro.ltsf import PUBLISHED, default_models, run, write_synthetic_ett


def test_quick_run_trains_both_linear_models():
    result = run(True)
    rows = result.details["rows"]
    assert [(r["model"], r["horizon"]) for r in rows] == [("dlinear", 96), ("rlinear", 96)]
    for r in rows:
        assert r["windows"] == 2785 and r["epochs_run"] == 1 and 0.0 < r["mse"] < 3.0
    assert {c.name.split()[0] for c in result.checks} == {"dlinear", "rlinear"}
    assert all("0.386" in c.expected for c in result.checks)


def test_models_and_published_table():
    names = default_models()
    assert names[:2] == ["dlinear", "rlinear"]
    assert set(PUBLISHED) >= {"dlinear", "rlinear", "itransformer", "autoformer", "informer"}


def test_explicit_synthetic_data_and_cli_options(tmp_path, capsys):
    path = write_synthetic_ett(tmp_path / "ETTh_fake.csv")
    code = main(["repro", "ltsf", "--quick", "--set", f"data={path}", "--set", "models=dlinear",
                 "--set", "horizons=24"])
    out = capsys.readouterr().out
    assert code == 0 and "dlinear H=24" in out
    assert main(["repro", "ltsf", "--quick", "--set", "colour=blue"]) == 2
    assert "valid keys" in capsys.readouterr().err


def test_missing_data_and_unknown_model_are_errors(tmp_path):
    with pytest.raises(SeqzooError, match="ETTh1 not found"):
        run(False, data=str(tmp_path / "nope.csv"), models="dlinear")
    with pytest.raises(SeqzooError, match="unknown forecaster"):
        run(True, models="dlinear,not-a-model")
    assert get_repro("ltsf").paper_id == "ltsf"
