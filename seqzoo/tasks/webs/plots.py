"""PNG pictures of webs (matplotlib 3D, Agg backend) and of target-vs-realised design features.

For "Modeling and design of heterogeneous hierarchical bioinspired spider web structures using generative deep
learning and additive manufacturing", Lu, Lee and Buehler, PNAS 2023, arXiv 2304.05137 (their Figs. 3–5 show
generated webs in 3D and target-vs-generated scatter plots of the conditioning features).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .graph import WebGraph


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _draw(ax, graph: WebGraph, color="tab:blue") -> None:
    for a, b in graph.edges.tolist():
        seg = graph.pos[[a, b]]
        ax.plot(seg[:, 0], seg[:, 1], seg[:, 2], color=color, lw=0.9)
    if graph.n_nodes:
        ax.scatter(*graph.pos.T, s=6, color="k", depthshade=False)
        lo, hi = graph.pos.min(0), graph.pos.max(0)
        mid, half = (lo + hi) / 2, max(float((hi - lo).max()) / 2, 1e-3)
        for setter, m in zip((ax.set_xlim, ax.set_ylim, ax.set_zlim), mid):
            setter(m - half, m + half)
    ax.set_xticks([]), ax.set_yticks([]), ax.set_zticks([])


def render_webs(graphs, path, titles=None, cols: int = 4, size: float = 3.0) -> Path:
    """A grid of 3D renderings of ``graphs`` written to the PNG ``path``."""
    plt = _pyplot()
    graphs = list(graphs)
    cols = max(1, min(cols, len(graphs) or 1))
    rows = max(1, math.ceil(len(graphs) / cols))
    fig = plt.figure(figsize=(size * cols, size * rows))
    for k, g in enumerate(graphs):
        ax = fig.add_subplot(rows, cols, k + 1, projection="3d")
        _draw(ax, g)
        if titles is not None:
            ax.set_title(str(titles[k]), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def plot_targets(target: np.ndarray, realised: dict, names, path, r2: dict | None = None) -> Path:
    """Scatter of target vs realised feature for each feature (one panel) and each generator (one colour)."""
    plt = _pyplot()
    cols = 5
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.8 * rows), squeeze=False)
    for f, name in enumerate(names):
        ax = axes[f // cols, f % cols]
        lo, hi = float(target[:, f].min()), float(target[:, f].max())
        ax.plot([lo, hi], [lo, hi], color="0.5", lw=0.8)
        for label, values in realised.items():
            r = f" R²={r2[label][f]:.2f}" if r2 else ""
            ax.scatter(target[:, f], values[:, f], s=4, alpha=0.5, label=f"{label}{r}")
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=5)
    for k in range(len(names), rows * cols):
        axes[k // cols, k % cols].axis("off")
    fig.supxlabel("design target")
    fig.supylabel("feature of the generated web")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


__all__ = ["plot_targets", "render_webs"]
