"""Scaling-law fits: L(N) = L∞ + (N₀/N)^α over a model-size sweep, with uncertainties, and the report's plot.

Paper: "Scaling Laws for Autoregressive Generative Modeling", Henighan, Kaplan, Katz, Chen, Hesse, Jackson, Jun,
Brown, Dhariwal, Gray, Hallacy, Mann, Radford, Ramesh, Ryder, Ziegler, Schulman, Amodei and McCandlish, 2020,
arXiv 2010.14701. For converged models of N (non-embedding) parameters the loss follows

    L(N) = L∞ + (N₀ / N)^α,          L∞ ≥ 0, N₀ > 0, α > 0,

where L∞ estimates the entropy of the data (L = S(true) + KL(true ‖ model), and the reducible part (N₀/N)^α
vanishes as N → ∞). A pure power law L = (N₀/N)^α is the special case L∞ = 0.

The fit (:func:`fit_scaling_law`) is a robust nonlinear least-squares fit in log space: the residuals are
r_i = log L̂(N_i) − log L_i (relative errors, so small and large losses weigh alike), minimised with
``scipy.optimize.least_squares`` and a Cauchy loss ρ(r²) = f² log(1 + r²/f²) with f = ``f_scale`` = 0.02
(residuals much beyond 2 % count only logarithmically, so one diverged run cannot drag the curve;
``robust_loss = "linear"`` gives plain least squares) over the parameters (L∞, log N₀, α) within bounds
0 ≤ L∞ ≤ min L, α ∈ [1e-3, 10], started from several initial guesses (the best final cost wins). Uncertainties are
the usual asymptotic standard errors √diag(s² (JᵀJ)⁻¹) with s² = Σ r² / (n − 3) at the optimum (J the residual
Jacobian as weighted by the robust loss, scipy's ``jac``; N₀'s by the delta method, σ_N₀ = N₀ σ_logN₀); with
exactly 3 points there is no degree of freedom left and they are reported as ``inf``. Fit quality:
R² = 1 − Σ(L − L̂)² / Σ(L − mean L)² in linear space, and the root-mean-square log residual.
:func:`fit_power_law` fits the L∞ = 0 law by linear regression of log L on log N, for comparison.

:func:`sweep_plots` is the report's helper: it finds every model-size sweep in arena runs (the same task, length
and mixer at ≥ 3 parameter counts; per size the lowest validation loss over learning rates and seeds), fits it,
and draws loss vs parameters on log-log axes with the fitted curve and the parameters in the title.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..core.errors import SeqzooError

MIN_POINTS = 3


@dataclass
class ScalingFit:
    """Fitted L(N) = l_inf + (n0 / N)^alpha with standard errors (``stderr``) and fit quality."""

    l_inf: float
    n0: float
    alpha: float
    stderr: dict = field(default_factory=dict)   # keys "l_inf", "n0", "alpha"
    r2: float = float("nan")
    rms_log_residual: float = float("nan")
    n_points: int = 0
    cost: float = float("nan")

    def predict(self, n) -> np.ndarray:
        n = np.asarray(n, dtype=np.float64)
        return self.l_inf + (self.n0 / n) ** self.alpha

    def summary(self) -> str:
        se = self.stderr
        return (f"L∞ = {self.l_inf:.4g} ± {se.get('l_inf', float('nan')):.2g}, N₀ = {self.n0:.3g} ± "
                f"{se.get('n0', float('nan')):.2g}, α = {self.alpha:.3g} ± {se.get('alpha', float('nan')):.2g}, "
                f"R² = {self.r2:.4f} ({self.n_points} points)")

    def as_dict(self) -> dict:
        return {"l_inf": self.l_inf, "n0": self.n0, "alpha": self.alpha, "stderr": dict(self.stderr),
                "r2": self.r2, "rms_log_residual": self.rms_log_residual, "n_points": self.n_points}


def _points(n, loss) -> tuple[np.ndarray, np.ndarray]:
    try:
        n = np.asarray(n, dtype=np.float64).ravel()
        loss = np.asarray(loss, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise SeqzooError("scaling-law fit needs numeric sequences of model sizes N and losses L") from None
    if n.shape != loss.shape:
        raise SeqzooError(f"scaling-law fit needs as many losses as model sizes, got {n.size} sizes and "
                          f"{loss.size} losses")
    if not (np.all(np.isfinite(n)) and np.all(np.isfinite(loss))) or np.any(n <= 0) or np.any(loss <= 0):
        raise SeqzooError("scaling-law fit needs finite, positive model sizes N and losses L")
    distinct = np.unique(n).size
    if distinct < MIN_POINTS:
        raise SeqzooError(f"scaling-law fit needs at least {MIN_POINTS} points with distinct model sizes N; "
                          f"got {distinct}")
    order = np.argsort(n, kind="stable")
    return n[order], loss[order]


def _r2(loss: np.ndarray, pred: np.ndarray) -> float:
    total = float(((loss - loss.mean()) ** 2).sum())
    resid = float(((loss - pred) ** 2).sum())
    return 1.0 - resid / total if total > 0 else (1.0 if resid == 0 else float("-inf"))


def fit_scaling_law(n, loss, *, f_scale: float = 0.02, robust_loss: str = "cauchy") -> ScalingFit:
    """Fit L(N) = L∞ + (N₀/N)^α to points ``(n[i], loss[i])`` (see the module docstring).

    Raises :class:`SeqzooError` for fewer than 3 distinct sizes, non-positive or non-finite values, or
    mismatched lengths."""
    from scipy.optimize import least_squares

    n, loss = _points(n, loss)
    log_n, log_loss = np.log(n), np.log(loss)
    l_max = float(loss.min())

    def residuals(p):
        l_inf, log_n0, alpha = p
        reducible = np.exp(np.clip(alpha * (log_n0 - log_n), -700, 700))
        return np.log(l_inf + reducible) - log_loss

    lower = np.array([0.0, log_n.min() - 60.0, 1e-3])
    upper = np.array([l_max, log_n.max() + 60.0, 10.0])
    best = None
    for frac in (0.0, 0.5, 0.9, 0.99):
        l_inf0 = frac * l_max
        for alpha0 in (0.05, 0.3, 1.0, 3.0):
            # start on the curve at the smallest model: l_inf0 + (N0/N_min)^alpha0 = L(N_min)
            gap = max(loss[0] - l_inf0, 1e-3 * loss[0])
            log_n00 = float(np.clip(log_n[0] + math.log(gap) / alpha0, lower[1] + 1, upper[1] - 1))
            start = np.clip(np.array([l_inf0, log_n00, alpha0]), lower + 1e-12, upper - 1e-12)
            try:
                sol = least_squares(residuals, start, bounds=(lower, upper), loss=robust_loss, f_scale=f_scale,
                                    x_scale="jac", max_nfev=4000)
            except (ValueError, FloatingPointError):
                continue
            if np.all(np.isfinite(sol.x)) and (best is None or sol.cost < best.cost):
                best = sol
    if best is None:
        raise SeqzooError("scaling-law fit did not converge from any starting point; check the (N, L) points")
    l_inf, log_n0, alpha = (float(v) for v in best.x)
    r = residuals(best.x)
    dof = n.size - 3
    stderr = {"l_inf": float("inf"), "n0": float("inf"), "alpha": float("inf")}
    if dof > 0:
        jac = best.jac
        s2 = float((r ** 2).sum()) / dof
        try:
            cov = np.linalg.pinv(jac.T @ jac) * s2
            se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
            stderr = {"l_inf": float(se[0]), "n0": float(math.exp(log_n0) * se[1]), "alpha": float(se[2])}
        except np.linalg.LinAlgError:
            pass
    fit = ScalingFit(l_inf=l_inf, n0=math.exp(log_n0), alpha=alpha, stderr=stderr, n_points=int(n.size),
                     cost=float(best.cost))
    fit.r2 = _r2(loss, fit.predict(n))
    fit.rms_log_residual = float(np.sqrt((r ** 2).mean()))
    return fit


def fit_power_law(n, loss) -> ScalingFit:
    """The L∞ = 0 law L = (N₀/N)^α by least squares on log L = α log N₀ − α log N (the comparison fit)."""
    n, loss = _points(n, loss)
    slope, intercept = np.polyfit(np.log(n), np.log(loss), 1)
    alpha = -float(slope)
    if alpha <= 0:
        raise SeqzooError(f"loss does not fall with model size (log-log slope {slope:.3g}); no power law to fit")
    fit = ScalingFit(l_inf=0.0, n0=math.exp(float(intercept) / alpha), alpha=alpha, n_points=int(n.size))
    fit.r2 = _r2(loss, fit.predict(n))
    fit.rms_log_residual = float(np.sqrt(((np.log(fit.predict(n)) - np.log(loss)) ** 2).mean()))
    return fit


# -- arena report helper --------------------------------------------------------------------------------------------

def _size(row: dict) -> float | None:
    metrics = row.get("metrics") or {}
    n = metrics.get("non_embedding_parameters") or row.get("parameters")
    return float(n) if n else None


def _loss(row: dict) -> float | None:
    metrics = row.get("metrics") or {}
    value = metrics.get("loss")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) and value > 0 else None


def find_sweeps(runs: list[dict]) -> dict[tuple, list[tuple[float, float]]]:
    """Model-size sweeps in arena rows: ``{(task, seq_len, mixer): [(N, lowest loss at N), …]}`` for every group
    with at least 3 distinct sizes N (non-embedding parameters when the metrics carry them, else all)."""
    groups: dict[tuple, dict[float, float]] = {}
    for row in runs:
        n, loss = _size(row), _loss(row)
        if n is None or loss is None:
            continue
        best = groups.setdefault((row["task"], row["seq_len"], row["mixer"]), {})
        best[n] = min(best.get(n, float("inf")), loss)
    return {key: sorted(points.items()) for key, points in sorted(groups.items()) if len(points) >= MIN_POINTS}


def sweep_plots(runs: list[dict]) -> list[tuple[str, str]]:
    """(title, base64 PNG) of loss vs parameters with the fitted L(N) for every model-size sweep in ``runs``."""
    sweeps = find_sweeps(runs)
    if not sweeps:
        return []
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    for (task, seq_len, mixer), points in sweeps.items():
        n = np.array([p[0] for p in points])
        loss = np.array([p[1] for p in points])
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(n, loss, "o", label=f"{mixer} (lowest loss per size)")
        try:
            fit = fit_scaling_law(n, loss)
            grid = np.geomspace(n.min(), n.max(), 100)
            ax.plot(grid, fit.predict(grid), "-", label=f"L∞ + (N₀/N)^α, R² {fit.r2:.3f}")
            ax.axhline(fit.l_inf, color="gray", linestyle=":", label=f"L∞ = {fit.l_inf:.3g}")
            caption = (f"L∞ = {fit.l_inf:.3g} ± {fit.stderr['l_inf']:.2g}, α = {fit.alpha:.3g} ± "
                       f"{fit.stderr['alpha']:.2g}, N₀ = {fit.n0:.3g}")
        except SeqzooError as e:
            caption = f"no fit: {e}"
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("parameters N (non-embedding where the run recorded them)")
        ax.set_ylabel("validation loss")
        ax.set_title(f"{task}, T={seq_len}: {caption}", fontsize=8)
        ax.legend(fontsize=7)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        out.append((f"{task} ({mixer}): scaling-law fit", base64.b64encode(buffer.getvalue()).decode("ascii")))
    return out


__all__ = ["MIN_POINTS", "ScalingFit", "find_sweeps", "fit_power_law", "fit_scaling_law", "sweep_plots"]
