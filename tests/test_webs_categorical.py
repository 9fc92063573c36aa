"""The categorical neighbour head (generator ``transformer-cat``): causality, the parent-edge guarantee,
loss/decoding consistency, generation = teacher forcing on its own output, and that the old generators are
unchanged."""

import numpy as np
import pytest
import torch

from seqzoo.core.errors import SeqzooError
from seqzoo.models.webs import GraphWebCatTransformer, build_generator, load_generator, save_generator, \
    train_generator
from seqzoo.models.webs.categorical import MASKED, adjacency_loss, causal_adjacency, choose_edges, parent_targets
from seqzoo.tasks.webs import FeatureScaler, WebTokenizer, feature_matrix, web_dataset

M = 12
WEBS = web_dataset(24, seed=5, max_nodes=M)
TOK = WebTokenizer(M, "full")
SCALER = FeatureScaler.fit(feature_matrix(WEBS))


def _batch(n=3, dtype=torch.float64):
    tokens = torch.as_tensor(TOK.encode_batch(WEBS[:n]), dtype=dtype)
    cond = torch.randn(n, 14, dtype=dtype, generator=torch.Generator().manual_seed(0))
    return tokens, cond


def _model(flag_bias=None, **kw):
    torch.manual_seed(0)
    model = GraphWebCatTransformer(TOK.token_dim, M, 14, d_model=16, n_layers=2, n_heads=2, **kw).double().eval()
    if flag_bias is not None:      # an untrained model emits no nodes; make it emit (mostly) nodes instead
        with torch.no_grad():
            model.out.bias[0] = flag_bias
    return model


