"""Assemble many web samples into one larger structure along a helical or parametric target curve.

Paper: "Modeling and design of heterogeneous hierarchical bioinspired spider web structures using generative deep
learning and additive manufacturing", Lu, Lee and Buehler, PNAS 2023, arXiv 2304.05137 (assembly of generated
samples into larger-scale structures following helical and parametric shapes). The paper describes the idea, not
the algorithm in equations; this is our restatement:

1. Sample the curve c(u), u ∈ [0, 1], densely and place K anchor points c_k at equal arc-length spacing Δ.
2. Tile k is web sample k mod S, centred at its centroid, rotated rigidly so that its normal n_k (the
   smallest-variance axis of its nodes) aligns with the curve tangent τ_k = c'(u_k)/‖c'(u_k)‖ (Rodrigues:
   R = I + [v]× + [v]×² (1 − cos θ)/sin²θ, v = n × τ), scaled by σ = ``fill``·Δ / (tile diameter) when
   ``fit=True`` (so neighbouring tiles do not overlap), and translated to c_k.
3. Consecutive tiles are joined by ``links`` fibres between their closest node pairs, so the structure is
   connected whenever each tile is.

A rotation and translation keep every edge length of a tile (σ multiplies all of them by the same factor); the
tests check this, the tile centroids on the curve and the node/edge counts.

Curves: ``helix(radius, pitch, turns)``: c(u) = (r cos 2πTu, r sin 2πTu, p T u); ``circle``; ``line``; and
``parametric(expr_x, expr_y, expr_z)`` with numpy expressions in ``u`` (e.g. ``"sin(2*pi*u)"``), evaluated with
only ``u``, ``pi`` and numpy's elementary functions in scope.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ...core.errors import SeqzooError
from .graph import WebGraph, make_graph

CURVES = ("helix", "circle", "line", "parametric")
_SAFE = {name: getattr(np, name) for name in ("sin", "cos", "tan", "exp", "log", "sqrt", "abs", "sinh", "cosh",
                                              "tanh", "arctan", "arcsin", "arccos")}
_SAFE["pi"] = np.pi


def helix(radius: float = 3.0, pitch: float = 2.0, turns: float = 2.0) -> Callable[[np.ndarray], np.ndarray]:
    return lambda u: np.stack([radius * np.cos(2 * np.pi * turns * u), radius * np.sin(2 * np.pi * turns * u),
                               pitch * turns * u], -1)


def circle(radius: float = 4.0) -> Callable[[np.ndarray], np.ndarray]:
    return lambda u: np.stack([radius * np.cos(2 * np.pi * u), radius * np.sin(2 * np.pi * u), 0 * u], -1)


def line(length: float = 10.0) -> Callable[[np.ndarray], np.ndarray]:
    return lambda u: np.stack([length * u, 0 * u, 0 * u], -1)


def parametric(expr_x: str, expr_y: str, expr_z: str) -> Callable[[np.ndarray], np.ndarray]:
    """A curve from three numpy expressions in ``u`` ∈ [0, 1] (one-line error for a bad expression)."""
    codes = []
    for axis, expr in zip("xyz", (expr_x, expr_y, expr_z)):
        try:
            code = compile(str(expr), f"<curve {axis}>", "eval")
        except SyntaxError:
            raise SeqzooError(f"curve expression for {axis} {expr!r} is not valid; write a numpy expression in u, "
                              "e.g. 'sin(2*pi*u)'") from None
        bad = [n for n in code.co_names if n not in _SAFE and n != "u"]
        if bad:
            raise SeqzooError(f"curve expression for {axis} uses unknown name {bad[0]!r}; valid: u, "
                              f"{', '.join(sorted(_SAFE))}")
        codes.append((axis, expr, code))

    def curve(u: np.ndarray) -> np.ndarray:
        cols = []
        for axis, expr, code in codes:
            try:
                value = eval(code, {"__builtins__": {}}, {**_SAFE, "u": u})  # noqa: S307 (names checked above)
            except Exception as e:  # noqa: BLE001
                raise SeqzooError(f"curve expression for {axis} {expr!r} failed: {e}") from None
            cols.append(np.broadcast_to(np.asarray(value, float), u.shape))
        return np.stack(cols, -1)
    return curve


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotation matrix taking unit vector a to unit vector b (Rodrigues)."""
    v, c = np.cross(a, b), float(np.dot(a, b))
    if np.linalg.norm(v) < 1e-12:
        if c > 0:
            return np.eye(3)
        perp = np.cross(a, [1.0, 0, 0] if abs(a[0]) < 0.9 else [0, 1.0, 0])
        perp /= np.linalg.norm(perp)
        return 2 * np.outer(perp, perp) - np.eye(3)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx * (1 - c) / (np.linalg.norm(v) ** 2)


