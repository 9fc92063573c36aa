"""``seqzoo report``: a static HTML page from an arena database — tables and matplotlib plots.

The page has a leaderboard (best over learning rates for each task, length, mixer and width), a compact
mixer × task summary, plots of accuracy against state size per task (the Zoology recall-vs-memory picture) and,
when a task was run at several lengths, accuracy against sequence length, for in-context regression runs the error
against the number of in-context examples beside OLS and ridge, for every model-size sweep (one task, length and
mixer at three or more parameter counts) the validation loss against parameters with the fitted scaling law
L(N) = L∞ + (N₀/N)^α (:mod:`seqzoo.arena.scaling`), and the provenance of the runs
(hardware, torch version, git revision). Plots are PNGs embedded as base64, so the page is one self-contained file.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from ..core.errors import SeqzooError
from .db import RunDB
from .runner import best_over_lr
from .scaling import sweep_plots


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _plots(best: list[dict]) -> list[tuple[str, str]]:
    """(title, base64 PNG) for accuracy vs state size per task, and accuracy vs length where there are several."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    for task in sorted({r["task"] for r in best}):
        rows = [r for r in best if r["task"] == task]
        longest = max(r["seq_len"] for r in rows)
        fig, ax = plt.subplots(figsize=(6, 4))
        for mixer in sorted({r["mixer"] for r in rows}):
            pts = sorted((r["state_size"] or 0, r["accuracy"]) for r in rows
                         if r["mixer"] == mixer and r["seq_len"] == longest)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=mixer)
        ax.set_xscale("log")
        ax.set_xlabel("state size (numbers kept per sequence)")
        ax.set_ylabel("accuracy (best over lr)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{task}, T={longest}: accuracy vs state size")
        ax.legend(fontsize=7, ncol=2)
        out.append((f"{task}: accuracy vs state size", _png(fig)))
        lengths = sorted({r["seq_len"] for r in rows})
        if len(lengths) > 1:
            fig, ax = plt.subplots(figsize=(6, 4))
            for mixer in sorted({r["mixer"] for r in rows}):
                best_at = {}
                for r in rows:
                    if r["mixer"] == mixer:
                        best_at[r["seq_len"]] = max(best_at.get(r["seq_len"], 0.0), r["accuracy"])
                xs = sorted(best_at)
                ax.plot(xs, [best_at[x] for x in xs], marker="o", label=mixer)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("sequence length")
            ax.set_ylabel("accuracy (best over lr and width)")
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{task}: accuracy vs sequence length")
            ax.legend(fontsize=7, ncol=2)
            out.append((f"{task}: accuracy vs sequence length", _png(fig)))
    return out


def _icl_plots(runs: list[dict]) -> list[tuple[str, str]]:
    """ICL error vs number of in-context examples: per task and length, the best run (highest score) of each
    mixer beside the OLS and ridge curves measured on the same prompts (runs whose metrics have ``error_by_k``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [r for r in runs if isinstance(r.get("metrics"), dict) and "error_by_k" in r["metrics"]]
    out = []
    for task, seq_len in sorted({(r["task"], r["seq_len"]) for r in curves}):
        rows = [r for r in curves if (r["task"], r["seq_len"]) == (task, seq_len)]
        fig, ax = plt.subplots(figsize=(6, 4))
        for mixer in sorted({r["mixer"] for r in rows}):
            best = max((r for r in rows if r["mixer"] == mixer), key=lambda r: r["accuracy"] or float("-inf"))
            ax.plot(best["metrics"]["error_by_k"], marker="o", label=mixer)
        reference = rows[0]["metrics"]
        for key, style in (("ols_by_k", "k--"), ("ridge_by_k", "k:")):
            if key in reference:
                ax.plot(reference[key], style, label=key.split("_")[0])
        ax.set_xlabel("in-context examples k")
        ax.set_ylabel("normalised squared error")
        ax.set_ylim(bottom=0)
        ax.set_title(f"{task}, T={seq_len}: error vs number of examples")
        ax.legend(fontsize=7, ncol=2)
        out.append((f"{task}: ICL error vs number of examples", _png(fig)))
    return out


def _table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "\n".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}\n</table>"


def render_html(runs: list[dict], title: str = "seqzoo arena") -> str:
    """The report page for ``runs`` (rows of :meth:`RunDB.runs`)."""
    best = best_over_lr(runs)
    leaderboard = _table(
        ["task", "T", "mixer", "d_model", "accuracy", "best lr", "lrs tried", "seeds", "state size", "parameters"],
        [[r["task"], r["seq_len"], r["mixer"], r["d_model"], f"{r['accuracy']:.3f}", f"{r['best_lr']:g}",
          ", ".join(f"{x:g}" for x in r["lrs"]), r["seeds"], r["state_size"], r["parameters"]] for r in best])
    tasks = sorted({r["task"] for r in best})
    mixers = sorted({r["mixer"] for r in best})
    summary_rows = []
    for mixer in mixers:
        cells = []
        for task in tasks:
            accs = [r["accuracy"] for r in best if r["mixer"] == mixer and r["task"] == task]
            cells.append(f"{max(accs):.3f}" if accs else "–")
        summary_rows.append([mixer, *cells])
    summary = _table(["mixer", *tasks], summary_rows)
    provenance = _table(["hardware", "torch", "git revision", "runs"], [
        [hw, tv, gr, sum(1 for r in runs if (r["hardware"], r["torch_version"], r["git_revision"]) == (hw, tv, gr))]
        for hw, tv, gr in sorted({(r["hardware"], r["torch_version"], r["git_revision"]) for r in runs})])
    images = "\n".join(f'<figure><img alt="{html.escape(t)}" src="data:image/png;base64,{b64}">'
                       f"<figcaption>{html.escape(t)}</figcaption></figure>"
                       for t, b64 in _plots(best) + _icl_plots(runs) + sweep_plots(runs))
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse;margin-bottom:1.5em}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} figure{{display:inline-block;margin:1em}}</style>
</head><body>
<h1>{html.escape(title)}</h1>
<p>{len(runs)} runs. Accuracy is the task's scored-position accuracy on its validation split, best over learning
rates (mean over seeds). State size is the number of values a model keeps per sequence for decoding.</p>
<h2>Best accuracy per mixer and task</h2>
{summary}
<h2>Leaderboard (best over learning rates)</h2>
{leaderboard}
<h2>Plots</h2>
{images}
<h2>Provenance</h2>
{provenance}
{_SELF_CHECK}
</body></html>
"""


# After loading, the page records on <body> how many of its images decoded and how many tables and rows it has,
# so a headless browser's DOM dump shows whether it rendered (tests/test_report_render.py).
_SELF_CHECK = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  document.body.dataset.images = imgs.length;
  document.body.dataset.imagesDecoded = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.dataset.tables = document.querySelectorAll('table').length;
  document.body.dataset.tableRows = document.querySelectorAll('table tr').length;
});
</script>"""


def write_report(db_path: str | Path, out_path: str | Path) -> Path:
    """Render the arena database at ``db_path`` to the HTML file ``out_path``."""
    if not Path(db_path).is_file():
        raise SeqzooError(f"arena database {str(db_path)!r} does not exist; run `seqzoo arena CONFIG` first")
    with RunDB(db_path) as db:
        runs = db.runs()
    if not runs:
        raise SeqzooError(f"arena database {str(db_path)!r} has no runs yet")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(runs), encoding="utf-8")
    return out
