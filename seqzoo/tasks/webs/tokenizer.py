"""Graph tokenizer: a web as a fixed-length sequence of continuous node tokens, and back, exactly.

Paper: "Modeling and design of heterogeneous hierarchical bioinspired spider web structures using generative deep
learning and additive manufacturing", Lu, Lee and Buehler, PNAS 2023, arXiv 2304.05137 (graph representation,
their Fig. S2; the ``max_length = 32`` / ``max_neighbors = 5`` settings of the official repository).

Canonical node order π (so a web has one sequence whatever its input numbering):

* ``order="bfs"`` (default): start at the node with the smallest (z, y, x); breadth-first search, visiting the
  neighbours of each node in increasing (z, y, x); a further component starts at its smallest remaining node.
* ``order="z"``: sort all nodes by (z, y, x).

Token k (k = 0..M−1, M = ``max_nodes``) describes node π(k) (rows k ≥ N are padding):

    t_k = [ e_k,  x_k/s, y_k/s, z_k/s,  a_k ]      e_k = +1 for a node, −1 for padding; s = ``coord_scale``

* ``variant="full"``: a_k ∈ {−1, +1}^M is row k of the adjacency matrix (+1 = edge), so t_k ∈ ℝ^{4+M}.
* ``variant="sparse"``: a_k ∈ [−1, 1]^K lists the K = ``max_neighbors`` neighbour indices of node k in
  increasing order, slot value 2·(j+1)/M − 1 for neighbour j and −1 for an empty slot; t_k ∈ ℝ^{4+K}.

Decoding (also of model outputs, which are not exactly ±1): the nodes are the rows with e_k > 0; the full variant
scores A = (R + Rᵀ)/2 and keeps an edge where A_ij > 0, strongest first, while both degrees stay ≤ ``max_degree``;
the sparse variant rounds each slot to j = round((v + 1)·M/2) − 1 and keeps the valid indices, symmetrised.
``decode(encode(G))`` equals G after canonical renaming (positions to float rounding), which the tests check.
"""

from __future__ import annotations

import numpy as np

from ...core.errors import SeqzooError
from .graph import WebGraph, make_graph

VARIANTS = ("full", "sparse")
ORDERS = ("bfs", "z")


