"""The command line: list, train, info, generate, and one-line errors with exit code 2 for bad input."""

import json
import subprocess
import sys

import pytest

from seqzoo.cli.main import main

TINY = """
name = "tiny"
[model]
d_model = 32
n_layers = 2
mixer = ["retention", "attention"]
[data]
seq_len = 16
[train]
steps = 4
batch_size = 4
eval_every = 2
eval_batches = 2
checkpoint_every = 2
progress = false
[sample]
max_new_tokens = 8
"""


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    text = root / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 60)
    config = root / "tiny.toml"
    config.write_text(TINY)
    out = root / "run"
    code = main(["train", str(config), "--set", f"data.source={text}", "--set", f"out_dir={out}"])
    assert code == 0
    return root, config, out


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "seqzoo", *args], capture_output=True, text=True, timeout=300)


def test_list_names_papers():
    result = run_cli("list")
    assert result.returncode == 0
    assert "attention" in result.stdout and "Attention Is All You Need" in result.stdout
    assert "Retentive Network" in result.stdout


def test_train_info_generate(trained_run, capsys):
    root, config, out = trained_run
    assert (out / "metrics.jsonl").exists()
    assert main(["info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["step"] == 4 and info["mixers"] == ["retention", "attention"] and info["parameters"] > 0
    assert main(["generate", str(out), "--prompt", "the quick", "--max-new-tokens", "5", "--temperature", "0"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("the quick") and len(text.rstrip("\n").encode()) >= len("the quick")


def error_line(result):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("seqzoo: error: "), result.stderr
    return lines[0]


def test_bad_inputs_give_one_line_and_exit_2(trained_run, tmp_path):
    root, config, out = trained_run
    assert "unknown key model.widht" in error_line(run_cli("train", str(config), "--set", "model.widht=3"))
    assert "unknown mixer 'transformerx'" in error_line(run_cli("train", str(config), "--set",
                                                                "model.mixer=transformerx"))
    assert "expected an integer" in error_line(run_cli("train", str(config), "--set", "model.d_model=big"))
    assert "does not exist" in error_line(run_cli("train", str(tmp_path / "none.toml")))
    binary = tmp_path / "latin1.txt"
    binary.write_bytes("caf\xe9 ".encode("latin-1") * 100)
    assert "not UTF-8 text" in error_line(run_cli("train", str(config), "--set", f"data.source={binary}",
                                                  "--set", f"out_dir={tmp_path / 'x'}"))
    assert "does not exist" in error_line(run_cli("train", str(config), "--set", f"data.source={tmp_path}/nope"))
    error_line(run_cli("info", str(tmp_path / "no_checkpoint_here")))
    assert "prompt is empty" in error_line(run_cli("generate", str(out), "--prompt", ""))


def test_repro_list_and_unknown_id():
    listed = run_cli("repro", "--list")
    assert listed.returncode == 0 and "s4 " in listed.stdout and "aaren" in listed.stdout
    assert "unknown reproduction 'nope'; valid: " in error_line(run_cli("repro", "nope"))


def test_repro_result_rendering_and_exit_status():
    from seqzoo.repro import ReproResult

    result = ReproResult("demo")
    assert not result.held  # no checks: nothing was shown to hold
    result.check("accuracy", 0.91234, "> 0.9", True)
    result.check("gap", 0.02, "> 0.1", False)
    text = result.render()
    assert "DID NOT HOLD" in text and "[ok] accuracy: measured 0.9123; expected > 0.9" in text
    assert "[FAIL] gap" in text and not result.held
