"""Sparse mixture-of-experts FFN (seqzoo/models/moe.py) and its wiring into CausalLM.

Each property fails on an obvious stub: a dense mixture (every expert weighted by its probability) gives gradients
to every expert and does not match the per-token top-k reference; a constant aux loss does not grow when routing
collapses; a layer without capacity does not drop the over-capacity tokens.
"""

from __future__ import annotations

import math

import pytest
import torch

from seqzoo.core.errors import SeqzooError
from seqzoo.models import CausalLM, ModelConfig
from seqzoo.models.moe import SparseMoE, moe_aux_loss


@torch.no_grad()
def _reference(moe: SparseMoE, x: torch.Tensor) -> torch.Tensor:
    """Per-token loop: softmax over experts, keep the top-k probabilities, sum gate·expert (+ gated shared)."""
    rows = x.detach().reshape(-1, x.shape[-1])
    out = []
    for h in rows:
        probs = torch.softmax(h @ moe.router.weight.T, dim=-1)
        order = sorted(range(moe.n_experts), key=lambda e: -float(probs[e]))[: moe.top_k]
        total = sum(float(probs[e]) for e in order)
        y = torch.zeros_like(h)
        for e in order:
            gate = probs[e] / total if moe.renormalize else probs[e]
            y = y + gate * moe.experts[e](h[None])[0]
        if moe.shared_expert is not None:
            y = y + torch.sigmoid(h @ moe.shared_gate.weight[0]) * moe.shared_expert(h[None])[0]
        out.append(y)
    return torch.stack(out).reshape(x.shape)


@pytest.mark.parametrize("top_k,shared,renormalize", [(2, True, False), (1, False, False), (3, True, True)])
def test_output_equals_per_token_loop_reference(top_k, shared, renormalize):
    torch.manual_seed(1)
    moe = SparseMoE(12, 24, n_experts=5, top_k=top_k, shared_expert=shared, renormalize=renormalize).double()
    x = torch.randn(3, 7, 12, dtype=torch.float64)
    torch.testing.assert_close(moe(x), _reference(moe, x), rtol=1e-12, atol=1e-12)


def test_gradients_reach_only_selected_experts():
    torch.manual_seed(2)
    moe = SparseMoE(8, 16, n_experts=8, top_k=1, shared_expert=False)
    x = torch.randn(1, 3, 8)  # three tokens, one expert each: at least five experts are never chosen
    moe(x).pow(2).sum().backward()
    chosen = set(moe.last_topk.reshape(-1).tolist())
    assert len(chosen) <= 3
    for e, expert in enumerate(moe.experts):
        grads = [p.grad for p in expert.parameters()]
        if e in chosen:
            assert all(g is not None and g.abs().sum() > 0 for g in grads), f"chosen expert {e} got no gradient"
        else:
            assert all(g is None or g.abs().sum() == 0 for g in grads), f"unchosen expert {e} got a gradient"


def test_top_all_with_equal_gates_is_the_mean_of_experts():
    torch.manual_seed(3)
    moe = SparseMoE(10, 20, n_experts=4, top_k=4, shared_expert=False).double()
    with torch.no_grad():
        moe.router.weight.zero_()  # equal logits → every gate is 1/E
    x = torch.randn(2, 5, 10, dtype=torch.float64)
    mean = torch.stack([expert(x) for expert in moe.experts]).mean(0)
    torch.testing.assert_close(moe(x), mean, rtol=1e-12, atol=1e-12)


def test_aux_loss_is_alpha_under_uniform_routing_and_grows_when_routing_collapses():
    alpha, n_experts = 0.05, 4
    moe = SparseMoE(n_experts, 8, n_experts=n_experts, top_k=1, shared_expert=False, aux_weight=alpha).double()
    with torch.no_grad():
        moe.router.weight.zero_()
    # uniform: every probability 1/E (f is then irrelevant) → E · Σ f_e / E = 1
    moe(torch.randn(16, n_experts, dtype=torch.float64))
    assert moe.aux_loss.item() == pytest.approx(alpha, rel=1e-12)
    # balanced but confident: token t goes to expert t mod E with probability ≈ 1 → still ≈ α
    with torch.no_grad():
        moe.router.weight.copy_(torch.eye(n_experts, dtype=torch.float64) * 50.0)
    balanced = torch.eye(n_experts, dtype=torch.float64).repeat(4, 1)
    moe(balanced)
    assert moe.aux_loss.item() == pytest.approx(alpha, rel=1e-6)
    # collapsed: every token to expert 0 with probability ≈ 1 → ≈ α·E
    collapsed = torch.zeros(16, n_experts, dtype=torch.float64)
    collapsed[:, 0] = 1.0
    moe(collapsed)
    assert moe.aux_loss.item() == pytest.approx(alpha * n_experts, rel=1e-6)
    assert moe.aux_loss.item() > 3 * alpha


def test_aux_loss_gradient_pushes_router_towards_balance():
    torch.manual_seed(4)
    moe = SparseMoE(6, 12, n_experts=3, top_k=1, shared_expert=False, aux_weight=1.0)
    x = torch.randn(32, 6)
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[0] = x.mean(0) * 5  # expert 0 favoured on average
    moe(x)
    before = moe.aux_loss.item()
    moe.aux_loss.backward()
    with torch.no_grad():
        moe.router.weight -= 0.5 * moe.router.weight.grad
    moe(x)
    assert moe.aux_loss.item() < before


