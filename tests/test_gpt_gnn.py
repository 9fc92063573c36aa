"""GPT-GNN for proteins (Buehler 2023, arXiv 2305.04934): the synthetic physics, the byte prompts and their loss
mask, the evaluation helpers, the model/training/generation path, the repro's quick mode and the CLI.

* physics: hand-checkable cases of the window rule and the minimum-length filter, content, GRAVY/solubility;
* prompts: the loss counts only targets after the delimiter, so changing the targets before it leaves the loss bit
  for bit unchanged (it can only act through the context); a missing delimiter, unknown amino acids and malformed
  requests are one-line errors; batches are deterministic;
* metrics: closed-loop scoring of the true sequences is perfect, random sequences are not; baselines;
* model: a few training steps lower the loss; the plot is a PNG; the repro's quick mode runs; the CLI trains,
  predicts and designs, and refuses bad input with one line.
"""

from __future__ import annotations

import argparse
import json
import random

import pytest
import torch

from seqzoo import SeqzooError
from seqzoo.models.protein.gpt_gnn import (apply_residue_majority, build_gpt_gnn, closed_loop, gpt_gnn_config,
                                           majority_class, plot_ss_strings, predict, residue_majority, ss_accuracy,
                                           train_gpt_gnn)
from seqzoo.tasks.protein.physics import (content, gravy, random_protein, secondary_structure, sequence_content,
                                          solubility_class, uniform_random_protein)
from seqzoo.tasks.protein.prompts import (DELIMITER, MASK_BYTE, ProteinPromptTask, decode, encode, loss_mask,
                                          make_answer, make_prompt, parse_answer, parse_prompt, real_windows)
from seqzoo.tasks.protein.structure import LabelledChain


# -- physics ---------------------------------------------------------------------------------------------------------
def test_physics_hand_cases():
    assert secondary_structure("EEEEEEEEEE") == "H" * 10      # Glu: Pα 1.51 > 1.03
    assert secondary_structure("VVVVVVVV") == "E" * 8         # Val: Pβ 1.70 > Pα 1.06
    assert secondary_structure("PPGGSPGN") == "C" * 8         # breakers
    # three helix-favouring residues between breakers give a helix run of 3 < 4: coil
    assert secondary_structure("GGGGGAEAGGGGG") == "C" * 13
    assert secondary_structure("GGGGGGAEMAEGGGGGG").count("H") >= 4
    ss = secondary_structure("MKTAYIAKQRQISFVKSHFSRQ")
    assert len(ss) == 22 and set(ss) <= set("HEC")
    assert sum(content(ss)) == pytest.approx(1.0)
    assert gravy("IIII") == pytest.approx(4.5) and solubility_class("IIII") == 0 and solubility_class("KKDE") == 1


def test_generator_is_deterministic_and_diverse():
    a = [random_protein(random.Random(7)) for _ in range(2)]
    assert a[0] == a[1] and 20 <= len(a[0]) <= 60
    rng = random.Random(0)
    helix = [sequence_content(random_protein(rng))[0] for _ in range(200)]
    assert min(helix) < 0.1 and max(helix) > 0.7  # contents span the range the design task asks for
    assert len(uniform_random_protein(rng, 33)) == 33


@pytest.mark.parametrize("bad", ["MKXA", "MK1A", "", "MK A"])
def test_physics_rejects_unknown_amino_acids(bad):
    with pytest.raises(SeqzooError, match="amino acid|empty"):
        secondary_structure(bad)


# -- prompts ---------------------------------------------------------------------------------------------------------
def test_prompt_formats_and_roundtrip():
    seq = "MKTAYIAKQRQISFVKSHFSRQ"
    assert make_prompt("ss", sequence=seq) == f"SS {seq}|"
    assert make_answer("ss", sequence=seq) == secondary_structure(seq) + ";"
    h, e, c = sequence_content(seq)
    assert make_answer("content", sequence=seq) == f"{h:.2f} {e:.2f} {c:.2f};"
    assert make_prompt("design", helix=0.4, sheet=0.25, length=30) == "GEN H0.40 E0.25 L30|"
    assert parse_prompt("GEN H0.40 E0.25 L30|") == ("design", "GEN H0.40 E0.25 L30|")
    assert parse_prompt("SOL mkv|") == ("solubility", "SOL MKV|")
    assert decode(encode("SS MKV|HHC;")) == "SS MKV|HHC;"
    assert parse_answer("ss", "HHEC;junk") == "HHEC" and parse_answer("ss", "HXC;") is None
    assert parse_answer("content", "0.10 0.20 0.70;") == (0.1, 0.2, 0.7) and parse_answer("content", "0.1;") is None
    assert parse_answer("solubility", "1;") == 1 and parse_answer("design", "MKV;") == "MKV"
    assert parse_answer("design", "MKB;") is None


