"""Files a user can open: webs as GraphML (read and write), OBJ and PLY (lines, or tubes as a triangle mesh).

Context: "Modeling and design of heterogeneous hierarchical bioinspired spider web structures using generative deep
learning and additive manufacturing", Lu, Lee and Buehler, PNAS 2023, arXiv 2304.05137 — the paper 3D-prints
generated webs; here they are written as files that Blender, MeshLab, ParaView (OBJ/PLY) and networkx / Gephi /
yEd (GraphML) open.

* OBJ lines: ``v x y z`` per node, ``l i j`` per edge (1-based). PLY lines: ASCII PLY with ``vertex`` and
  ``edge`` elements.
* Tubes (``tube_radius > 0``): each edge becomes an open prism of ``sides`` faces around the segment p_i → p_j,
  with ring vertices p + r (cos φ u + sin φ w), (u, w) an orthonormal basis of the plane normal to the edge, plus
  a small octahedron at each node, so the mesh is printable-looking and every fibre is visible.
* GraphML: ``<node id="n0">`` with data keys ``x, y, z`` (double) and ``<edge source target>``; the reader accepts
  any node ids and raises a one-line :class:`SeqzooError` for a malformed file (not XML, no graph, a node without
  coordinates, an edge to an unknown node, a non-numeric coordinate).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from ...core.errors import SeqzooError
from .graph import WebGraph, make_graph

GRAPHML_NS = "http://graphml.graphdrawing.org/xmlns"
FORMATS = ("graphml", "obj", "ply")


def _write_text(path: Path, text: str) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def tube_mesh(graph: WebGraph, radius: float, sides: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """``(vertices [V, 3], triangles [F, 3])`` of a tube around each edge and an octahedron at each node."""
    if radius <= 0 or sides < 3:
        raise SeqzooError(f"tubes need radius > 0 and sides >= 3, got radius={radius}, sides={sides}")
    verts, faces = [], []
    phi = 2 * np.pi * np.arange(sides) / sides
    for a, b in graph.edges.tolist():
        p, q = graph.pos[a], graph.pos[b]
        axis = q - p
        length = np.linalg.norm(axis)
        if length < 1e-12:
            continue
        axis /= length
        helper = np.array([1.0, 0, 0]) if abs(axis[0]) < 0.9 else np.array([0, 1.0, 0])
        u = np.cross(axis, helper)
        u /= np.linalg.norm(u)
        w = np.cross(axis, u)
        ring = radius * (np.cos(phi)[:, None] * u + np.sin(phi)[:, None] * w)
        base = sum(len(v) for v in verts)
        verts.append(np.concatenate([p + ring, q + ring]))
        for k in range(sides):
            k2 = (k + 1) % sides
            faces.append((base + k, base + k2, base + sides + k2))
            faces.append((base + k, base + sides + k2, base + sides + k))
    octa = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float) * radius * 1.5
    octa_faces = [(0, 2, 4), (2, 1, 4), (1, 3, 4), (3, 0, 4), (2, 0, 5), (1, 2, 5), (3, 1, 5), (0, 3, 5)]
    for p in graph.pos:
        base = sum(len(v) for v in verts)
        verts.append(p + octa)
        faces.extend(tuple(base + i for i in f) for f in octa_faces)
    v = np.concatenate(verts) if verts else np.zeros((0, 3))
    return v, np.asarray(faces, np.int64).reshape(-1, 3)


def write_obj(graph: WebGraph, path, tube_radius: float = 0.0, sides: int = 6) -> Path:
    lines = [f"# web graph: {graph.n_nodes} nodes, {graph.n_edges} edges (seqzoo.tasks.webs)"]
    if tube_radius > 0:
        v, f = tube_mesh(graph, tube_radius, sides)
        lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in v]
        lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in f]
    else:
        lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in graph.pos]
        lines += [f"l {a + 1} {b + 1}" for a, b in graph.edges.tolist()]
    return _write_text(path, "\n".join(lines) + "\n")


def write_ply(graph: WebGraph, path, tube_radius: float = 0.0, sides: int = 6) -> Path:
    if tube_radius > 0:
        v, f = tube_mesh(graph, tube_radius, sides)
        head = ["ply", "format ascii 1.0", f"element vertex {len(v)}", "property float x", "property float y",
                "property float z", f"element face {len(f)}", "property list uchar int vertex_indices", "end_header"]
        body = [f"{x:.6f} {y:.6f} {z:.6f}" for x, y, z in v] + [f"3 {a} {b} {c}" for a, b, c in f]
    else:
        head = ["ply", "format ascii 1.0", f"element vertex {graph.n_nodes}", "property float x", "property float y",
                "property float z", f"element edge {graph.n_edges}", "property int vertex1", "property int vertex2",
                "end_header"]
        body = [f"{x:.6f} {y:.6f} {z:.6f}" for x, y, z in graph.pos] + [f"{a} {b}" for a, b in graph.edges.tolist()]
    return _write_text(path, "\n".join(head + body) + "\n")


def write_graphml(graph: WebGraph, path) -> Path:
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', f'<graphml xmlns="{GRAPHML_NS}">']
    lines += [f'  <key id="{c}" for="node" attr.name="{c}" attr.type="double"/>' for c in "xyz"]
    lines.append('  <graph id="web" edgedefault="undirected">')
    for i, p in enumerate(graph.pos):
        lines.append(f'    <node id="n{i}">' + "".join(f'<data key="{c}">{v:.17g}</data>' for c, v in zip("xyz", p))
                     + "</node>")
    lines += [f'    <edge source="n{a}" target="n{b}"/>' for a, b in graph.edges.tolist()]
    lines += ["  </graph>", "</graphml>"]
    return _write_text(path, "\n".join(lines) + "\n")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def read_graphml(path) -> WebGraph:
    """A web from a GraphML file whose nodes carry x, y, z data (by key id or attr.name)."""
    path = Path(path)
    if not path.is_file():
        raise SeqzooError(f"graph file {str(path)!r} does not exist")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise SeqzooError(f"graph file {str(path)!r} is not valid XML ({e}); expected GraphML") from None
    names = {k.get("id"): (k.get("attr.name") or k.get("id")) for k in root.iter() if _local(k.tag) == "key"}
    graph_el = next((el for el in root.iter() if _local(el.tag) == "graph"), None)
    if _local(root.tag) != "graphml" or graph_el is None:
        raise SeqzooError(f"graph file {str(path)!r} has no <graphml><graph> element; expected GraphML")
    ids, pos = {}, []
    for el in graph_el:
        if _local(el.tag) != "node":
            continue
        values = {names.get(d.get("key"), d.get("key")): (d.text or "").strip() for d in el if _local(d.tag) == "data"}
        node_id = el.get("id")
        missing = [c for c in "xyz" if c not in values]
        if node_id is None or missing:
            raise SeqzooError(f"node {node_id!r} in {str(path)!r} lacks " + (f"coordinate {missing[0]}" if missing
                              else "an id") + "; every node needs an id and x, y, z data")
        try:
            pos.append([float(values[c]) for c in "xyz"])
        except ValueError:
            raise SeqzooError(f"node {node_id!r} in {str(path)!r} has a non-numeric coordinate "
                              f"{[values[c] for c in 'xyz']}") from None
        ids[node_id] = len(ids)
    edges = []
    for el in graph_el:
        if _local(el.tag) == "edge":
            s, t = el.get("source"), el.get("target")
            if s not in ids or t not in ids:
                raise SeqzooError(f"edge {s!r} -> {t!r} in {str(path)!r} names an unknown node; edges must join "
                                  "declared node ids")
            if s != t:
                edges.append((ids[s], ids[t]))
    return make_graph(np.asarray(pos, float).reshape(-1, 3), np.asarray(edges, np.int64).reshape(-1, 2))


def export_web(graph: WebGraph, stem, formats=FORMATS, tube_radius: float = 0.0) -> list[Path]:
    """Write ``stem.graphml`` / ``stem.obj`` / ``stem.ply``; returns the paths written."""
    out = []
    for fmt in formats:
        if fmt not in FORMATS:
            raise SeqzooError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
        path = Path(f"{stem}.{fmt}")
        writer = {"graphml": lambda g, p: write_graphml(g, p), "obj": lambda g, p: write_obj(g, p, tube_radius),
                  "ply": lambda g, p: write_ply(g, p, tube_radius)}[fmt]
        out.append(writer(graph, path))
    return out


__all__ = ["FORMATS", "export_web", "read_graphml", "tube_mesh", "write_graphml", "write_obj", "write_ply"]
