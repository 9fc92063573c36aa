"""von Oswald et al. (arXiv 2212.07677): a linear self-attention layer with constructed weights is one GD step.

* the constructed 1-layer LSA's prediction equals the one-step GD prediction ŵ₁ᵀx_q (w₀ = 0, rate η) to 1e-10 in
  float64 on random data — an LSA with random weights, and softmax attention with the constructed weights, fail;
* the sign convention: the query's y-slot ends at −ŷ, context tokens end with their residuals y_i − ŵ₁ᵀx_i;
* K stacked constructed layers equal K GD steps;
* a trained LSA reduces the in-context loss (gradients flow through every weight).
"""

from __future__ import annotations

import pytest
import torch

from seqzoo import SeqzooError
from seqzoo.tasks.icl import ICLRegression
from seqzoo.tasks.icl.learners import gd, gd_weights
from seqzoo.tasks.icl.lsa_gd import LinearSelfAttention, LSARegressor, gd_construction

F64 = torch.float64


def data(B=32, N=10, d=10, M=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(B, N, d, generator=g, dtype=F64) * 2 - 1
    w = torch.randn(B, d, generator=g, dtype=F64)
    y = (X @ w.unsqueeze(-1)).squeeze(-1)
    xq = torch.rand(B, M, d, generator=g, dtype=F64) * 2 - 1
    return X, y, xq


@pytest.mark.parametrize("d, N, eta, seed", [(10, 10, 0.9, 0), (3, 17, 2.5, 1), (7, 4, 0.05, 2)])
def test_constructed_lsa_equals_one_gd_step(d, N, eta, seed):
    X, y, xq = data(N=N, d=d, M=3, seed=seed)
    model = gd_construction(d, eta, N)
    with torch.no_grad():
        pred = model.predict(X, y, xq)
        expected = torch.stack([gd(X, y, xq[:, m], steps=1, lr=eta) for m in range(3)], dim=1)
        assert (pred - expected).abs().max().item() <= 1e-10 * max(1.0, expected.abs().max().item())
        assert torch.allclose(model.predict(X, y, xq[:, 0]), expected[:, 0], atol=1e-10, rtol=0)


def test_random_weights_and_softmax_attention_do_not():
    X, y, xq = data(M=1)
    expected = gd(X, y, xq[:, 0], lr=0.9)
    torch.manual_seed(0)
    random_lsa = LSARegressor(10, init_std=0.3).double()
    with torch.no_grad():
        assert (random_lsa.predict(X, y, xq[:, 0]) - expected).abs().max() > 0.1
    layer = gd_construction(10, 0.9, 10).layers[0]
    e = LSARegressor.tokens(X, y, xq)
    with torch.no_grad():   # the same weights with a softmax over the context keys
        q = torch.einsum("hkd,btd->bhtk", layer.w_q, e)
        k = torch.einsum("hkd,bsd->bhsk", layer.w_k, e[:, :10])
        v = torch.einsum("hed,bsd->bhse", layer.w_v, e[:, :10])
        att = torch.softmax(torch.einsum("bhtk,bhsk->bhts", q, k), dim=-1)
        out = e + torch.einsum("hfe,bhte->btf", layer.proj, torch.einsum("bhts,bhse->bhte", att, v))
    assert (-out[:, 10, 10] - expected).abs().max() > 0.1


def test_sign_convention_and_context_residuals():
    X, y, xq = data(N=6, d=4, M=2)
    eta = 0.8
    model = gd_construction(4, eta, 6)
    with torch.no_grad():
        e = model.layers[0](LSARegressor.tokens(X, y, xq), 6)
    w1 = gd_weights(X, y, steps=1, lr=eta)
    assert torch.allclose(e[:, 6:, 4], -(xq @ w1.unsqueeze(-1)).squeeze(-1), atol=1e-12)   # −ŷ at the queries
    assert torch.allclose(e[:, :6, 4], y - (X @ w1.unsqueeze(-1)).squeeze(-1), atol=1e-12)  # residuals
    assert torch.equal(e[..., :4], LSARegressor.tokens(X, y, xq)[..., :4])                # x-slots untouched


@pytest.mark.parametrize("steps", [2, 5])
def test_stacked_constructed_layers_are_k_gd_steps(steps):
    X, y, xq = data(N=12, d=5, M=1, seed=3)
    model = gd_construction(5, 1.1, 12, n_layers=steps)
    with torch.no_grad():
        pred = model.predict(X, y, xq[:, 0])
    assert torch.allclose(pred, gd(X, y, xq[:, 0], steps=steps, lr=1.1), atol=1e-10, rtol=0)
    assert not torch.allclose(pred, gd(X, y, xq[:, 0], steps=1, lr=1.1), atol=1e-3)


def test_queries_do_not_influence_each_other_or_the_context():
    X, y, xq = data(N=8, d=3, M=4)
    torch.manual_seed(1)
    model = LSARegressor(3, n_layers=2, init_std=0.2).double()
    with torch.no_grad():
        full = model.predict(X, y, xq)
        alone = model.predict(X, y, xq[:, 2])
    assert torch.allclose(full[:, 2], alone, atol=1e-12)


def test_trained_lsa_reduces_the_in_context_loss():
    task = ICLRegression(d=3, n_points=7, x_distribution="uniform", seed=0)
    torch.manual_seed(0)
    model = LSARegressor(3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss(index):
        p = task.sample("train", index, 128)
        X, y, xq, yq = p.xs[:, :6].float(), p.ys[:, :6].float(), p.xs[:, 6].float(), p.ys[:, 6].float()
        return ((model.predict(X, y, xq) - yq) ** 2).mean()

    with torch.no_grad():
        first = float(loss(10_000))
    for step in range(100):
        opt.zero_grad()
        loss(step).backward()
        opt.step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    with torch.no_grad():
        assert float(loss(10_000)) < 0.8 * first


def test_bad_shapes_are_one_line_errors():
    layer = LinearSelfAttention(4)
    for call in (lambda: layer(torch.zeros(2, 5, 3), 2), lambda: layer(torch.zeros(2, 5, 4), 0)):
        with pytest.raises(SeqzooError) as err:
            call()
        assert "\n" not in str(err.value)
