"""LMUFormer model and its spiking pieces (seqzoo/models/lmuformer.py, seqzoo/models/spiking.py)."""

import math
import random

import pytest
import torch

from seqzoo.core.errors import SeqzooError
from seqzoo.models.lmuformer import LMUFormer, LMUFormerClassifier
from seqzoo.models.spiking import LIF, spike, surrogate_grad


# -- surrogate gradients ---------------------------------------------------------------------------------------------
SMOOTH = {  # the smooth functions whose derivatives the surrogates are
    "sigmoid": lambda x, a: torch.sigmoid(a * x),
    "atan": lambda x, a: torch.atan(math.pi / 2 * a * x) / math.pi + 0.5,
}


@pytest.mark.parametrize("kind,alpha", [("sigmoid", 4.0), ("atan", 2.0), ("fast_sigmoid", 10.0)])
def test_surrogate_gradient_is_nonzero_where_heaviside_has_none(kind, alpha):
    x = torch.tensor([-1.5, -0.2, 0.0, 0.3, 2.0], dtype=torch.float64, requires_grad=True)
    out = spike(x, kind, alpha)
    assert out.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]  # forward: exactly the step, H(0) = 1
    out.sum().backward()
    assert (x.grad > 0).all(), "a surrogate gradient flows everywhere (the true step's derivative is 0 there)"
    assert x.grad[2] == x.grad.max(), "the surrogate peaks at the threshold"


@pytest.mark.parametrize("kind,alpha", [("sigmoid", 4.0), ("atan", 2.0)])
def test_surrogate_is_the_derivative_of_its_smooth_step(kind, alpha):
    x = torch.linspace(-2, 2, 41, dtype=torch.float64, requires_grad=True)
    SMOOTH[kind](x, alpha).sum().backward()
    torch.testing.assert_close(surrogate_grad(x.detach(), kind, alpha), x.grad, rtol=1e-12, atol=1e-12)


def test_fast_sigmoid_formula():
    x = torch.tensor([-0.5, 0.0, 0.25], dtype=torch.float64)
    torch.testing.assert_close(surrogate_grad(x, "fast_sigmoid", 10.0), 1 / (1 + 10 * x.abs()) ** 2)
    with pytest.raises(SeqzooError, match="unknown surrogate 'box'"):
        spike(x, "box")


# -- LIF dynamics ----------------------------------------------------------------------------------------------------
def test_lif_three_steps_by_hand_hard_reset():
    """τ = 2 (β = ½), ϑ = 1, v_t = β v_{t−1} + (1 − β) I_t, hard reset to 0."""
    lif = LIF(tau=2.0, threshold=1.0, reset="hard", decay_input=True)
    current = torch.tensor([[[1.5], [1.5], [0.4]]], dtype=torch.float64)
    spikes, v = lif(current)
    # v1 = 0.75 (no spike); v2 = 0.375 + 0.75 = 1.125 ≥ 1 → spike, reset to 0; v3 = 0 + 0.2 = 0.2
    assert spikes.flatten().tolist() == [0.0, 1.0, 0.0]
    torch.testing.assert_close(v, torch.tensor([[0.2]], dtype=torch.float64))


def test_lif_three_steps_by_hand_subtract_reset_no_input_decay():
    """β = ½, v_t = β v_{t−1} + I_t, reset by subtracting ϑ."""
    lif = LIF(tau=2.0, threshold=1.0, reset="subtract", decay_input=False)
    current = torch.tensor([[[0.6], [0.8], [0.5]]], dtype=torch.float64)
    spikes, v = lif(current)
    # v1 = 0.6; v2 = 0.3 + 0.8 = 1.1 → spike, 1.1 − 1 = 0.1; v3 = 0.05 + 0.5 = 0.55
    assert spikes.flatten().tolist() == [0.0, 1.0, 0.0]
    torch.testing.assert_close(v, torch.tensor([[0.55]], dtype=torch.float64))


def test_lif_streams_and_passes_gradients():
    lif = LIF(tau=2.0, surrogate="atan")
    gen = torch.Generator().manual_seed(0)
    current = (2 * torch.randn(2, 20, 5, generator=gen, dtype=torch.float64)).requires_grad_(True)
    full, v_full = lif(current)
    first, v = lif(current[:, :7])
    second, v = lif(current[:, 7:], v)
    assert torch.equal(torch.cat([first, second], 1), full) and torch.equal(v, v_full)
    assert 0 < full.mean() < 1
    full.sum().backward()
    assert current.grad.abs().sum() > 0
    with pytest.raises(SeqzooError, match="LIF reset 'soft'"):
        LIF(reset="soft")


# -- the model -------------------------------------------------------------------------------------------------------
def make_classifier(spiking: bool, norm: str = "bn", **extra) -> LMUFormerClassifier:
    torch.manual_seed(0)
    model = LMUFormerClassifier(6, 3, d_model=8, n_layers=2, theta=16.0, spiking=spiking, norm=norm,
                                embed_layers=2, mlp_ratio=2.0, **extra)
    model = model.double()
    if norm == "bn":  # calibrate BatchNorm on one batch (momentum 1: running stats = its statistics), so that in
        # eval mode it is a real affine map and the LIF layers get unit-scale currents
        if spiking:  # and let the single memory-input neuron fire now and then: the memory path is live
            for block in model.backbone.blocks:
                block.token_mixer.u_norm.norm.weight.data.fill_(0.5)
                block.token_mixer.u_norm.norm.bias.data.fill_(0.5)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.momentum = 1.0
        with torch.no_grad():
            model.train()(2 * torch.randn(4, 15, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(9)))
    return model.eval()


