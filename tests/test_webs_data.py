"""Spider-web data: procedural webs, the 14 features, R², and the graph tokenizer's exact round trip."""

import numpy as np
import pytest

from seqzoo.core.errors import SeqzooError
from seqzoo.tasks.webs import (FEATURE_NAMES, WebTokenizer, feature_matrix, make_graph, r2_per_feature, same_graph,
                               web_dataset, web_features)
from seqzoo.tasks.webs.features import check_conditions
from seqzoo.tasks.webs.procedural import orb_web, sheet_web

WEBS = web_dataset(60, seed=3)


def test_procedural_is_seeded_and_bounded():
    again = web_dataset(60, seed=3)
    assert all(same_graph(a, b, 0) for a, b in zip(WEBS, again))
    assert not same_graph(WEBS[0], web_dataset(1, seed=4)[0])
    for g in WEBS:
        assert 6 <= g.n_nodes <= 32 and g.degrees().max() <= 5
        assert g.n_components() == 1                     # orb webs and MST-based sheets are one piece
        assert np.allclose(g.pos.mean(0), 0, atol=1e-9)


def test_orb_web_structure():
    rng = np.random.default_rng(0)
    for _ in range(10):
        g = orb_web(rng, 32)
        deg = g.degrees()
        assert deg.max() <= 4 and (deg >= 1).all()
        assert (deg == 1).sum() <= 2                     # only anchor threads end in a leaf
        flat = np.linalg.eigvalsh(np.cov(g.pos.T))
        assert flat[0] < 0.05 * flat[2]                  # an orb web is nearly planar
    g = sheet_web(np.random.default_rng(1), 20)
    assert g.n_nodes <= 20 and g.n_edges >= g.n_nodes - 1


def test_features_of_a_known_graph():
    # unit square in the z = 0 plane plus one pendant node above corner 0
    pos = [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 2]]
    g = make_graph(pos, [[0, 1], [1, 2], [2, 3], [3, 0], [0, 4]])
    f = dict(zip(FEATURE_NAMES, web_features(g)))
    assert f["n_nodes"] == 5 and f["n_edges"] == 5 and f["mean_degree"] == 2.0 and f["max_degree"] == 3
    assert f["mean_edge_length"] == pytest.approx(6 / 5) and f["total_edge_length"] == pytest.approx(6.0)
    assert f["std_edge_length"] == pytest.approx(np.std([1, 1, 1, 1, 2]))
    assert (f["extent_x"], f["extent_y"], f["extent_z"]) == (1, 1, 2)
    assert f["leaf_fraction"] == pytest.approx(0.2)
    assert web_features(make_graph(np.zeros((0, 3)), [])).tolist() == [0.0] * 14


def test_flatness_and_normal_see_orientation():
    rng = np.random.default_rng(0)
    sheet = make_graph(rng.uniform(-1, 1, (40, 3)) * [1, 1, 0.001], [])
    wall = make_graph(rng.uniform(-1, 1, (40, 3)) * [1, 0.001, 1], [])
    fs, fw = dict(zip(FEATURE_NAMES, web_features(sheet))), dict(zip(FEATURE_NAMES, web_features(wall)))
    assert fs["flatness"] < 0.01 and fs["normal_z"] > 0.99 and fw["normal_z"] < 0.01


def test_r2():
    y = np.array([[1.0], [2.0], [3.0]])
    assert r2_per_feature(y, y)[0] == 1.0
    assert r2_per_feature(y, np.full_like(y, 2.0))[0] == pytest.approx(0.0)      # the mean scores 0
    assert r2_per_feature(y, y[::-1])[0] < 0
    assert np.isnan(r2_per_feature(np.ones((3, 1)), y)[0])


def test_condition_validation():
    with pytest.raises(SeqzooError, match="14 features"):
        check_conditions(np.zeros((2, 13)))
    with pytest.raises(SeqzooError, match="NaN"):
        check_conditions(np.full(14, np.nan))