def test_capacity_overflow_drops_exactly_the_over_capacity_tokens():
    torch.manual_seed(5)
    d, n_tokens, n_experts = 6, 10, 2
    moe = SparseMoE(d, 12, n_experts=n_experts, top_k=1, shared_expert=False, capacity_factor=1.0).double()
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[0, 0] = 40.0  # every token with h[0] = 1 goes to expert 0
    x = torch.randn(n_tokens, d, dtype=torch.float64)
    x[:, 0] = 1.0
    capacity = moe.capacity(n_tokens)
    assert capacity == math.ceil(1.0 * 1 * n_tokens / n_experts) == 5
    y = moe(x)
    assert moe.last_dropped.tolist() == [n_tokens - capacity, 0]
    gate = torch.softmax(x @ moe.router.weight.T, -1)[:, :1]
    torch.testing.assert_close(y[:capacity], gate[:capacity] * moe.experts[0](x[:capacity]), rtol=1e-12, atol=1e-12)
    assert torch.equal(y[capacity:], torch.zeros_like(y[capacity:])), "over-capacity tokens must get no update"
    # without a capacity limit nothing is dropped
    moe.capacity_factor = None
    assert torch.all(moe(x).abs().sum(-1) > 0) and moe.last_dropped.sum() == 0


def test_capacity_keeps_second_choice_when_first_is_full():
    torch.manual_seed(6)
    moe = SparseMoE(4, 8, n_experts=2, top_k=2, shared_expert=False, capacity_factor=0.5).double()
    x = torch.randn(8, 4, dtype=torch.float64)
    y = moe(x)  # capacity ceil(0.5·2·8/2) = 4 per expert: each expert serves the first four tokens only
    assert moe.capacity(8) == 4 and moe.last_dropped.tolist() == [4, 4]
    torch.testing.assert_close(y[:4], _reference(moe, x[:4]), rtol=1e-12, atol=1e-12)
    assert torch.equal(y[4:], torch.zeros_like(y[4:]))


def test_single_expert_without_shared_gate_is_a_dense_swiglu():
    torch.manual_seed(7)
    moe = SparseMoE(8, 16, n_experts=1, top_k=1, shared_expert=False, expert_hidden=16).double()
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    torch.testing.assert_close(moe(x), moe.experts[0](x), rtol=1e-12, atol=1e-12)


def test_bad_options_are_one_line_errors():
    with pytest.raises(SeqzooError, match="top_k"):
        SparseMoE(8, n_experts=2, top_k=3)
    with pytest.raises(SeqzooError, match="capacity_factor"):
        SparseMoE(8, capacity_factor=0)
    with pytest.raises(SeqzooError, match="aux_weight"):
        SparseMoE(8, aux_weight=-1)
    with pytest.raises(SeqzooError, match="moe_top_k"):
        CausalLM(ModelConfig(vocab_size=16, d_model=16, n_layers=1, ffn="moe", moe_experts=2, moe_top_k=3))


def test_causal_lm_with_moe_ffn_adds_the_aux_loss_in_training():
    torch.manual_seed(8)
    cfg = ModelConfig(vocab_size=32, d_model=16, n_layers=2, ffn="moe", moe_experts=4, moe_top_k=2,
                      moe_aux_weight=0.1, moe_shared_expert=False)
    model = CausalLM(cfg)
    ffns = [b.ffn for b in model.blocks]
    assert all(isinstance(f, SparseMoE) and f.n_experts == 4 and f.top_k == 2 for f in ffns)
    tokens = torch.randint(0, 32, (2, 12))
    batch = {"inputs": tokens, "targets": tokens}
    model.train()
    total = model.loss(batch)
    aux = moe_aux_loss(model)
    # two layers, ≈ α each: routing is near-uniform at initialisation
    assert aux is not None and aux.item() == pytest.approx(0.2, rel=0.05)
    model.eval()
    plain = model.loss(batch)
    torch.testing.assert_close(total, plain + aux)
    model.train()
    model.loss(batch).backward()
    assert all(f.router.weight.grad is not None and f.router.weight.grad.abs().sum() > 0 for f in ffns)


def test_causal_lm_with_moe_is_chunk_invariant_without_capacity():
    torch.manual_seed(9)
    model = CausalLM(ModelConfig(vocab_size=32, d_model=16, n_layers=2, ffn="moe", moe_experts=4)).double().eval()
    tokens = torch.randint(0, 32, (2, 11))
    whole, _ = model(tokens)
    first, state = model(tokens[:, :6])
    second, _ = model(tokens[:, 6:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, rtol=1e-10, atol=1e-10)


def test_model_config_loads_moe_options_from_a_table():
    from seqzoo.core.config import from_dict

    cfg = from_dict(ModelConfig, {"vocab_size": 16, "d_model": 16, "n_layers": 1, "ffn": "moe", "moe_experts": 4,
                                  "moe_top_k": 1, "moe_shared_expert": False, "moe_capacity_factor": 1.25})
    moe = CausalLM(cfg).blocks[0].ffn
    assert (moe.n_experts, moe.top_k, moe.shared_expert, moe.capacity_factor) == (4, 1, None, 1.25)
    assert ModelConfig().ffn_options() == {}
