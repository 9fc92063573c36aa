"""Arena: grid runs stored in SQLite, resume after a crash, best-over-lr, the HTML report, and bad input."""

from __future__ import annotations

import base64
import re
import sqlite3

import pytest

import seqzoo.arena.runner as runner
from seqzoo.arena import ArenaConfig, RunDB, best_over_lr, expand_grid, format_leaderboard, run_arena
from seqzoo.arena.db import COLUMNS
from seqzoo.arena.report import render_html, write_report
from seqzoo.cli.main import main
from seqzoo.core.errors import SeqzooError

GRID = dict(mixers=["attention", "linear_attention"], tasks=["mqar", "induction_heads"], d_models=[16], lrs=[3e-3],
            seeds=[0], seq_lens=[16], n_layers=1, steps=3, batch_size=4, eval_batches=1,
            task_options={"mqar": {"num_kv_pairs": 2, "vocab_size": 16}, "induction_heads": {"vocab_size": 16}})


class CountingTrainer:
    """Wraps the real ``train_on_task``, counting calls and optionally raising on the n-th."""

    def __init__(self, real, crash_on: int | None = None):
        self.real, self.crash_on, self.calls = real, crash_on, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.crash_on:
            raise RuntimeError("simulated crash")
        return self.real(*args, **kwargs)


@pytest.fixture(scope="module")
def arena_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("arena") / "runs.sqlite"
    with RunDB(path) as db:
        counts = run_arena(ArenaConfig.from_dict(GRID), db, log=lambda line: None)
    assert counts == {"total": 4, "skipped": 0, "ran": 4, "failed": 0, "stopped": False}
    return path


def test_rows_have_every_field(arena_db):
    with RunDB(arena_db) as db:
        rows = db.runs()
    assert len(rows) == 4
    assert {(r["mixer"], r["task"]) for r in rows} == {(m, t) for m in GRID["mixers"] for t in GRID["tasks"]}
    for row in rows:
        for column in COLUMNS:
            assert row[column] is not None, column
        assert 0.0 <= row["accuracy"] <= 1.0
        assert row["state_size"] > 0 and row["parameters"] > 0 and row["wall_seconds"] > 0
        assert row["config"]["lr"] == row["lr"] and row["config"]["steps"] == 3
        assert row["metrics"]["accuracy"] == row["accuracy"]
        assert row["git_revision"] and row["torch_version"] and row["hardware"]
    names = [c[1] for c in sqlite3.connect(arena_db).execute("PRAGMA table_info(runs)")]
    assert names == list(COLUMNS)


def test_rerun_skips_finished_runs(arena_db, monkeypatch):
    trainer = CountingTrainer(runner.train_on_task)
    monkeypatch.setattr(runner, "train_on_task", trainer)
    with RunDB(arena_db) as db:
        counts = run_arena(ArenaConfig.from_dict(GRID), db, log=lambda line: None)
        assert len(db.runs()) == 4
    assert trainer.calls == 0 and counts["skipped"] == 4 and counts["ran"] == 0


def test_crash_then_resume_does_not_redo_finished_runs(tmp_path, monkeypatch):
    cfg = ArenaConfig.from_dict(GRID)
    path = tmp_path / "runs.sqlite"
    crashing = CountingTrainer(runner.train_on_task, crash_on=3)
    monkeypatch.setattr(runner, "train_on_task", crashing)
    with RunDB(path) as db, pytest.raises(RuntimeError, match="simulated crash"):
        run_arena(cfg, db, log=lambda line: None)
    with RunDB(path) as db:
        assert len(db.runs()) == 2  # the first two were committed before the crash
    resumed = CountingTrainer(crashing.real)
    monkeypatch.setattr(runner, "train_on_task", resumed)
    with RunDB(path) as db:
        counts = run_arena(cfg, db, log=lambda line: None)
        keys = {r["run_key"] for r in db.runs()}
    assert resumed.calls == 2 and counts["skipped"] == 2 and counts["ran"] == 2
    assert keys == {runner.run_key(c) for c in expand_grid(cfg)}


def test_on_error_skip_logs_and_continues(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "train_on_task", CountingTrainer(runner.train_on_task, crash_on=1))
    cfg = ArenaConfig.from_dict({**GRID, "tasks": ["mqar"], "on_error": "skip"})
    lines = []
    with RunDB(tmp_path / "r.sqlite") as db:
        counts = run_arena(cfg, db, log=lines.append)
    assert counts["failed"] == 1 and counts["ran"] == 1 and any("FAILED" in line for line in lines)