@pytest.mark.parametrize("j", [1, 4, 10])
def test_causality(j):
    model = _model()
    tokens, cond = _batch()
    base = model(tokens, cond)
    moved = tokens.clone()
    moved[:, j] += torch.randn(moved[:, j].shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    after = model(moved, cond)
    assert torch.equal(base[:, :j], after[:, :j])                 # earlier outputs: bitwise unchanged
    assert torch.equal(base[:, j, :4], after[:, j, :4])           # output j's flag/xyz read tokens < j only
    assert not torch.equal(base[:, j + 1:], after[:, j + 1:])     # later outputs do read token j
    # token j's own adjacency entries (its decisions at step j) do not feed back into output j
    adj_only = tokens.clone()
    adj_only[:, j, 4:] = -adj_only[:, j, 4:]
    assert torch.equal(base[:, :j + 1], model(adj_only, cond)[:, :j + 1])


def test_later_decisions_never_leak():
    """Entries (k, j ≥ k) of the symmetric tokens are edges decided at a later step: they change nothing."""
    model = _model()
    tokens, cond = _batch()
    upper = torch.triu(torch.ones(M, M, dtype=torch.bool))        # j >= k
    flipped = tokens.clone()
    flipped[..., 4:] = torch.where(upper, -tokens[..., 4:], tokens[..., 4:])
    assert torch.equal(model(tokens, cond), model(flipped, cond))
    assert torch.equal(causal_adjacency(tokens), causal_adjacency(flipped))
    out = model(tokens, cond)
    assert (out[..., 4:][..., torch.cat([upper, upper], -1)] == MASKED).all()


def test_parent_targets_are_the_bfs_parents():
    tokens, _ = _batch(8)
    parent, has = parent_targets(tokens)
    for b, web in enumerate(WEBS[:8]):
        g = TOK.canonical(web)
        nbrs = g.neighbours()
        for k in range(M):
            if k == 0 or k >= g.n_nodes:
                assert not has[b, k]
            else:                                   # one component: every node k >= 1 has an earlier neighbour
                assert has[b, k] and int(parent[b, k]) == min(j for j in nbrs[k] if j < k)


def _oracle_logits(tokens, big=30.0):
    parent, has = parent_targets(tokens)
    b, t = tokens.shape[:2]
    earlier = torch.arange(M)[None, :] < torch.arange(t)[:, None]
    par = torch.full((b, t, M), -big, dtype=tokens.dtype)
    par.scatter_(2, parent[..., None], big)
    par = par.masked_fill(~earlier, MASKED)
    ext = torch.where(tokens[..., 4:] > 0, big, -big).masked_fill(~earlier, MASKED)
    return par, ext


def test_loss_and_decoding_agree_on_the_data():
    """Logits that put all mass on the data give ≈ 0 loss, and the decoding rule rebuilds exactly the data's
    earlier-neighbour rows (and so the web); logits on a wrong parent cost more."""
    tokens, _ = _batch(8)
    par, ext = _oracle_logits(tokens)
    ce, bce = adjacency_loss(par, ext, tokens)
    assert float(ce) < 1e-10 and float(bce) < 1e-10
    wrong = par.clone()
    wrong[:, 2, :] = torch.where(wrong[:, 2, :] == MASKED, wrong[:, 2, :], -wrong[:, 2, :])
    assert float(adjacency_loss(wrong, ext, tokens)[0]) > float(ce) + 1.0
    for b, web in enumerate(WEBS[:8]):
        n = web.n_nodes
        degree = torch.zeros(1, M, dtype=torch.long)
        rows = torch.zeros(M, M, dtype=torch.bool)
        for k in range(n):
            row, degree = choose_edges(par[b:b + 1, k], ext[b:b + 1, k], degree, k, TOK.max_degree)
            degree[0, k] += int(row.sum())
            rows[k] = row[0]
        truth = causal_adjacency(tokens[b:b + 1])[0, :, 4:] > 0
        assert torch.equal(rows, truth)
        out = tokens[b].clone()
        out[:, 4:] = torch.where(rows | rows.T, 1.0, -1.0)
        assert TOK.decode(out.numpy()).edge_set() == TOK.canonical(web).edge_set()


@pytest.mark.parametrize("max_degree", [None, 5])
def test_every_generated_node_has_an_earlier_edge(max_degree):
    model = _model(flag_bias=2.0, max_degree=max_degree)
    cond = torch.randn(6, 14, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    sizes = []
    for temperature in (0.0, 1.0):
        out = model.generate(cond, temperature=temperature, generator=torch.Generator().manual_seed(0))
        sizes += (out[..., 0] > 0).sum(1).tolist()
        for b in range(out.shape[0]):
            nodes = (out[b, :, 0] > 0).numpy()
            n = int(nodes.sum())
            assert nodes[:n].all() and not nodes[n:].any()          # nodes are contiguous, then padding
            adj = out[b, :n, 4:4 + n] > 0
            assert torch.equal(adj, adj.T)
            deg = adj.sum(1)
            if max_degree is not None:
                assert n == 0 or int(deg.max()) <= max_degree
            for k in range(1, n):
                full = max_degree is not None and bool((deg[:k] >= max_degree).all())
                assert bool(adj[k, :k].any()) or full
            g = WebTokenizer(M, "full", max_degree=max_degree).decode(out[b].numpy())
            assert g.n_nodes == n and g.n_edges == int(adj.sum()) // 2   # the decoder keeps every edge
    assert min(sizes) >= 6                                        # non-trivial: long webs


def test_generation_equals_teacher_forcing_on_its_own_output():
    """Fed its own output back (the symmetric tokens, masked to the causal form inside), the model gives the very
    logits the generator decided on: argmax parent and the extras > 0 (no degree cap), and the snapped flag/xyz."""
    model = _model(flag_bias=2.0, max_degree=None)
    _, cond = _batch()
    out = model.generate(cond)
    assert (out[:, 1:, 0] > 0).any(1).all()                       # non-trivial: every web has >= 2 nodes
    pred = model(out, cond)
    for b in range(out.shape[0]):
        n = int((out[b, :, 0] > 0).sum())
        assert torch.allclose(pred[b, :n, 1:4], out[b, :n, 1:4], atol=1e-12)
        assert (pred[b, :n, 0] > 0).all() and (n == M or pred[b, n, 0] <= 0)
        for k in range(1, n):
            par, ext = pred[b, k, 4:4 + k], pred[b, k, 4 + M:4 + M + k]
            p = int(par.argmax())
            expect = torch.zeros(k, dtype=torch.bool)
            expect[p] = True
            expect[p + 1:] = ext[p + 1:] > 0
            assert torch.equal(out[b, k, 4:4 + k] > 0, expect)


def test_cfg_identities_and_condition_dropout():
    model = _model()
    tokens, cond = _batch()
    drop = torch.ones(3, dtype=torch.bool)
    assert torch.equal(model.guided(tokens, cond, 1.0), model(tokens, cond))
    assert torch.equal(model(tokens, cond, drop), model(tokens, cond * 5 + 1, drop))
    null, full = model(tokens, cond, drop), model(tokens, cond)
    assert torch.allclose(model.guided(tokens, cond, 3.0), null + 3.0 * (full - null), atol=1e-9)


def test_bad_options():
    with pytest.raises(SeqzooError, match="full tokens"):
        GraphWebCatTransformer(4 + 5, M)
    with pytest.raises(SeqzooError, match="categorical"):
        GraphWebCatTransformer(TOK.token_dim, M, head="mse")


def test_training_lowers_loss_and_checkpoint_reloads(tmp_path):
    gen = build_generator("transformer-cat", SCALER, max_nodes=M, d_model=16, n_layers=1, n_heads=2)
    assert gen.model.max_degree == TOK.max_degree
    info = train_generator(gen, WEBS, steps=40, batch_size=8, lr=3e-3, log_every=10)
    assert info["history"][-1]["loss"] < info["history"][0]["loss"]
    save_generator(gen, tmp_path / "g")
    again = load_generator(tmp_path / "g")
    assert isinstance(again.model, GraphWebCatTransformer)
    a = gen.generate_tokens(feature_matrix(WEBS[:3]))
    assert np.array_equal(a, again.generate_tokens(feature_matrix(WEBS[:3])))


# Loss on a fixed batch and generated tokens of the old generators, computed by their code path before the
# categorical head was added (float64, d 16, 2 layers, 2 heads, torch.manual_seed(0)).
OLD = {"transformer": (1.6878581312117484, -116.25823527453285, 245.49506193608002),
       "transformer-mse": (1.0212688914172985, -129.08362851493175, 233.95850011522833)}


@pytest.mark.parametrize("name", sorted(OLD))
def test_old_generators_unchanged(name):
    torch.manual_seed(0)
    gen = build_generator(name, SCALER, max_nodes=M, d_model=16, n_layers=2, n_heads=2)
    gen.model.double()
    tokens = torch.as_tensor(gen.tokenizer.encode_batch(WEBS[:4]), dtype=torch.float64)
    cond = torch.as_tensor(SCALER.transform(feature_matrix(WEBS[:4])), dtype=torch.float64)
    loss = gen.model.loss(tokens, cond, generator=torch.Generator().manual_seed(3))
    out = gen.model.generate(cond[:2], generator=torch.Generator().manual_seed(1))
    got = (loss.item(), out.sum().item(), out.abs().sum().item())
    assert np.allclose(got, OLD[name], rtol=1e-9, atol=0)
    assert type(gen.model).__name__ == "GraphWebTransformer"


def test_repro_accepts_the_new_generator():
    from seqzoo.repro.spider_web import PAPER_MODEL, GENERATOR_ORDER
    from seqzoo.models.webs import GENERATORS

    assert "transformer-cat" in GENERATORS and "transformer-cat" in PAPER_MODEL
    assert "transformer-cat" not in GENERATOR_ORDER              # opt-in, the default list is unchanged


def test_a_padding_flag_ends_the_web():
    """Once a row is padding every later row is padding (as in the data), so the nodes stay contiguous and every
    node's parent is a real node."""
    model = _model(flag_bias=2.0)
    plain = model.forward

    def forward(tokens, cond, drop=None):
        out = plain(tokens, cond, drop).clone()
        if out.shape[1] > 3:
            out[0, 3, 0] = -1.0                   # web 0: padding predicted at row 3, nodes predicted after it
        return out

    model.forward = forward
    _, cond = _batch()
    out = model.generate(cond)
    assert (out[0, :3, 0] > 0).all() and (out[0, 3:, 0] < 0).all()
    assert torch.equal(out[0, 3:, 1:4], torch.zeros(M - 3, 3, dtype=out.dtype))
    assert (out[0, 3:, 4:] < 0).all() and (out[0, :, 7:] < 0).all()    # no edge touches a padding row
    assert (out[1:, :, 0] > 0).all()