def run_in_pieces(model, x, sizes):
    outs, state, start = [], None, 0
    for size in sizes:
        out, state = model(x[:, start:start + size], state)
        outs.append(out)
        start += size
    return torch.cat(outs, dim=1), state


@pytest.mark.parametrize("spiking", [False, True], ids=["relu", "spiking"])
def test_model_streams_step_by_step_equal_to_full(spiking):
    model = make_classifier(spiking, threshold=0.5)
    length = 15
    x = 2 * torch.randn(2, length, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full, state_full = model(x)
        rng = random.Random(0)
        cuts = sorted(rng.sample(range(1, length), 4))
        for sizes in ([1] * length, [b - a for a, b in zip([0] + cuts, cuts + [length])]):
            pieces, state = run_in_pieces(model, x, sizes)
            torch.testing.assert_close(pieces, full, rtol=1e-10, atol=1e-10)
            assert sorted(state) == sorted(state_full)
            for key in state:
                torch.testing.assert_close(state[key], state_full[key], rtol=1e-10, atol=1e-10)
        # init_state is the same as no state
        again, _ = model(x, model.init_state(2, dtype=torch.float64))
        torch.testing.assert_close(again, full, rtol=0, atol=0)
    if spiking:  # the spiking path is live: the LIF layers of the last block fire, but not always
        last = model.backbone.blocks[-1]
        spikes = []
        hooks = [m.register_forward_hook(lambda m, i, o: spikes.append(o.mean().item()))
                 for m in (last.token_mixer.u_act, last.token_mixer.m_act, last.channel_mixer.act2)]
        with torch.no_grad():
            model(x)
        for hook in hooks:
            hook.remove()
        assert all(0.02 < rate < 0.98 for rate in spikes), spikes


@pytest.mark.parametrize("spiking", [False, True], ids=["relu", "spiking"])
def test_model_is_causal(spiking):
    model = make_classifier(spiking, norm="ln", threshold=0.5)
    x = torch.randn(2, 20, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y, _ = model(x)
        for t in (1, 9, 14):
            x2 = x.clone()
            x2[:, t:] += 3 * torch.randn(2, 20 - t, 6, dtype=torch.float64)
            y2, _ = model(x2)
            # the LMU's FFT convolution mixes all positions, so allow round-off (≤ 1e-12)
            assert (y2[:, :t] - y[:, :t]).abs().max() <= 1e-12, f"logits before {t} changed when x[:, {t}:] did"
            assert (y2[:, t:] - y[:, t:]).abs().max() > 1e-6


def test_state_is_batch_first_and_recurrent_state_float32_under_bf16():
    model = LMUFormerClassifier(4, 2, d_model=8, spiking=True).eval()
    state = model.init_state(3, dtype=torch.bfloat16)
    assert all(t.shape[0] == 3 for t in state.values())
    assert state["blocks.0.token_mixer"].dtype == torch.float32
    model = model.to(torch.bfloat16)
    with torch.no_grad():
        out, new_state = model(torch.randn(3, 5, 4, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert sorted(new_state) == sorted(state)
    assert new_state["blocks.0.token_mixer"].dtype == torch.float32


def sine_class_data(n: int, length: int, seed: int):
    """Class = which of three frequencies the (noisy, random-phase) sinusoid in channel 0 has."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=gen)
    freq = torch.tensor([0.05, 0.12, 0.25])[labels]
    t = torch.arange(length, dtype=torch.float32)
    phase = 2 * math.pi * torch.rand(n, 1, generator=gen)
    x = 0.3 * torch.randn(n, length, 4, generator=gen)
    x[:, :, 0] += torch.sin(2 * math.pi * freq[:, None] * t + phase)
    return x, labels


def test_classifier_learns_a_synthetic_task():
    torch.manual_seed(0)
    model = LMUFormerClassifier(4, 3, d_model=12, theta=24.0, embed_layers=2, mlp_ratio=2.0)
    x, labels = sine_class_data(64, 24, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        loss = model.loss(x, labels)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x_val, y_val = sine_class_data(96, 24, seed=1)
    with torch.no_grad():
        acc = (model.classify(x_val).argmax(-1) == y_val).float().mean().item()
    assert loss.item() < 0.7 * first
    assert acc > 0.6, acc  # chance is 1/3


def test_spiking_model_trains_through_the_surrogate():
    """Every path from the loss to the first convolution crosses LIF layers: with the plain step (zero
    derivative) its gradient would be exactly 0."""
    torch.manual_seed(0)
    model = LMUFormerClassifier(4, 3, d_model=8, theta=16.0, spiking=True, embed_layers=2, mlp_ratio=2.0)
    x, labels = sine_class_data(16, 16, seed=0)
    model.loss(3 * x, labels).backward()
    grad = model.backbone.embed.convs[0].conv.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_bad_options_are_one_line_errors():
    with pytest.raises(SeqzooError, match="norm 'group' is not valid"):
        LMUFormer(4, norm="group")
    with pytest.raises(SeqzooError, match="n_classes must be an int >= 2"):
        LMUFormerClassifier(4, 1)
    with pytest.raises(SeqzooError, match=r"expects x of shape \[B, T, 4\]"):
        LMUFormer(4)(torch.randn(1, 3, 5))
