"""Scaling-law fit L(N) = L∞ + (N₀/N)^α (seqzoo/arena/scaling.py) and the report's scaling-law plot."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest

from seqzoo.arena.report import render_html
from seqzoo.arena.scaling import find_sweeps, fit_power_law, fit_scaling_law
from seqzoo.core.errors import SeqzooError

TRUE = {"l_inf": 1.3, "n0": 2.0e3, "alpha": 0.35}
SIZES = np.geomspace(1e4, 3e7, 10)


def law(n, l_inf=TRUE["l_inf"], n0=TRUE["n0"], alpha=TRUE["alpha"]):
    return l_inf + (n0 / np.asarray(n, dtype=float)) ** alpha


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_recovers_known_parameters_from_noisy_points(seed):
    rng = np.random.default_rng(seed)
    loss = law(SIZES) * (1 + 0.005 * rng.standard_normal(SIZES.size))   # 0.5 % multiplicative noise
    fit = fit_scaling_law(SIZES, loss)
    assert fit.l_inf == pytest.approx(TRUE["l_inf"], rel=0.05)
    assert fit.alpha == pytest.approx(TRUE["alpha"], rel=0.15)
    assert np.log(fit.n0) == pytest.approx(np.log(TRUE["n0"]), abs=np.log(1.6))
    assert fit.r2 > 0.99 and fit.n_points == SIZES.size
    for key in ("l_inf", "n0", "alpha"):     # finite uncertainties that cover the truth within 4 sigma
        assert 0 < fit.stderr[key] < np.inf
    assert abs(fit.l_inf - TRUE["l_inf"]) <= 4 * fit.stderr["l_inf"] + 1e-3
    assert abs(fit.alpha - TRUE["alpha"]) <= 4 * fit.stderr["alpha"] + 1e-3


def test_exact_points_are_fitted_exactly_and_the_pure_power_law_is_worse():
    loss = law(SIZES)
    fit = fit_scaling_law(SIZES, loss)
    assert fit.l_inf == pytest.approx(TRUE["l_inf"], rel=1e-4)
    assert fit.alpha == pytest.approx(TRUE["alpha"], rel=1e-3)
    assert fit.n0 == pytest.approx(TRUE["n0"], rel=1e-2)
    assert np.allclose(fit.predict(SIZES), loss, rtol=1e-6)
    pure = fit_power_law(SIZES, loss)   # L∞ = 0 cannot bend towards the floor
    assert pure.l_inf == 0 and pure.rms_log_residual > 100 * fit.rms_log_residual


def test_robust_fit_resists_one_outlier():
    loss = law(SIZES)
    loss[4] *= 1.5   # one diverged run
    fit = fit_scaling_law(SIZES, loss)
    assert fit.l_inf == pytest.approx(TRUE["l_inf"], rel=0.05)
    assert fit.alpha == pytest.approx(TRUE["alpha"], rel=0.15)


def test_three_points_fit_but_have_no_uncertainty():
    fit = fit_scaling_law([1e4, 1e5, 1e6], law([1e4, 1e5, 1e6]))
    assert np.allclose(fit.predict([1e4, 1e5, 1e6]), law([1e4, 1e5, 1e6]), rtol=1e-4)
    assert fit.stderr["alpha"] == np.inf


@pytest.mark.parametrize("n, loss, needle", [
    ([1e4, 1e5], [2.0, 1.5], "at least 3 points"),
    ([1e4, 1e4, 1e5], [2.0, 1.9, 1.5], "at least 3 points"),
    ([1e4, 1e5, 1e6], [2.0, 1.5], "as many losses"),
    ([1e4, -1, 1e6], [2.0, 1.5, 1.2], "positive"),
    ([1e4, 1e5, 1e6], [2.0, float("nan"), 1.2], "finite"),
])
def test_bad_points_are_one_line_errors(n, loss, needle):
    with pytest.raises(SeqzooError) as err:
        fit_scaling_law(n, loss)
    assert needle in str(err.value) and "\n" not in str(err.value)


def _row(d_model, params, loss, lr=1e-3, mixer="attention"):
    return {"task": "text_bytes", "seq_len": 64, "mixer": mixer, "d_model": d_model, "lr": lr, "seed": 0,
            "accuracy": 0.5, "state_size": 10, "parameters": params, "cpu_seconds": 1.0, "hardware": "h",
            "torch_version": "t", "git_revision": "g", "metrics": {"loss": loss, "accuracy": 0.5}}


def test_report_adds_a_scaling_plot_only_for_a_model_size_sweep():
    sizes = [1e4, 4e4, 1.6e5, 6.4e5]
    rows = [_row(16 * 2 ** i, n, float(law(n))) for i, n in enumerate(sizes)]
    rows.append(_row(16, sizes[0], float(law(sizes[0])) + 0.5, lr=1e-2))   # a worse lr: not the size's best
    assert [p[1] for p in find_sweeps(rows)[("text_bytes", 64, "attention")]] == pytest.approx(law(sizes))
    page = render_html(rows)
    assert "scaling-law fit" in page
    images = re.findall(r'<img [^>]*src="data:image/png;base64,([^"]+)"', page)
    assert all(base64.b64decode(b).startswith(b"\x89PNG") for b in images)
    without = render_html(rows[:2])   # two sizes: no sweep, no plot
    assert "scaling-law fit" not in without
    assert len(re.findall(r"<img ", without)) == len(images) - 1


def test_quick_reproduction_writes_a_sweep_the_report_plots(tmp_path):
    from seqzoo.arena.report import write_report
    from seqzoo.repro import get_repro

    db = tmp_path / "sweep.sqlite"
    result = get_repro("scaling-laws-ar").run(True, db=str(db))
    assert "quick mode" in result.render() and len(result.details["sizes"]) == 3
    assert "text_bytes (attention): scaling-law fit" in write_report(db, tmp_path / "r.html").read_text()
    with pytest.raises(SeqzooError, match="widths"):
        get_repro("scaling-laws-ar").run(True, widths="8,x")
