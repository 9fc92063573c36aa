"""``seqzoo webs ...`` end to end at toy size, its one-line errors, and the reproduction's quick mode."""

import argparse

import numpy as np
import pandas as pd
import pytest

from seqzoo.cli.webs import add_webs_parser, read_targets
from seqzoo.core.errors import SeqzooError
from seqzoo.repro import get_repro
from seqzoo.tasks.webs import FEATURE_NAMES, read_graphml


def run(argv):
    parser = argparse.ArgumentParser(prog="seqzoo")
    add_webs_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.fn(args)


def test_cli_end_to_end(tmp_path, capsys):
    proc = tmp_path / "proc"
    assert run(["webs", "procedural", "--out", str(proc), "--n", "3", "--max-nodes", "12"]) == 0
    assert (proc / "webs.png").is_file() and (proc / "web_000.obj").is_file() and (proc / "web_002.ply").is_file()
    assert len(pd.read_csv(proc / "features.csv")) == 3
    rundir = tmp_path / "run"
    assert run(["webs", "train", "--generator", "transformer", "--out", str(rundir), "--n-train", "40",
                "--max-nodes", "12", "--steps", "4", "--batch-size", "8", "--d-model", "16", "--n-layers", "1",
                "--n-heads", "2", "--quiet"]) == 0
    gen_dir = tmp_path / "gen"
    assert run(["webs", "generate", str(rundir), "--out", str(gen_dir), "--from-graph",
                str(proc / "web_000.graphml"), str(proc / "web_001.graphml")]) == 0
    table = pd.read_csv(gen_dir / "features.csv")
    assert len(table) == 2 and "target_n_nodes" in table.columns
    read_graphml(gen_dir / "generated_000.graphml")
    assert run(["webs", "eval", str(rundir), "--n", "4"]) == 0
    assert (rundir / "eval.json").is_file() and (rundir / "eval_targets.png").is_file()
    stem = tmp_path / "asm" / "helix"
    assert run(["webs", "assemble", str(proc / "web_000.graphml"), str(proc / "web_001.graphml"), "--out", str(stem),
                "--tiles", "5", "--tube-radius", "0.02"]) == 0
    assert read_graphml(f"{stem}.graphml").n_nodes > 0 and (tmp_path / "asm" / "helix.png").is_file()
    assert "assembled 5 tiles" in capsys.readouterr().out


def test_targets_csv(tmp_path):
    good = tmp_path / "t.csv"
    pd.DataFrame(np.ones((2, 14)), columns=list(FEATURE_NAMES)).to_csv(good, index=False)
    assert read_targets(good).shape == (2, 14)
    short = tmp_path / "short.csv"
    pd.DataFrame(np.ones((2, 13)), columns=list(FEATURE_NAMES)[:13]).to_csv(short, index=False)
    with pytest.raises(SeqzooError, match="lacks column.*leaf_fraction"):
        read_targets(short)
    text = tmp_path / "text.csv"
    frame = pd.DataFrame(np.ones((1, 14)), columns=list(FEATURE_NAMES)).astype(object)
    frame.iloc[0, 3] = "many"
    frame.to_csv(text, index=False)
    with pytest.raises(SeqzooError, match="non-numeric"):
        read_targets(text)
    with pytest.raises(SeqzooError, match="does not exist"):
        read_targets(tmp_path / "none.csv")


def test_cli_errors(tmp_path):
    with pytest.raises(SeqzooError, match="no web generator"):
        run(["webs", "eval", str(tmp_path / "nothing")])
    with pytest.raises(SeqzooError, match="export format"):
        run(["webs", "procedural", "--out", str(tmp_path / "p"), "--n", "1", "--formats", "stl"])


def test_repro_quick():
    entry = get_repro("spider-web-graphgen")
    result = entry.run(True, generators="transformer,diffusion-sparse")
    names = [c.name for c in result.checks]
    assert any("n_nodes, conditioned" in n for n in names) and any("causality" in n for n in names)
    causal = next(c for c in result.checks if "causality" in c.name)
    assert causal.held                                  # the probe holds even for an untrained-ish model
    assert set(result.details["r2"]) == {"transformer", "diffusion-sparse"}
    assert result.details["setup"]["workers"] == 1
    with pytest.raises(SeqzooError, match="unknown generator"):
        entry.run(True, generators="gan")
    # workers = 2: the same generators trained at once in spawned processes give the same numbers
    two = entry.run(True, generators="transformer,diffusion-sparse", workers="2")
    assert two.details["setup"]["workers"] == 2
    assert two.details["r2"] == result.details["r2"]
    assert [(c.name, c.measured) for c in two.checks] == [(c.name, c.measured) for c in result.checks]


@pytest.mark.parametrize("value, message", [("0", "workers must be positive"), ("-2", "workers must be positive"),
                                            ("two", "workers must be an integer"),
                                            ("1.5", "workers must be an integer")])
def test_repro_workers_option_errors(value, message):
    with pytest.raises(SeqzooError, match=message) as err:
        get_repro("spider-web-graphgen").run(True, workers=value)
    assert "\n" not in str(err.value)
