"""GPT-GNN graph attention (Buehler 2023, arXiv 2305.04934; seqzoo/mixers/attention/gnn_attention.py).

* ``gnn_layers = 0`` is exactly causal softmax attention (same weights, bit for bit), also when decoding;
* the whole mixer equals a dense float64 reference written from the docstring equations (with the identity,
  clamp and threshold options on too); a GCN without its skip or without row normalisation fails it;
* GCN closed form: with A = I one layer is GELU(X W + b + X) (GELU(X W + b) without skip); row normalisation
  ignores positive row scalings and keeps an all-zero row zero;
* causality probe through the GCN; a symmetrised adjacency (A + Aᵀ)/2 fails the same probe;
* chunk invariance with the adjacency options on (the contract test covers the defaults), cached greedy decoding
  of a CausalLM with the mixer equals re-running the sequence, bad options are one-line errors.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import seqzoo
from seqzoo import SeqzooError
from seqzoo.generation import generate
from seqzoo.mixers.attention.gnn_attention import GraphAttention, graph_conv, row_normalise
from seqzoo.mixers.attention.softmax import SoftmaxAttention
from seqzoo.models import CausalLM, ModelConfig

F64 = torch.float64
D = 32


def make(seed=0, **options) -> GraphAttention:
    torch.manual_seed(seed)
    m = GraphAttention(D, n_heads=4, **options).to(F64).eval()
    with torch.no_grad():  # non-trivial biases and GCN weights
        for p in m.gnn.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return m


def x_of(batch=2, length=11, seed=1):
    return torch.randn(batch, length, D, generator=torch.Generator().manual_seed(seed), dtype=F64)


def dense_reference(m: GraphAttention, x: torch.Tensor, *, skip=True, normalise=True) -> torch.Tensor:
    """The docstring equations, written out per head with explicit loops over layers (float64)."""
    B, T, _ = x.shape
    q, k, v = m.project(x, torch.zeros(B, dtype=torch.int64))
    d = m.head_dim
    outs = []
    for h in range(m.n_heads):
        g = h // (m.n_heads // m.n_kv_heads)
        scores = q[:, :, h] @ k[:, :, g].transpose(1, 2) / math.sqrt(d)
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        A = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
        adj = A.clone()
        if m.gnn_add_identity:
            adj = adj + torch.eye(T, dtype=F64)
            if m.gnn_clamp_after_identity:
                adj = adj.clamp(0, 1)
        if m.gnn_threshold_min > 0:
            adj = torch.where(adj < m.gnn_threshold_min, torch.zeros_like(adj), adj)
        if m.gnn_threshold_max < 1:
            adj = torch.where(adj > m.gnn_threshold_max, torch.ones_like(adj), adj)
        N = adj / adj.sum(-1, keepdim=True) if normalise else adj
        H = v[:, :, g]
        for lin in m.gnn:
            H = F.gelu(N @ (H @ lin.weight.T + lin.bias) + (H if skip else 0))
        o = A @ v[:, :, g]
        if m.gnn_layers:
            o = o + H @ m.gnn_out.weight.T + m.gnn_out.bias
        outs.append(o)
    return m.o_proj(torch.stack(outs, dim=2).reshape(B, T, m.d_model))


def test_zero_gnn_layers_is_plain_attention_bit_for_bit():
    plain = SoftmaxAttention(D, n_heads=4, impl="math").to(F64).eval()
    for impl in ("math", "sdpa"):
        gnn0 = GraphAttention(D, n_heads=4, gnn_layers=0, impl=impl).to(F64).eval()
        gnn0.load_state_dict(plain.state_dict())
        ref = SoftmaxAttention(D, n_heads=4, impl=impl).to(F64).eval()
        ref.load_state_dict(plain.state_dict())
        x = x_of()
        with torch.no_grad():
            y0, s0 = gnn0(x)
            y1, s1 = ref(x)
            assert torch.equal(y0, y1)
            assert sorted(s0) == sorted(s1) == ["k", "pos", "v"]
            step0, _ = gnn0(x[:, :1], s0)
            step1, _ = ref(x[:, :1], s1)
            assert torch.equal(step0, step1)
    assert sum(p.numel() for p in gnn0.parameters()) == sum(p.numel() for p in plain.parameters())


@pytest.mark.parametrize("options", [{}, {"gnn_layers": 1}, {"n_kv_heads": 2},
                                     {"gnn_add_identity": True, "gnn_threshold_min": 0.05},
                                     {"gnn_add_identity": True, "gnn_clamp_after_identity": False,
                                      "gnn_threshold_max": 0.6}])
def test_matches_dense_reference(options):
    m = make(**options)
    x = x_of()
    with torch.no_grad():
        y, _ = m(x)
        ref = dense_reference(m, x)
    assert (y - ref).abs().max().item() <= 1e-12 * ref.abs().max().item()


def test_stubs_fail_the_dense_reference():
    m = make(gnn_add_identity=True)
    x = x_of()
    with torch.no_grad():
        y, _ = m(x)
        for stub in (dense_reference(m, x, skip=False), dense_reference(m, x, normalise=False)):
            assert (y - stub).abs().max().item() > 1e-3
        plain = dense_reference(make(gnn_layers=0), x)
        assert (y - plain).abs().max().item() > 1e-3  # the GCN changes the output


def test_gcn_closed_form_with_identity_adjacency():
    torch.manual_seed(0)
    layers = torch.nn.ModuleList([torch.nn.Linear(8, 8)]).to(F64)
    X = torch.randn(2, 3, 6, 8, dtype=F64)
    eye = torch.eye(6, dtype=F64).expand(2, 3, 6, 6)
    W, b = layers[0].weight, layers[0].bias
    with torch.no_grad():
        h, msgs = graph_conv(eye, X, layers, skip=True)
        assert torch.allclose(h, F.gelu(X @ W.T + b + X), atol=1e-13, rtol=0)
        assert torch.allclose(msgs[..., 0, :], X @ W.T + b, atol=1e-13, rtol=0)
        h, _ = graph_conv(eye, X, layers, skip=False)
        assert torch.allclose(h, F.gelu(X @ W.T + b), atol=1e-13, rtol=0)


def test_row_normalisation_exact():
    adj = torch.rand(3, 5, 5, dtype=F64).tril()
    adj[1, 2] = 0.0
    norm = row_normalise(adj)
    rows = norm.sum(-1)
    assert torch.allclose(rows[rows > 0], torch.ones_like(rows[rows > 0]), atol=1e-15, rtol=0)
    assert torch.equal(norm[1, 2], torch.zeros(5, dtype=F64))
    scale = torch.rand(3, 5, 1, dtype=F64) + 0.5
    assert torch.allclose(row_normalise(adj * scale), norm, atol=1e-15, rtol=0)


class SymmetrisedStub(GraphAttention):
    """A GCN on the symmetrised adjacency (A + Aᵀ)/2: it must fail the causality probe."""

    def adjacency(self, attn):
        assert attn.shape[-1] == attn.shape[-2], "the stub is only defined for full-sequence calls"
        return (attn + attn.transpose(-1, -2)) / 2


@pytest.mark.parametrize("cls, causal", [(GraphAttention, True), (SymmetrisedStub, False)])
def test_causality_probe(cls, causal):
    torch.manual_seed(0)
    m = cls(D, n_heads=4, gnn_layers=2).to(F64).eval()
    x = x_of(length=16)
    with torch.no_grad():
        y, _ = m(x)
        leaks = []
        for t in (1, 5, 9, 15):
            x2 = x.clone()
            x2[:, t:] += 2.0 * torch.randn_like(x2[:, t:])
            y2, _ = m(x2)
            leaks.append((y2[:, :t] - y[:, :t]).abs().max().item())
    if causal:
        assert max(leaks) == 0.0
    else:
        assert min(leaks) > 1e-6


@pytest.mark.parametrize("options", [{"gnn_add_identity": True, "gnn_threshold_min": 0.08},
                                     {"gnn_threshold_max": 0.5, "n_kv_heads": 1}])
def test_chunk_invariance_with_adjacency_options(options):
    m = make(gnn_layers=2, **options)
    x = x_of(length=19)
    with torch.no_grad():
        y_full, s_full = m(x)
        for sizes in ([1] * 19, [7, 1, 11], [18, 1]):
            ys, state, start = [], None, 0
            for size in sizes:
                y, state = m(x[:, start:start + size], state)
                ys.append(y)
                start += size
            assert (torch.cat(ys, 1) - y_full).abs().max().item() <= 1e-12
            assert torch.allclose(state["gnn"], s_full["gnn"], atol=1e-12, rtol=0)
    assert m.state_size(19) == sum(t[0].numel() for t in s_full.values())


def test_cached_greedy_decoding_equals_full_recompute():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=256, d_model=32, n_layers=2, mixer="gpt_gnn_attention",
                      mixer_options={"gpt_gnn_attention": {"n_heads": 2, "gnn_layers": 2}})
    model = CausalLM(cfg).eval()
    prompts = [list(b"SS MKV|"), list(b"GEN H0.40 E0.20 L30|")]
    cached = generate(model, prompts, 12, temperature=0.0)
    full = generate(model, prompts, 12, temperature=0.0, use_cache=False)
    assert cached == full and all(len(c) == 12 for c in cached)


@pytest.mark.parametrize("options, needle", [({"gnn_layers": -1}, "gnn_layers"), ({"gnn_layers": 1.5}, "gnn_layers"),
                                             ({"gnn_threshold_min": 1.5}, "gnn_threshold_min"),
                                             ({"gnn_threshold_min": 0.6, "gnn_threshold_max": 0.5}, "below"),
                                             ({"window": 8}, "unknown option")])
def test_bad_options(options, needle):
    with pytest.raises(SeqzooError, match=needle):
        seqzoo.build_mixer("gpt_gnn_attention", 64, **options)


def test_registered_with_paper():
    assert "gpt_gnn_attention" in seqzoo.list_mixers()
    m = seqzoo.build_mixer("gpt_gnn_attention", 64)
    assert m.gnn_layers == 3 and "2305.04934" in GraphAttention.__doc__
