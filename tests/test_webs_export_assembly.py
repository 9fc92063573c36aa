"""Spider-web files and assembly: GraphML round trip and malformed files, OBJ/PLY lines and tubes, PNG rendering,
tiling along helical / parametric curves."""

import numpy as np
import pytest

from seqzoo.core.errors import SeqzooError
from seqzoo.tasks.webs import assemble, build_curve, make_graph, read_graphml, same_graph, web_dataset, write_graphml, \
    write_obj, write_ply
from seqzoo.tasks.webs.assembly import tile_normal
from seqzoo.tasks.webs.export import tube_mesh
from seqzoo.tasks.webs.plots import render_webs

WEBS = web_dataset(4, seed=7, max_nodes=16)


def test_graphml_round_trip(tmp_path):
    for k, g in enumerate(WEBS):
        path = write_graphml(g, tmp_path / f"w{k}.graphml")
        assert same_graph(read_graphml(path), g, atol=0)       # %.17g keeps every bit


@pytest.mark.parametrize("text, match", [
    ("not xml at all <", "not valid XML"),
    ("<root/>", "no <graphml><graph>"),
    ('<graphml><graph><node id="a"><data key="x">1</data></node></graph></graphml>', "lacks coordinate y"),
    ('<graphml><graph><node id="a"><data key="x">1</data><data key="y">q</data><data key="z">0</data></node>'
     '</graph></graphml>', "non-numeric"),
    ('<graphml><graph><node id="a"><data key="x">1</data><data key="y">1</data><data key="z">0</data></node>'
     '<edge source="a" target="b"/></graph></graphml>', "unknown node"),
])
def test_malformed_graphml_is_a_one_line_error(tmp_path, text, match):
    path = tmp_path / "bad.graphml"
    path.write_text(text)
    with pytest.raises(SeqzooError, match=match) as info:
        read_graphml(path)
    assert "\n" not in str(info.value)
    with pytest.raises(SeqzooError, match="does not exist"):
        read_graphml(tmp_path / "missing.graphml")


def test_graphml_with_named_keys(tmp_path):
    path = tmp_path / "named.graphml"
    path.write_text('<graphml xmlns="http://graphml.graphdrawing.org/xmlns"><key id="d0" for="node" attr.name="x"/>'
                    '<key id="d1" for="node" attr.name="y"/><key id="d2" for="node" attr.name="z"/><graph>'
                    '<node id="p"><data key="d0">0</data><data key="d1">0</data><data key="d2">0</data></node>'
                    '<node id="q"><data key="d0">3</data><data key="d1">4</data><data key="d2">0</data></node>'
                    '<edge source="q" target="p"/></graph></graphml>')
    g = read_graphml(path)
    assert g.edge_set() == {(0, 1)} and g.edge_lengths()[0] == 5.0


def test_obj_and_ply_lines(tmp_path):
    g = WEBS[0]
    obj = write_obj(g, tmp_path / "w.obj").read_text().splitlines()
    assert sum(line.startswith("v ") for line in obj) == g.n_nodes
    assert sum(line.startswith("l ") for line in obj) == g.n_edges
    ply = write_ply(g, tmp_path / "w.ply").read_text().splitlines()
    assert f"element vertex {g.n_nodes}" in ply and f"element edge {g.n_edges}" in ply
    assert len(ply) == ply.index("end_header") + 1 + g.n_nodes + g.n_edges


def test_tubes_surround_each_edge(tmp_path):
    g = make_graph([[0, 0, 0], [0, 0, 2.0]], [[0, 1]])
    verts, faces = tube_mesh(g, 0.1, sides=8)
    ring = verts[:16]
    assert np.allclose(np.hypot(ring[:, 0], ring[:, 1]), 0.1)          # on a cylinder of radius 0.1 about z
    assert faces.max() < len(verts) and len(faces) == 2 * 8 + 2 * 8    # 16 side triangles + 2 octahedra
    text = write_obj(g, tmp_path / "t.obj", tube_radius=0.1, sides=8).read_text()
    assert text.count("\nf ") == len(faces)
    assert f"element face {len(faces)}" in write_ply(g, tmp_path / "t.ply", tube_radius=0.1, sides=8).read_text()
    with pytest.raises(SeqzooError, match="radius"):
        tube_mesh(g, 0.0)


def test_render_png(tmp_path):
    path = render_webs(WEBS, tmp_path / "webs.png", titles=["a", "b", "c", "d"])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("curve", ["helix", "parametric"])
def test_assembly_keeps_tiles_rigid_and_on_the_curve(curve):
    c = build_curve("helix", radius=3.0, pitch=2.0, turns=1.5) if curve == "helix" else \
        build_curve("parametric", x="4*cos(2*pi*u)", y="2*sin(4*pi*u)", z="3*u")
    web, records = assemble(WEBS, c, 9, links=2)
    assert web.n_nodes == sum(WEBS[k % 4].n_nodes for k in range(9))
    assert web.n_edges == sum(WEBS[k % 4].n_edges for k in range(9)) + 2 * 8
    assert web.n_components() == 1
    u = np.linspace(0, 1, 20001)
    dense = c(u)
    for rec in records:
        tile, (lo, hi) = WEBS[rec["sample"]], rec["nodes"]
        part = make_graph(web.pos[lo:hi], tile.edges)
        assert np.allclose(part.edge_lengths(), rec["scale"] * tile.edge_lengths())   # rigid motion + one scale
        assert np.allclose(part.pos.mean(0), rec["centre"])
        assert np.linalg.norm(dense - np.asarray(rec["centre"]), axis=1).min() < 1e-2    # centre lies on the curve
        assert abs(abs(np.dot(tile_normal(part), rec["tangent"])) - 1) < 1e-6             # normal along tangent


def test_assembly_errors():
    with pytest.raises(SeqzooError, match="unknown curve"):
        build_curve("spiral")
    with pytest.raises(SeqzooError, match="unknown name 'open'"):
        build_curve("parametric", x="open('f')", y="u", z="u")
    with pytest.raises(SeqzooError, match="not valid"):
        build_curve("parametric", x="u +", y="u", z="u")
    with pytest.raises(SeqzooError, match="zero length"):
        assemble(WEBS, build_curve("parametric", x="0*u", y="0*u", z="0*u"), 3)
    with pytest.raises(SeqzooError, match="at least one"):
        assemble([], build_curve("helix"), 3)