def test_run_key_depends_on_full_config():
    a, b = expand_grid(ArenaConfig.from_dict(GRID))[:2]
    assert runner.run_key(a) != runner.run_key(b)
    assert runner.run_key(a) == runner.run_key(dict(reversed(list(a.items()))))


def test_tokens_budget_becomes_steps():
    cfg = ArenaConfig.from_dict({**GRID, "steps": None, "tokens": 4 * 16 * 5})
    assert {c["steps"] for c in expand_grid(cfg)} == {5}


def _row(mixer, lr, acc, seed=0, task="mqar"):
    return {"task": task, "seq_len": 16, "mixer": mixer, "d_model": 16, "lr": lr, "seed": seed, "accuracy": acc,
            "state_size": 10, "parameters": 100, "cpu_seconds": 1.0, "hardware": "h", "torch_version": "t",
            "git_revision": "g"}


def test_best_over_lr_picks_the_max():
    rows = [_row("a", 1e-3, 0.2), _row("a", 3e-3, 0.9), _row("a", 1e-2, 0.5),
            _row("b", 1e-3, 0.6, seed=0), _row("b", 1e-3, 0.4, seed=1), _row("b", 1e-2, 0.55, seed=0),
            _row("b", 1e-2, 0.55, seed=1)]
    best = {r["mixer"]: r for r in best_over_lr(rows)}
    assert best["a"]["best_lr"] == 3e-3 and best["a"]["accuracy"] == pytest.approx(0.9)
    assert best["b"]["best_lr"] == 1e-2 and best["b"]["accuracy"] == pytest.approx(0.55)  # mean over seeds
    assert best["b"]["seeds"] == 2 and best["a"]["lrs"] == [1e-3, 3e-3, 1e-2]
    assert [r["mixer"] for r in best_over_lr(rows)] == ["a", "b"]
    assert "0.900" in format_leaderboard(best_over_lr(rows))


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(b64, validate=True)
            for b64 in re.findall(r'<img [^>]*src="data:image/png;base64,([^"]+)"', page)]


def test_report_has_table_rows_and_valid_pngs(arena_db, tmp_path):
    out = write_report(arena_db, tmp_path / "report.html")
    page = out.read_text()
    for mixer in GRID["mixers"]:
        assert f"<td>{mixer}</td>" in page
    assert page.count("<tr>") >= 1 + 4 + 1 + 2  # leaderboard header + 4 rows, summary header + 2 mixers
    images = _images(page)
    assert len(images) == 2 and page.count("<img ") == 2  # accuracy vs state size, one per task
    assert all(img.startswith(b"\x89PNG\r\n\x1a\n") for img in images)


def test_report_plots_accuracy_vs_length_with_several_lengths():
    rows = [_row("a", 1e-3, 0.5), {**_row("a", 1e-3, 0.3), "seq_len": 32}]
    page = render_html(rows)
    assert "accuracy vs sequence length" in page and len(_images(page)) == 2


@pytest.mark.parametrize("change, needle", [({"mixers": ["attention", "nope"]}, "unknown mixer 'nope'"),
                                            ({"tasks": ["mqar", "nope"]}, "unknown arena task 'nope'"),
                                            ({"lrs": []}, "arena.lrs"),
                                            ({"steps": None}, "exactly one budget"),
                                            ({"wat": 1}, "unknown arena key 'wat'"),
                                            ({"task_options": {"mqar": {"bogus": 1}}}, "unknown option 'bogus'")])
def test_bad_grid_is_one_line_error(change, needle):
    with pytest.raises(SeqzooError) as err:
        ArenaConfig.from_dict({**GRID, **change})
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text('[arena]\nmixers = ["nope"]\ntasks = ["mqar"]\nsteps = 1\n')
    assert main(["arena", str(config), "--db", str(tmp_path / "x.sqlite")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown mixer 'nope'" in err and "valid:" in err
    assert main(["report", str(tmp_path / "missing.sqlite")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_arena_and_report_end_to_end(tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text('[arena]\nmixers = ["attention"]\ntasks = ["induction_heads"]\nd_models = [16]\n'
                      'seq_lens = [16]\nn_layers = 1\nsteps = 2\nbatch_size = 4\neval_batches = 1\n'
                      f'db = "{tmp_path / "cli.sqlite"}"\n')
    assert main(["arena", str(config)]) == 0
    out = capsys.readouterr().out
    assert "1 ran" in out and "induction_heads" in out
    assert main(["report", str(tmp_path / "cli.sqlite"), "--out", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").read_text().count("<img ") == 1