class WebTokenizer:
    def __init__(self, max_nodes: int = 32, variant: str = "full", *, max_neighbors: int = 5,
                 coord_scale: float = 2.5, order: str = "bfs", max_degree: int | None = 5):
        if variant not in VARIANTS:
            raise SeqzooError(f"unknown tokenizer variant {variant!r}; valid: {', '.join(VARIANTS)}")
        if order not in ORDERS:
            raise SeqzooError(f"unknown node order {order!r}; valid: {', '.join(ORDERS)}")
        if not isinstance(max_nodes, int) or max_nodes < 2:
            raise SeqzooError(f"max_nodes must be an int >= 2, got {max_nodes!r}")
        if not coord_scale > 0:
            raise SeqzooError(f"coord_scale must be positive, got {coord_scale!r}")
        self.max_nodes, self.variant, self.order = max_nodes, variant, order
        self.max_neighbors, self.coord_scale, self.max_degree = max_neighbors, float(coord_scale), max_degree

    @property
    def token_dim(self) -> int:
        return 4 + (self.max_nodes if self.variant == "full" else self.max_neighbors)

    def config(self) -> dict:
        return {"max_nodes": self.max_nodes, "variant": self.variant, "max_neighbors": self.max_neighbors,
                "coord_scale": self.coord_scale, "order": self.order, "max_degree": self.max_degree}

    # -- order ---------------------------------------------------------------------------------------------------
    def canonical_order(self, graph: WebGraph) -> np.ndarray:
        """Node indices in canonical order (``perm[k]`` is the node that becomes node k)."""
        n = graph.n_nodes
        key = np.lexsort((graph.pos[:, 0], graph.pos[:, 1], graph.pos[:, 2]))   # by z, then y, then x
        if self.order == "z":
            return key.astype(np.int64)
        rank = np.empty(n, np.int64)
        rank[key] = np.arange(n)
        nbrs = [sorted(ns, key=lambda j: rank[j]) for ns in graph.neighbours()]
        seen, out = np.zeros(n, bool), []
        for root in key:
            if seen[root]:
                continue
            seen[root] = True
            queue = [int(root)]
            while queue:
                node = queue.pop(0)
                out.append(node)
                for j in nbrs[node]:
                    if not seen[j]:
                        seen[j] = True
                        queue.append(j)
        return np.asarray(out, np.int64)

    def canonical(self, graph: WebGraph) -> WebGraph:
        return graph.permuted(self.canonical_order(graph))

    # -- encode / decode ------------------------------------------------------------------------------------------
    def encode(self, graph: WebGraph) -> np.ndarray:
        """``[max_nodes, token_dim]`` float64 tokens of ``graph`` (one-line error if it does not fit)."""
        n, m = graph.n_nodes, self.max_nodes
        if n > m:
            raise SeqzooError(f"the web has {n} nodes; this tokenizer holds at most max_nodes={m}")
        g = self.canonical(graph)
        deg = g.degrees()
        if self.variant == "sparse" and n and deg.max() > self.max_neighbors:
            raise SeqzooError(f"a node has degree {int(deg.max())}; the sparse tokenizer stores at most "
                              f"max_neighbors={self.max_neighbors} (use variant='full' or a larger max_neighbors)")
        tokens = np.full((m, self.token_dim), -1.0)
        tokens[:, 1:4] = 0.0
        tokens[:n, 0] = 1.0
        tokens[:n, 1:4] = g.pos / self.coord_scale
        if self.variant == "full":
            for i, j in g.edges.tolist():
                tokens[i, 4 + j] = tokens[j, 4 + i] = 1.0
        else:
            for i, ns in enumerate(g.neighbours()):
                tokens[i, 4:4 + len(ns)] = 2.0 * (np.asarray(ns) + 1) / m - 1.0
        return tokens

    def encode_batch(self, graphs) -> np.ndarray:
        return np.stack([self.encode(g) for g in graphs]) if len(graphs) else np.zeros((0, self.max_nodes,
                                                                                         self.token_dim))

    def decode(self, tokens) -> WebGraph:
        """A web from ``[max_nodes, token_dim]`` tokens (exact data or model outputs)."""
        t = np.asarray(tokens, dtype=np.float64)
        if t.shape != (self.max_nodes, self.token_dim):
            raise SeqzooError(f"tokens must have shape [{self.max_nodes}, {self.token_dim}] for this "
                              f"{self.variant} tokenizer, got {list(t.shape)}")
        if not np.isfinite(t).all():
            raise SeqzooError("tokens hold NaN or inf; cannot decode a web")
        keep = np.flatnonzero(t[:, 0] > 0)
        new_index = -np.ones(self.max_nodes, np.int64)
        new_index[keep] = np.arange(len(keep))
        pos = t[keep, 1:4] * self.coord_scale
        if self.variant == "full":
            rows = t[keep][:, 4 + keep] if len(keep) else np.zeros((0, 0))
            score = (rows + rows.T) / 2
            i, j = np.triu_indices(len(keep), 1)
            cand = np.flatnonzero(score[i, j] > 0)
            cand = cand[np.argsort(-score[i, j][cand], kind="stable")]
            deg, edges = np.zeros(len(keep), np.int64), []
            for c in cand:
                a, b = i[c], j[c]
                if self.max_degree is None or (deg[a] < self.max_degree and deg[b] < self.max_degree):
                    edges.append((a, b))
                    deg[a] += 1
                    deg[b] += 1
        else:
            slots = np.rint((t[keep, 4:] + 1.0) * self.max_nodes / 2.0).astype(np.int64) - 1
            edges = []
            for row, ns in enumerate(slots):
                for j in ns:
                    if 0 <= j < self.max_nodes and new_index[j] >= 0 and new_index[j] != row:
                        edges.append((row, int(new_index[j])))
        return make_graph(pos.reshape(-1, 3), np.array(edges, dtype=np.int64).reshape(-1, 2))

    def decode_batch(self, tokens) -> list[WebGraph]:
        return [self.decode(t) for t in np.asarray(tokens)]


__all__ = ["ORDERS", "VARIANTS", "WebTokenizer"]
