"""The ``tranception`` reproduction in quick mode and the ``seqzoo fitness train|score|eval`` commands on a tiny
family, including their one-line errors for bad input."""

from __future__ import annotations

import json

import pytest

from seqzoo.cli.fitness import main as fitness_main
from seqzoo.repro import get_repro

WT = "MKTAYIAKQRQISFVKSHFSRQ"
FAMILY = [WT, "MKTAYLAKQRQISFVKSHFSRQ", "MKSAYIAKQRQLSFVKSHFSRQ", "MKTAYIAKQRQISFIKSHFARQ",
          "MRTAYIAKQRQISFVKSHFSRE", "MKTAFIAKQRQISYVKSHFSRQ"]


def test_quick_repro_runs_and_reports_every_model():
    entry = get_repro("tranception")
    result = entry.run(True)
    rho = result.details["spearman"]
    assert set(rho) >= {"vanilla GPT", "Tranception", "Tranception + retrieval", "site-independent (MSA prior)"}
    assert all(-1 <= rho[m][k] <= 1 for m in rho for k in ("singles", "doubles"))
    assert len(result.checks) == 5 and "quick mode" in result.notes[-1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fitness")
    fasta = tmp / "family.fa"
    fasta.write_text("".join(f">s{k}\n{s}\n" for k, s in enumerate(FAMILY)))
    out = tmp / "run"
    assert fitness_main(["train", "--fasta", str(fasta), "--out", str(out), "--steps", "3", "--d-model", "16",
                         "--layers", "1", "--heads", "4", "--batch-size", "4", "--quiet"]) == 0
    return out


def test_score_and_eval_commands(run_dir, tmp_path, capsys):
    assay = tmp_path / "assay.csv"
    assay.write_text("mutant,mutated_sequence,DMS_score\n"
                     "K2A,MATAYIAKQRQISFVKSHFSRQ,0.1\nI6L,MKTAYLAKQRQISFVKSHFSRQ,0.9\n"
                     "K2A:Q22E,MATAYIAKQRQISFVKSHFSRE,-0.4\nT3S:I12L,MKSAYIAKQRQLSFVKSHFSRQ,0.7\n")
    msa = run_dir / "family.fasta"
    assert fitness_main(["score", str(run_dir), "--wt", WT, "--mutants", "K2A,T3del,A4insGG", "--msa",
                         str(msa)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split("\t")[0] for ln in lines] == ["K2A", "T3del", "A4insGG"]
    out_json, png = tmp_path / "eval.json", tmp_path / "scatter.png"
    assert fitness_main(["eval", str(run_dir), "--assay", str(assay), "--wt", WT, "--msa", str(msa),
                         "--plot", str(png), "--json", str(out_json)]) == 0
    report = json.loads(out_json.read_text())
    assert set(report["spearman"]) == {"model", "model, no retrieval", "site-independent prior"}
    assert set(report["spearman"]["model"]) == {"all", "singles", "multiples"}
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert fitness_main(["eval", "none", "--assay", str(assay), "--wt", WT, "--msa", str(msa)]) == 0


@pytest.mark.parametrize("argv, message", [
    (["score", "RUN", "--wt", WT, "--mutants", "A2G"], "position 2 is K, not A"),
    (["score", "RUN", "--wt", WT + "B", "--mutants", "K2A"], "unknown amino acid 'B'"),
    (["score", "RUN", "--wt", WT, "--mutants", "K2"], "malformed mutation"),
    (["score", "RUN", "--wt", WT, "--mutants", "K2A", "--msa", "MISSING.fa"], "does not exist"),
    (["eval", "RUN", "--assay", "MISSING.csv", "--wt", WT], "does not exist"),
    (["eval", "RUN", "--assay", "mavenn:gfp"], "unknown mavenn assay"),
])
def test_bad_input_is_one_line(run_dir, capsys, argv, message):
    argv = [str(run_dir) if a == "RUN" else a for a in argv]
    assert fitness_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("seqzoo: error:") and message in err and "\n" not in err


def test_train_rejects_a_malformed_fasta(tmp_path, capsys):
    bad = tmp_path / "bad.fa"
    bad.write_text("MKT\n>a\nMKT\n")
    assert fitness_main(["train", "--fasta", str(bad), "--out", str(tmp_path / "r"), "--steps", "1"]) == 2
    assert "before the first '>' header" in capsys.readouterr().err
