"""A 3D web graph: node positions and undirected edges, validated on construction.

Used by every part of the spider-web package (``seqzoo.tasks.webs``), which follows "Modeling and design of
heterogeneous hierarchical bioinspired spider web structures using generative deep learning and additive
manufacturing", Lu, Lee and Buehler, PNAS 2023, arXiv 2304.05137.

A web is G = (P, E): positions P ∈ ℝ^{N×3} (float64) and an edge set E ⊂ {(i, j): 0 ≤ i < j < N}, stored as a
sorted ``[E, 2]`` int64 array without duplicates or self loops (fibres are undirected).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...core.errors import SeqzooError


@dataclass(frozen=True)
class WebGraph:
    pos: np.ndarray     # [N, 3] float64
    edges: np.ndarray   # [E, 2] int64, i < j, sorted, unique

    @property
    def n_nodes(self) -> int:
        return int(self.pos.shape[0])

    @property
    def n_edges(self) -> int:
        return int(self.edges.shape[0])

    def degrees(self) -> np.ndarray:
        return np.bincount(self.edges.reshape(-1), minlength=self.n_nodes).astype(np.int64)

    def edge_lengths(self) -> np.ndarray:
        if self.n_edges == 0:
            return np.zeros(0)
        return np.linalg.norm(self.pos[self.edges[:, 0]] - self.pos[self.edges[:, 1]], axis=1)

    def neighbours(self) -> list[list[int]]:
        nbrs: list[list[int]] = [[] for _ in range(self.n_nodes)]
        for i, j in self.edges.tolist():
            nbrs[i].append(j)
            nbrs[j].append(i)
        return [sorted(n) for n in nbrs]

    def edge_set(self) -> set[tuple[int, int]]:
        return {(int(i), int(j)) for i, j in self.edges}

    def permuted(self, perm) -> "WebGraph":
        """The same web with node ``perm[k]`` renamed ``k``."""
        perm = np.asarray(perm, dtype=np.int64)
        inverse = np.empty_like(perm)
        inverse[perm] = np.arange(len(perm))
        return make_graph(self.pos[perm], inverse[self.edges] if self.n_edges else self.edges)

    def n_components(self) -> int:
        parent = list(range(self.n_nodes))

        def find(a: int) -> int:
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a
        for i, j in self.edges.tolist():
            parent[find(i)] = find(j)
        return len({find(a) for a in range(self.n_nodes)})


def make_graph(pos, edges) -> WebGraph:
    """Validate and canonicalise ``pos [N, 3]`` and ``edges [E, 2]`` (any orientation, duplicates merged).

    Raises :class:`SeqzooError` for a wrong shape, a non-finite coordinate, an index outside ``0..N-1`` or a self
    loop.
    """
    pos = np.asarray(pos, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise SeqzooError(f"web node positions must have shape [N, 3], got {list(pos.shape)}")
    if not np.isfinite(pos).all():
        raise SeqzooError("web node positions must be finite numbers; found NaN or inf")
    edges = np.asarray(edges, dtype=np.float64 if np.asarray(edges).dtype.kind == "f" else np.int64)
    if edges.size == 0:
        edges = np.zeros((0, 2), dtype=np.int64)
    if edges.ndim != 2 or edges.shape[1] != 2:
        raise SeqzooError(f"web edges must have shape [E, 2] (pairs of node indices), got {list(edges.shape)}")
    if edges.dtype.kind == "f":
        if not np.all(edges == np.round(edges)):
            raise SeqzooError("web edge endpoints must be integer node indices")
        edges = edges.astype(np.int64)
    n = pos.shape[0]
    if edges.size and (edges.min() < 0 or edges.max() >= n):
        raise SeqzooError(f"web edge endpoint {int(edges.min() if edges.min() < 0 else edges.max())} is out of "
                          f"range; valid node indices are 0..{n - 1}")
    if edges.size and np.any(edges[:, 0] == edges[:, 1]):
        raise SeqzooError(f"web edge ({int(edges[edges[:, 0] == edges[:, 1]][0, 0])}, same) is a self loop; "
                          "edges must join two different nodes")
    edges = np.sort(edges, axis=1)
    edges = np.unique(edges, axis=0) if edges.size else edges
    return WebGraph(pos.copy(), edges.astype(np.int64).reshape(-1, 2))


def same_graph(a: WebGraph, b: WebGraph, atol: float = 1e-6) -> bool:
    """Same node count, same edge set and positions within ``atol`` (node names must match)."""
    return (a.n_nodes == b.n_nodes and a.edge_set() == b.edge_set()
            and bool(np.allclose(a.pos, b.pos, atol=atol, rtol=0)))


__all__ = ["WebGraph", "make_graph", "same_graph"]
