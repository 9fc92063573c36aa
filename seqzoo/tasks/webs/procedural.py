"""Procedural 3D web-like graphs, a stand-in for the scanned spider webs of the paper.

Paper: "Modeling and design of heterogeneous hierarchical bioinspired spider web structures using generative deep
learning and additive manufacturing", Lu, Lee and Buehler, PNAS 2023, arXiv 2304.05137. The paper trains on
inductive subgraph samples of laser-scanned 3D webs (``dataset_webs_medium.pt``, not available here, and nothing
downloads at run time). This module writes webs of two families instead; the models and metrics never know the
difference.

**Orb web** with r radii and s capture-spiral turns (a planar web, then tilted in 3D):

    hub ring      h_k     = ρ_h  (cos θ_k, sin θ_k, 0),      θ_k = 2πk/r + jitter,  k = 0..r-1
    spiral node   c_{a,k} = ρ_{a,k} (cos θ_k, sin θ_k, 0),   ρ_h < ρ_{a,k} < ρ_f rising with a·r + k (a spiral)
    frame node    f_k     = ρ_f,k (cos θ_k, sin θ_k, 0)
    edges: hub ring cycle, each radius h_k → c_{0,k} → … → f_k, the spiral c_{0,0} → c_{0,1} → … → c_{s-1,r-1},
           the frame cycle, and 0–2 anchor threads from frame nodes to outside points (degree-1 nodes).

then out-of-plane jitter, a gravity-aware pose (the orb plane stands vertical ± 30°, as orb webs hang; uniform
azimuth) and a global scale U[0.5, 2]. Nodes: r·(s + 2) + anchors; degrees ≤ 4.

**Sheet / cobweb**: N points in an anisotropic box (a flat sheet: height 0.1–0.3 of its width, with hanging
threads below; or a 3D tangle), joined by the Euclidean minimum spanning tree (so the web is one piece) plus the
k nearest neighbours of each node (k ∈ {1, 2, 3}) while both degrees stay ≤ ``MAX_DEGREE``; a sheet is tilted
at most ± 15° from horizontal, both get a uniform azimuth (z is "up" in every web, as in a scan).

Every web is centred at its centroid, has ≤ ``max_nodes`` nodes, degree ≤ 5 (the paper's ``max_neighbors``) and
is generated from ``numpy.random.default_rng(seed)`` only, so a seed fixes the data set.
"""

from __future__ import annotations

import numpy as np

from ...core.errors import SeqzooError
from .graph import WebGraph, make_graph

MAX_DEGREE = 5
KINDS = ("orb", "sheet", "mixed")


def _rot_x(a: float) -> np.ndarray:
    return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


def _rot_z(a: float) -> np.ndarray:
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


def _pose(rng: np.random.Generator, kind: str) -> np.ndarray:
    """Gravity-aware pose (z is up, as in a scanned web): an orb plane stands vertical ± 30°, a sheet lies
    horizontal ± 15°, a tangle is only turned about z; every web gets a uniform azimuth."""
    tilt = {"orb": np.pi / 2 + rng.uniform(-np.pi / 6, np.pi / 6), "sheet": rng.uniform(-np.pi / 12, np.pi / 12),
            "tangle": 0.0}[kind]
    return _rot_z(rng.uniform(0, 2 * np.pi)) @ _rot_x(tilt)


def orb_web(rng: np.random.Generator, max_nodes: int = 32) -> WebGraph:
    """An orb web (hub ring, radii, capture spiral, frame, anchor threads) with at most ``max_nodes`` nodes."""
    options = [(r, s, a) for r in range(3, 9) for s in range(0, 4) for a in range(0, 3) if r * (s + 2) + a <= max_nodes]
    if not options:
        raise SeqzooError(f"an orb web needs max_nodes >= 6, got {max_nodes}")
    r, s, n_anchor = options[rng.integers(len(options))]
    theta = 2 * np.pi * (np.arange(r) + rng.uniform(-0.2, 0.2, r)) / r
    rho_hub, rho_frame = rng.uniform(0.12, 0.3), rng.uniform(0.8, 1.2, r)
    rings = [np.full(r, rho_hub)]
    for a in range(s):                       # a spiral: radius grows with the step a·r + k
        step = (a * r + np.arange(r) + 1) / (s * r + 1)
        rings.append(rho_hub + (rho_frame - rho_hub) * step * rng.uniform(0.9, 1.05, r))
    rings.append(rho_frame)
    rho = np.stack(rings)                    # [s + 2, r]
    pos = np.stack([rho * np.cos(theta), rho * np.sin(theta), rng.normal(0, 0.03, rho.shape)], -1).reshape(-1, 3)
    node = lambda ring, k: ring * r + k      # noqa: E731
    edges = []
    for k in range(r):
        edges.append((node(0, k), node(0, (k + 1) % r)))                     # hub ring
        edges.append((node(s + 1, k), node(s + 1, (k + 1) % r)))             # frame
        edges.extend((node(ring, k), node(ring + 1, k)) for ring in range(s + 1))   # radius
    spiral = [node(1 + a, k) for a in range(s) for k in range(r)]
    edges.extend(zip(spiral[:-1], spiral[1:]))
    extra = []
    for k in rng.choice(r, size=n_anchor, replace=False):
        out = pos[node(s + 1, k)] * rng.uniform(1.3, 1.7) + rng.normal(0, 0.1, 3)
        extra.append(out)
        edges.append((node(s + 1, k), len(pos) + len(extra) - 1))
    if extra:
        pos = np.concatenate([pos, np.array(extra)])
    return _finish(rng, pos, edges, "orb")