@pytest.mark.parametrize("variant", ["full", "sparse"])
@pytest.mark.parametrize("order", ["bfs", "z"])
def test_tokenizer_round_trip_is_exact(variant, order):
    tok = WebTokenizer(32, variant, order=order)
    tokens = tok.encode_batch(WEBS)
    assert tokens.shape == (60, 32, tok.token_dim)
    for g, t in zip(WEBS, tokens):
        back = tok.decode(t)
        assert same_graph(back, tok.canonical(g), atol=1e-12)
        assert np.allclose(web_features(back), web_features(g))      # features are order-free
        assert (t[g.n_nodes:, 0] == -1).all() and (t[:g.n_nodes, 0] == 1).all()


def test_canonical_order_ignores_input_numbering():
    tok = WebTokenizer(32, "full")
    rng = np.random.default_rng(0)
    for g in WEBS[:10]:
        shuffled = g.permuted(rng.permutation(g.n_nodes))
        assert np.array_equal(tok.encode(g), tok.encode(shuffled))
    # the two orders are different orders
    bfs, z = WebTokenizer(32, "full", order="bfs"), WebTokenizer(32, "full", order="z")
    assert any(not np.array_equal(bfs.encode(g), z.encode(g)) for g in WEBS[:10])


def test_decode_of_noisy_outputs_thresholds_and_caps_degree():
    tok = WebTokenizer(8, "full", max_degree=2)
    t = np.full((8, tok.token_dim), -0.9)
    t[:4, 0] = 0.7                                  # four nodes, the rest padding
    t[:4, 1:4] = np.arange(12).reshape(4, 3) / 10
    t[:4, 4:8] = 0.4                                 # node 0..3 all "connected", weakly
    t[0, 4 + 1] = t[1, 4 + 0] = 0.9                  # the strongest edge
    g = tok.decode(t)
    assert g.n_nodes == 4 and (0, 1) in g.edge_set() and g.degrees().max() <= 2
    sparse = WebTokenizer(8, "sparse")
    s = np.full((8, sparse.token_dim), -1.0)
    s[:2, 0] = 1
    s[0, 4] = 2 * 2 / 8 - 1 + 0.05                   # neighbour index 1, slightly off
    assert sparse.decode(s).edge_set() == {(0, 1)}


def test_tokenizer_errors():
    tok = WebTokenizer(8, "sparse", max_neighbors=2)
    with pytest.raises(SeqzooError, match="max_nodes=8"):
        tok.encode(WEBS[0] if WEBS[0].n_nodes > 8 else next(g for g in WEBS if g.n_nodes > 8))
    star = make_graph(np.random.default_rng(0).normal(size=(4, 3)), [[0, 1], [0, 2], [0, 3]])
    with pytest.raises(SeqzooError, match="max_neighbors=2"):
        tok.encode(star)
    with pytest.raises(SeqzooError, match="shape"):
        tok.decode(np.zeros((8, 3)))
    with pytest.raises(SeqzooError, match="variant"):
        WebTokenizer(8, "dense")
    with pytest.raises(SeqzooError, match="order"):
        WebTokenizer(8, order="random")


def test_make_graph_errors():
    with pytest.raises(SeqzooError, match=r"\[N, 3\]"):
        make_graph(np.zeros((3, 2)), [])
    with pytest.raises(SeqzooError, match="out of range"):
        make_graph(np.zeros((3, 3)), [[0, 3]])
    with pytest.raises(SeqzooError, match="self loop"):
        make_graph(np.zeros((3, 3)), [[1, 1]])
    with pytest.raises(SeqzooError, match="finite"):
        make_graph(np.full((2, 3), np.inf), [])
    g = make_graph(np.zeros((3, 3)), [[1, 0], [0, 1], [2, 1]])
    assert g.edge_set() == {(0, 1), (1, 2)}


def test_feature_matrix_shape():
    assert feature_matrix(WEBS).shape == (60, 14)
