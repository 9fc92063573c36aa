"""The ICL regression task in the arena (runs end to end, stores its error curve), the report's "ICL error vs
number of examples" plot, and the quick (smoke) modes of the icl-algorithms and icl-gd reproductions."""

from __future__ import annotations

import base64
import re

import pytest

from seqzoo import SeqzooError
from seqzoo.arena import ArenaConfig, RunDB, get_task, list_tasks, run_arena
from seqzoo.arena.report import render_html

GRID = dict(mixers=["attention", "linear_attention"], tasks=["icl_regression"], d_models=[16], lrs=[3e-3],
            seeds=[0], seq_lens=[12], n_layers=1, steps=3, batch_size=8, eval_batches=1,
            task_options={"icl_regression": {"d": 3}})


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(b64) for b64 in re.findall(r'<img [^>]*src="data:image/png;base64,([^"]+)"', page)]


def test_icl_regression_is_an_arena_task():
    assert "icl_regression" in list_tasks()
    entry = get_task("icl_regression")
    assert entry.metric == "r2" and set(entry.options()) == {"d", "function", "noise_std"}
    source = entry.build(12, 0, d=3)
    assert source.seq_len == 12 and source.n_points == 6 and source.input_dim == 4
    with pytest.raises(SeqzooError, match="even seq_len"):
        entry.build(11, 0)


def test_arena_runs_icl_and_report_plots_error_vs_examples(tmp_path):
    with RunDB(tmp_path / "icl.sqlite") as db:
        counts = run_arena(ArenaConfig.from_dict(GRID), db, log=lambda line: None)
        rows = db.runs()
    assert counts["ran"] == 2 and counts["failed"] == 0
    for row in rows:
        m = row["metrics"]
        assert m["metric"] == "r2" and row["accuracy"] == pytest.approx(1 - m["nse"])
        assert len(m["error_by_k"]) == 6 and len(m["ols_by_k"]) == 6 and max(m["ols_by_k"][3:]) < 1e-10
        assert row["state_size"] > 0
    page = render_html(rows)
    assert "icl_regression: ICL error vs number of examples" in page
    images = _images(page)
    assert len(images) == 2 and all(img.startswith(b"\x89PNG") for img in images)  # state-size plot + ICL plot


@pytest.mark.parametrize("paper_id", ["icl-algorithms", "icl-gd"])
def test_quick_reproductions_run_and_report_checks(paper_id):
    from seqzoo.repro import get_repro

    result = get_repro(paper_id).run(True)
    assert result.paper_id == paper_id and len(result.checks) >= 3
    assert "quick mode" in result.render()