@pytest.mark.parametrize("call, needle", [
    (lambda: parse_prompt("SS MKVLA"), "no task delimiter"),
    (lambda: parse_prompt("XYZ MKV|"), "unknown task tag"),
    (lambda: parse_prompt("SS MKBLA|"), "unknown amino acid 'B' at position 3"),
    (lambda: parse_prompt("GEN H0.4 L30|"), "malformed"),
    (lambda: parse_prompt("SS MKV|HHH"), "must end at the delimiter"),
    (lambda: make_prompt("design", helix=0.8, sheet=0.5, length=30), "must not exceed 1"),
    (lambda: make_prompt("design", helix=0.2, sheet=0.2, length=0), "length"),
    (lambda: make_prompt("folding", sequence="MKV"), "unknown protein task"),
    (lambda: loss_mask(encode("SS MKV HHC;")), "no task delimiter"),
])
def test_bad_prompts_are_one_line_errors(call, needle):
    with pytest.raises(SeqzooError, match=needle) as info:
        call()
    assert "\n" not in str(info.value)


def test_loss_mask_only_after_delimiter():
    tokens = encode("SS MKVLA|CHHHC;") + [0, 0]
    mask = loss_mask(tokens)
    first = tokens.index(ord(DELIMITER))
    targets = tokens[1:]
    counted = [decode([targets[t]]) for t in range(len(mask)) if mask[t]]
    assert "".join(counted) == "CHHHC;" and not any(mask[:first])


def test_changing_bytes_before_the_delimiter_acts_only_through_the_context():
    torch.manual_seed(0)
    model = build_gpt_gnn(d_model=32, n_layers=1, n_heads=2, gnn_layers=2).eval()
    batch = ProteinPromptTask(seed=1, mask_prob=0.0).get_batch("train", 0, 4)
    first = [row.tolist().index(ord(DELIMITER)) for row in batch["inputs"]]
    edited = dict(batch, targets=batch["targets"].clone())
    for b, f in enumerate(first):  # targets t < f are prompt bytes (the delimiter is the target at t = f - 1)
        edited["targets"][b, :f] = (edited["targets"][b, :f] + 17) % 256
    with torch.no_grad():
        assert torch.equal(model.loss(batch), model.loss(edited))
        changed = dict(batch, inputs=batch["inputs"].clone())
        changed["inputs"][0, 4] = (changed["inputs"][0, 4] + 1) % 256  # a prompt byte as context: the loss moves
        assert not torch.equal(model.loss(batch), model.loss(changed))


def test_batches_are_deterministic_and_well_formed():
    chains = [LabelledChain("toy", "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ", "CCHHHHHHHHHHCCCEEEECCCHHHHHHHHHCC", "x")]
    task = ProteinPromptTask(seed=3, real_train=chains, mask_prob=0.15)
    a, b = task.get_batch("train", 5, 8), task.get_batch("train", 5, 8)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["inputs"], task.get_batch("train", 6, 8)["inputs"])
    assert a["inputs"].shape == (8, 128) and a["loss_mask"].dtype == torch.bool
    assert (a["inputs"] == MASK_BYTE).any() and not (a["targets"] == MASK_BYTE).any()
    val = task.get_batch("val", 0, 8)
    assert not (val["inputs"] == MASK_BYTE).any()  # augmentation only in training batches
    for row, mask in zip(val["targets"], val["loss_mask"]):
        text = decode(row[mask].tolist())
        assert text.endswith(";") and text.count(";") == 1
    with pytest.raises(SeqzooError, match="split"):
        task.get_batch("dev", 0, 2)
    with pytest.raises(SeqzooError, match="seq_len"):
        ProteinPromptTask(seq_len=64)


def test_real_windows():
    chain = LabelledChain("c", "A" * 130, "H" * 130, "x")
    assert [len(w.sequence) for w in real_windows([chain])] == [60, 60]  # the last 10 residues are too short
    assert [len(w.sequence) for w in real_windows([chain], length=50)] == [50, 50, 30]


# -- metrics ---------------------------------------------------------------------------------------------------------
def test_closed_loop_and_baselines():
    rng = random.Random(0)
    seqs = [random_protein(rng) for _ in range(40)]
    requests = [(round(h, 2), round(e, 2), len(s)) for s in seqs for h, e, _ in [sequence_content(s)]]
    perfect = closed_loop(requests, seqs)
    assert perfect["content_mae"] <= 0.005 and perfect["r2"] > 0.99 and perfect["length_mae"] == 0
    rand = closed_loop(requests, [uniform_random_protein(rng, n) for _, _, n in requests])
    assert rand["content_mae"] > 0.1 and rand["r2"] < 0.5
    half = closed_loop(requests, seqs[:20] + [None] * 20)
    assert half["well_formed"] == 0.5
    assert ss_accuracy("HHC", "HHE") == pytest.approx(2 / 3) and ss_accuracy("H", "HHH") == pytest.approx(1 / 3)
    assert ss_accuracy(None, "HH") == 0.0
    assert majority_class(["HHE", "ECC", "C"]) == "C"
    table = residue_majority(["AAV", "AVV"], ["HHE", "HEE"])
    assert apply_residue_majority(table, "AVW") == "HE" + majority_class(["HHE", "HEE"])