def tile_normal(graph: WebGraph) -> np.ndarray:
    centred = graph.pos - graph.pos.mean(0)
    if graph.n_nodes < 3:
        return np.array([0.0, 0, 1])
    return np.linalg.eigh(centred.T @ centred)[1][:, 0]


def assemble(samples, curve: Callable[[np.ndarray], np.ndarray], n_tiles: int, *, fit: bool = True,
             fill: float = 0.9, links: int = 2, resolution: int = 2000) -> tuple[WebGraph, list[dict]]:
    """Tile ``samples`` along ``curve``; returns the assembled web and one record per tile (centre, tangent,
    scale, node range)."""
    samples = [s for s in samples if s.n_nodes > 0]
    if not samples:
        raise SeqzooError("assembly needs at least one web sample with nodes")
    if not isinstance(n_tiles, int) or n_tiles < 1:
        raise SeqzooError(f"n_tiles must be a positive int, got {n_tiles!r}")
    u = np.linspace(0.0, 1.0, resolution)
    pts = np.asarray(curve(u), float)
    if pts.shape != (resolution, 3) or not np.isfinite(pts).all():
        raise SeqzooError("the curve must map u in [0, 1] to finite 3D points")
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    if arc[-1] <= 0:
        raise SeqzooError("the curve has zero length; choose a curve that moves")
    spacing = arc[-1] / n_tiles
    targets = (np.arange(n_tiles) + 0.5) * spacing
    all_pos, all_edges, records, offset = [], [], [], 0
    for k, s_arc in enumerate(targets):
        idx = int(np.clip(np.searchsorted(arc, s_arc), 1, resolution - 1))
        w = (s_arc - arc[idx - 1]) / max(arc[idx] - arc[idx - 1], 1e-12)
        centre = pts[idx - 1] + w * (pts[idx] - pts[idx - 1])
        tangent = pts[idx] - pts[idx - 1]
        tangent /= np.linalg.norm(tangent)
        tile = samples[k % len(samples)]
        local = tile.pos - tile.pos.mean(0)
        diameter = 2 * float(np.linalg.norm(local, axis=1).max()) or 1.0
        scale = fill * spacing / diameter if fit else 1.0
        rot = _rotation_between(tile_normal(tile), tangent)
        all_pos.append(centre + scale * local @ rot.T)
        all_edges.append(tile.edges + offset)
        records.append({"tile": k, "sample": k % len(samples), "centre": centre.tolist(),
                        "tangent": tangent.tolist(), "scale": scale, "nodes": [offset, offset + tile.n_nodes]})
        offset += tile.n_nodes
    links_edges = []
    for a, b in zip(records[:-1], records[1:]):
        pa, pb = np.concatenate(all_pos)[slice(*a["nodes"])], np.concatenate(all_pos)[slice(*b["nodes"])]
        dist = np.linalg.norm(pa[:, None] - pb[None], axis=-1)
        for flat in np.argsort(dist, axis=None)[:max(0, links)]:
            i, j = np.unravel_index(flat, dist.shape)
            links_edges.append((a["nodes"][0] + int(i), b["nodes"][0] + int(j)))
    edges = np.concatenate(all_edges + [np.asarray(links_edges, np.int64).reshape(-1, 2)])
    return make_graph(np.concatenate(all_pos), edges), records


def build_curve(name: str, **options) -> Callable[[np.ndarray], np.ndarray]:
    """A named curve with its options (``helix``: radius, pitch, turns; ``circle``: radius; ``line``: length;
    ``parametric``: x, y, z expressions)."""
    makers = {"helix": helix, "circle": circle, "line": line,
              "parametric": lambda x="cos(2*pi*u)", y="sin(2*pi*u)", z="u": parametric(x, y, z)}
    if name not in makers:
        raise SeqzooError(f"unknown curve {name!r}; valid: {', '.join(CURVES)}")
    try:
        return makers[name](**options)
    except TypeError as e:
        raise SeqzooError(f"bad option for curve {name!r}: {e}") from None


__all__ = ["CURVES", "assemble", "build_curve", "circle", "helix", "line", "parametric", "tile_normal"]