def _mst_edges(pos: np.ndarray) -> list[tuple[int, int]]:
    """Euclidean minimum spanning tree (Prim, O(N²))."""
    n = len(pos)
    dist = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    in_tree = np.zeros(n, bool)
    in_tree[0] = True
    best, parent = dist[0].copy(), np.zeros(n, np.int64)
    edges = []
    for _ in range(n - 1):
        masked = np.where(in_tree, np.inf, best)
        j = int(np.argmin(masked))
        edges.append((int(parent[j]), j))
        in_tree[j] = True
        closer = dist[j] < best
        best, parent = np.where(closer, dist[j], best), np.where(closer, j, parent)
    return edges


def sheet_web(rng: np.random.Generator, max_nodes: int = 32, min_nodes: int = 8) -> WebGraph:
    """An irregular sheet web or 3D cobweb: MST + k-nearest-neighbour threads, degree ≤ 5."""
    for _ in range(100):
        n = int(rng.integers(min_nodes, max_nodes + 1))
        sheet_kind = rng.random() < 0.5
        if sheet_kind:               # sheet with hanging threads
            width = rng.uniform(1.0, 2.0, 2)
            height = rng.uniform(0.1, 0.3) * width.mean()
            n_hang = int(rng.integers(0, max(1, n // 5) + 1))
            sheet = rng.uniform(-0.5, 0.5, (n - n_hang, 3)) * np.array([*width, height])
            hang = rng.uniform(-0.5, 0.5, (n_hang, 3)) * np.array([*width, 0.0]) - np.array([0, 0, 1.0]) * \
                rng.uniform(0.4, 1.2, (n_hang, 1))
            pos = np.concatenate([sheet, hang])
        else:                        # tangle
            pos = rng.uniform(-0.5, 0.5, (n, 3)) * rng.uniform(0.8, 2.0, 3)
        edges = _mst_edges(pos)
        degree = np.bincount(np.array(edges).reshape(-1), minlength=n)
        if degree.max() > MAX_DEGREE:
            continue
        k = int(rng.integers(1, 4))
        dist = np.linalg.norm(pos[:, None] - pos[None], axis=-1) + np.eye(n) * 1e9
        have = {tuple(sorted(e)) for e in edges}
        for i in range(n):
            for j in np.argsort(dist[i])[:k]:
                e = tuple(sorted((i, int(j))))
                if e not in have and degree[i] < MAX_DEGREE and degree[j] < MAX_DEGREE:
                    have.add(e)
                    degree[i] += 1
                    degree[j] += 1
        return _finish(rng, pos, sorted(have), "sheet" if sheet_kind else "tangle")
    raise SeqzooError("could not draw a sheet web with degree <= 5 in 100 tries")  # pragma: no cover


def _finish(rng: np.random.Generator, pos: np.ndarray, edges, kind: str) -> WebGraph:
    pos = pos @ _pose(rng, kind).T * rng.uniform(0.5, 2.0)
    pos = pos - pos.mean(0)
    return make_graph(pos, np.array(edges, dtype=np.int64).reshape(-1, 2))


def random_web(rng: np.random.Generator, kind: str = "mixed", max_nodes: int = 32) -> WebGraph:
    if kind not in KINDS:
        raise SeqzooError(f"unknown web kind {kind!r}; valid: {', '.join(KINDS)}")
    if kind == "orb" or (kind == "mixed" and rng.random() < 0.5):
        return orb_web(rng, max_nodes)
    return sheet_web(rng, max_nodes)


def web_dataset(n: int, *, seed: int = 0, kind: str = "mixed", max_nodes: int = 32) -> list[WebGraph]:
    """``n`` procedural webs from one seed (the same seed always gives the same webs)."""
    if not isinstance(max_nodes, int) or max_nodes < 8:
        raise SeqzooError(f"max_nodes must be an int >= 8, got {max_nodes!r}")
    rng = np.random.default_rng(seed)
    return [random_web(rng, kind, max_nodes) for _ in range(n)]


__all__ = ["KINDS", "MAX_DEGREE", "orb_web", "random_web", "sheet_web", "web_dataset"]