# -- model -----------------------------------------------------------------------------------------------------------
def test_training_lowers_the_loss_and_predictions_parse(tmp_path):
    torch.manual_seed(0)
    model = build_gpt_gnn(gpt_gnn_config(d_model=32, n_layers=1, n_heads=2, gnn_layers=1))
    task = ProteinPromptTask(seed=0, weights={"solubility": 1.0}, max_length=30, seq_len=80)
    batch = task.get_batch("val", 0, 16)
    with torch.no_grad():
        before = float(model.loss(batch))
    train_gpt_gnn(model, task, steps=25, batch_size=16, lr=1e-2)
    with torch.no_grad():
        after = float(model.loss(batch))
    assert after < 0.5 * before
    answers = predict(model, "solubility", ["MKVLAAGG", "IIIVVLLF"])
    assert len(answers) == 2 and all(a in (0, 1, None) for a in answers)
    with pytest.raises(SeqzooError, match="design"):
        predict(model, "design", ["MKV"])


def test_plot_writes_png(tmp_path):
    path = plot_ss_strings([("a", "HHHCCEE", "HHHCCCE"), ("b", None, "CCCC")], tmp_path / "ss.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SeqzooError):
        plot_ss_strings([], tmp_path / "x.png")


def test_repro_quick(tmp_path):
    from seqzoo.repro import get_repro

    result = get_repro("protein-gpt-gnn").run(True, out=str(tmp_path))
    assert len(result.checks) >= 4
    assert set(result.details["runs"]) == {"3", "0"}
    assert (tmp_path / "ss_synthetic_gnn3.png").is_file()
    with pytest.raises(SeqzooError, match="integers"):
        get_repro("protein-gpt-gnn").run(True, steps="many")


# -- CLI -------------------------------------------------------------------------------------------------------------
def cli(argv):
    from seqzoo.cli.protein_design import add_protein_design_parser

    parser = argparse.ArgumentParser()
    add_protein_design_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.fn(args)


def test_cli_train_predict_design(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli(["protein-design", "train", "--out", str(run), "--steps", "2", "--d-model", "32", "--n-layers", "1",
                "--n-heads", "2", "--gnn-layers", "1", "--batch-size", "4", "--no-real"]) == 0
    fasta = tmp_path / "p.fa"
    fasta.write_text(">p1\nMKTAYIAKQR\n>p2\nGGSPVVIVT\n")
    assert cli(["protein-design", "predict", str(run), "--fasta", str(fasta), "--task", "ss",
                "--plot", str(tmp_path / "ss.png")]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [r["name"] for r in lines] == ["p1", "p2"] and (tmp_path / "ss.png").is_file()
    assert cli(["protein-design", "design", str(run), "--helix", "0.5", "--sheet", "0.1", "--length", "12",
                "--n", "2"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["requested"]["length"] == 12 and "content_mae" in summary
    assert cli(["protein-design", "predict", str(run), "--prompt", "CON MKVLA|"]) == 0


@pytest.mark.parametrize("argv_tail, fasta_text, needle", [
    (["--fasta", "{fa}"], "MKV\n>p\nMKV\n", "before the first '>' header"),
    (["--fasta", "{fa}"], ">p\nMKZV\n", "unknown amino acid 'Z'"),
    (["--seq", "MKV1"], None, "unknown amino acid '1'"),
    (["--prompt", "SS MKV"], None, "no task delimiter"),
    ([], None, "exactly one of"),
])
def test_cli_bad_input(tmp_path, argv_tail, fasta_text, needle):
    fa = tmp_path / "bad.fa"
    if fasta_text is not None:
        fa.write_text(fasta_text)
    argv = ["protein-design", "predict", str(tmp_path / "norun")] + [a.format(fa=fa) for a in argv_tail]
    with pytest.raises(SeqzooError, match=needle) as info:
        cli(argv)
    assert "\n" not in str(info.value)


def test_cli_missing_run_and_bad_design(tmp_path):
    with pytest.raises(SeqzooError, match="does not exist"):
        cli(["protein-design", "predict", str(tmp_path / "norun"), "--seq", "MKV"])
    with pytest.raises(SeqzooError, match="must not exceed 1"):
        cli(["protein-design", "design", str(tmp_path / "norun"), "--helix", "0.9", "--sheet", "0.9",
             "--length", "10"])
