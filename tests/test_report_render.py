"""The arena report renders in a real browser: headless Chromium loads it, its images decode and its tables exist.

Needs Debian's ``chromium`` (installed by ``.ci/run`` where apt is available); skipped, with the reason, otherwise.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from seqzoo.arena import ArenaConfig, RunDB, run_arena
from seqzoo.arena.report import write_report

BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.mark.skipif(BROWSER is None, reason="no headless Chromium installed (Debian package 'chromium')")
def test_report_renders_in_headless_chromium(tmp_path):
    grid = dict(mixers=["attention", "retention"], tasks=["mqar", "induction_heads"], d_models=[16], lrs=[3e-3],
                seeds=[0], seq_lens=[16], n_layers=1, steps=3, batch_size=4, eval_batches=1,
                task_options={"mqar": {"num_kv_pairs": 2, "vocab_size": 16}, "induction_heads": {"vocab_size": 16}})
    db_path = tmp_path / "runs.sqlite"
    with RunDB(db_path) as db:
        run_arena(ArenaConfig.from_dict(grid), db, log=lambda line: None)
    page = write_report(db_path, tmp_path / "report.html")
    html = page.read_text()
    n_images = html.count("<img ")
    assert n_images >= 1
    dom = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                          f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--dump-dom",
                          page.resolve().as_uri()], capture_output=True, text=True, timeout=120).stdout
    body = re.search(r"<body([^>]*)>", dom)
    assert body, f"no <body> in the browser's DOM dump: {dom[:300]!r}"
    attrs = dict(re.findall(r'data-([a-z-]+)="(\d+)"', body.group(1)))
    assert attrs.get("images") == str(n_images), attrs
    assert attrs.get("images-decoded") == str(n_images), f"only {attrs.get('images-decoded')} of {n_images} decoded"
    assert int(attrs.get("tables", 0)) >= 3 and int(attrs.get("table-rows", 0)) >= 8, attrs
    assert "Leaderboard" in dom and "mqar" in dom
