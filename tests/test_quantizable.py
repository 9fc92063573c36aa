"""Quantizable Transformers (arXiv 2306.12929): clipped softmax, gated attention, outlier probe, INT8 fake quant."""

import math

import pytest
import torch

import seqzoo
from seqzoo.core.errors import SeqzooError
from seqzoo.mixers.attention.quantizable import clipped_softmax, clipped_softmax_attention
from seqzoo.models import CausalLM, ModelConfig
from seqzoo.models.quantization import (ActivationQuantizer, OutlierProbe, fake_quantize, fake_quantize_symmetric,
                                        kurtosis, quant_params)
from seqzoo.ops import softmax_attention

D = 64


def pair(**opts):
    """A plain attention mixer and a quantizable one with the same projection weights (float64, eval)."""
    torch.manual_seed(3)
    impl = opts.pop("impl", "math")
    plain = seqzoo.build_mixer("attention", D, impl=impl).double().eval()
    quant = seqzoo.build_mixer("quantizable_attention", D, impl=impl, **opts).double().eval()
    missing, unexpected = quant.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("gate_") for k in missing)
    return plain, quant


def x_of(b=2, t=19, seed=0):
    return torch.randn(b, t, D, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


# -- clipped softmax ------------------------------------------------------------------------------------------------
def test_clipped_softmax_is_softmax_when_zeta_1_gamma_0():
    s = torch.randn(5, 7, 11, dtype=torch.float64)
    assert torch.equal(clipped_softmax(s, 1.0, 0.0), torch.softmax(s, -1))


def test_clipped_softmax_reaches_exact_zeros_and_ones_with_bounded_logits():
    s = torch.tensor([[5.0, 0.0, 0.0, -5.0], [4.0, -4.0, -4.0, -4.0]], dtype=torch.float64, requires_grad=True)
    p = clipped_softmax(s, zeta=1.0, gamma=-0.03)
    assert (p[0, 3] == 0) and (p[1, 1:] == 0).all()  # |logits| <= 5, yet exact zeros
    assert torch.softmax(s, -1).min() > 0  # which plain softmax never gives
    ones = clipped_softmax(s, zeta=1.03, gamma=0.0)
    assert (ones[1, 0] == 1.0) and (ones[1, 1:] > 0).all()  # an exact one
    # no gradient flows through clipped entries, it does through the others
    p[0, 3].backward(retain_graph=True)
    assert torch.count_nonzero(s.grad) == 0
    s.grad = None
    p[0, 0].backward()  # 0.986 stays inside (0, 1)
    assert s.grad[0].abs().sum() > 0


def test_clipped_attention_matches_per_query_reference_with_cache():
    torch.manual_seed(0)
    B, T, L, H, Dh = 2, 6, 5, 4, 8
    q = torch.randn(B, T, H, Dh, dtype=torch.float64) * 2
    k = torch.randn(B, T, 2, Dh, dtype=torch.float64) * 2  # grouped-query: 2 kv heads
    v = torch.randn(B, T, 2, Dh, dtype=torch.float64)
    cache = {"k": torch.randn(B, L, 2, Dh, dtype=torch.float64) * 2, "v": torch.randn(B, L, 2, Dh, dtype=torch.float64)}
    zeta, gamma = 1.02, -0.08
    o, new_cache = clipped_softmax_attention(q, k, v, zeta=zeta, gamma=gamma, cache=cache)
    keys, values = torch.cat([cache["k"], k], 1), torch.cat([cache["v"], v], 1)
    assert torch.equal(new_cache["k"], keys)
    zeros = 0
    for b in range(B):
        for t in range(T):
            for h in range(H):
                visible = L + t + 1  # earlier and current keys only
                s = keys[b, :visible, h // 2] @ q[b, t, h] / math.sqrt(Dh)
                w = ((zeta - gamma) * torch.softmax(s, 0) + gamma).clamp(0, 1)
                zeros += int((w == 0).sum())
                torch.testing.assert_close(o[b, t, h], w @ values[b, :visible, h // 2], rtol=1e-12, atol=1e-12)
    assert zeros > 0  # the probe really clipped something


# -- the mixer ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", ["math", "sdpa"])
def test_vanilla_without_gate_equals_plain_attention_exactly(impl):
    plain, quant = pair(softmax="vanilla", gate=False, impl=impl)
    x = x_of()
    with torch.no_grad():
        y0, s0 = plain(x[:, :11])
        y1, s1 = quant(x[:, :11])
        assert torch.equal(y0, y1)
        z0, _ = plain(x[:, 11:], s0)  # and the KV-cache continuation
        z1, _ = quant(x[:, 11:], s1)
    assert torch.equal(z0, z1)


def test_clipped_with_zeta_1_gamma_0_equals_attention_and_gamma_changes_it():
    plain, same = pair(softmax="clipped", gamma=0.0, zeta=1.0, gate=False)
    _, clipped = pair(softmax="clipped", gamma=-0.05, gate=False)
    x = x_of()
    with torch.no_grad():
        ref = plain(x)[0]
        torch.testing.assert_close(same(x)[0], ref, rtol=1e-12, atol=1e-12)
        assert (clipped(x)[0] - ref).abs().max() > 1e-3


def test_gamma_defaults_to_minus_alpha_over_length():
    m = seqzoo.build_mixer("quantizable_attention", D, alpha=12.0, max_seq_len=512)
    assert m.gamma == pytest.approx(-12.0 / 512) and m.zeta == 1.0
    assert seqzoo.build_mixer("quantizable_attention", D, gamma=-0.1).gamma == -0.1


def test_gate_closed_silences_heads_and_open_gate_is_vanilla():
    plain, gated = pair(softmax="vanilla", gate=True)
    x = x_of()
    with torch.no_grad():
        ref = plain(x)[0]
        torch.nn.init.zeros_(gated.gate_weight)
        assert torch.allclose(gated.gate_values(x), torch.full((2, 19, 4), 0.25, dtype=torch.float64))  # gate_init
        gated.gate_bias.fill_(-40.0)  # every gate ~ 0: the heads do nothing
        assert gated(x)[0].abs().max() < 1e-12 * ref.abs().max()
        gated.gate_bias.fill_(40.0)  # every gate ~ 1: vanilla attention
        torch.testing.assert_close(gated(x)[0], ref, rtol=1e-12, atol=1e-12)
        gated.gate_bias.copy_(torch.tensor([-40.0, 40.0, 40.0, 40.0]))  # only head 0 switched off
        q, k, v = plain.project(x, torch.zeros(2, dtype=torch.long))
        o, _ = softmax_attention(q, k, v, impl="math")
        o[:, :, 0] = 0
        torch.testing.assert_close(gated(x)[0], plain.o_proj(o.reshape(2, 19, D)), rtol=1e-10, atol=1e-12)


def test_gate_depends_on_each_tokens_own_head_slice():
    _, gated = pair(softmax="vanilla", gate=True)
    x = x_of()
    g = gated.gate_values(x)
    x2 = x.clone()
    x2[:, 5, 16:32] += 1.0  # head 1's slice of token 5 (head width 16)
    changed = (gated.gate_values(x2) - g).abs() > 0
    assert changed[:, 5, 1].all() and changed.sum() == 2


@pytest.mark.parametrize("opts", [{"softmax": "vanilla", "gate": True}, {"softmax": "clipped", "gate": False}])
def test_each_fix_alone_is_chunk_invariant(opts):
    _, m = pair(**opts)
    x = x_of(t=23)
    with torch.no_grad():
        y = m(x)[0]
        state, parts = None, []
        for a, b in ((0, 1), (1, 9), (9, 10), (10, 23)):
            out, state = m(x[:, a:b], state)
            parts.append(out)
    torch.testing.assert_close(torch.cat(parts, 1), y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("opts,match", [
    ({"softmax": "soft"}, "unknown softmax"), ({"gamma": 0.1}, "gamma <= 0"), ({"zeta": 0.9}, "zeta >= 1"),
    ({"impl": "sdpa"}, "cannot clip"), ({"gate_init": 1.0}, "gate_init"), ({"max_seq_len": 0}, "max_seq_len"),
    ({"alpha": -1.0}, "alpha"), ({"gate": "yes"}, "gate must be"), ({"impl": "flash"}, "unknown impl"),
])
def test_bad_options_are_one_line_errors(opts, match):
    with pytest.raises(SeqzooError, match=match) as err:
        seqzoo.build_mixer("quantizable_attention", D, **opts)
    assert "\n" not in str(err.value)


# -- statistics and quantisation ------------------------------------------------------------------------------------
def test_kurtosis_of_known_distributions():
    gen = torch.Generator().manual_seed(0)
    assert kurtosis(torch.randn(200_000, generator=gen)).item() == pytest.approx(3.0, abs=0.1)
    assert kurtosis(torch.rand(200_000, generator=gen)).item() == pytest.approx(1.8, abs=0.05)  # uniform: 9/5
    spiky = torch.randn(4, 10_000, generator=gen)
    spiky[:, 7] = 300.0  # one outlier channel
    k = kurtosis(spiky, dim=1)
    assert k.shape == (4,) and (k > 1000).all()


def test_fake_quant_error_bound_grid_identity_and_levels():
    gen = torch.Generator().manual_seed(1)
    lo, hi = -0.7, 2.3
    x = torch.rand(50_000, generator=gen) * (hi - lo) + lo
    scale, zero = quant_params(lo, hi, 8)
    assert scale == pytest.approx((hi - lo) / 255)
    xq = fake_quantize(x, lo, hi, 8)
    assert (xq - x).abs().max() <= scale / 2 + 1e-6
    assert torch.unique(xq).numel() <= 256
    grid = (torch.arange(256, dtype=torch.float32) - zero) * scale
    assert torch.equal(fake_quantize(grid, lo, hi, 8), grid)
    assert fake_quantize(torch.zeros(3), lo, hi).eq(0).all()  # zero is exact
    assert fake_quantize(torch.tensor([100.0, -100.0]), lo, hi).tolist() == pytest.approx([grid[-1].item(), grid[0].item()])
    # 4 bits: at most 16 levels, error bound scales with the step
    s4, _ = quant_params(lo, hi, 4)
    assert (fake_quantize(x, lo, hi, 4) - x).abs().max() <= s4 / 2 + 1e-6
    assert torch.unique(fake_quantize(x, lo, hi, 4)).numel() <= 16


def tiny_lm():
    torch.manual_seed(0)
    return CausalLM(ModelConfig(vocab_size=50, d_model=32, n_layers=2, mixer="quantizable_attention")).eval()


def test_activation_quantizer_quantizes_every_linear_input_and_restores():
    model = tiny_lm()
    ids = torch.randint(0, 50, (3, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        fp = model(ids)[0]
    quant = ActivationQuantizer(model, bits=8)
    ranges = quant.calibrate([ids])
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert {f"{n}:in" for n in linears} | {"embed:out", "blocks.0:out", "blocks.1:out"} == set(ranges)
    seen = {}
    with torch.no_grad(), quant.enabled():  # a hook added after the quantiser's sees what the layer sees
        hook = model.blocks[1].ffn.w_down.register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
        q8 = model(ids)[0]
    hook.remove()
    assert torch.unique(seen["x"]).numel() <= 256  # the linear layer saw an 8-bit tensor
    err8 = (q8 - fp).abs().max()
    assert 0 < err8 < 0.2 * fp.abs().max()
    coarse = ActivationQuantizer(model, bits=4, weight_bits=4)
    coarse.calibrate([ids])
    weight = model.blocks[0].mixer.q_proj.weight.detach().clone()
    with torch.no_grad(), coarse.enabled():
        q4 = model(ids)[0]
        assert torch.unique(model.blocks[0].mixer.q_proj.weight).numel() <= 16
    assert (q4 - fp).abs().max() > err8  # fewer bits, larger error
    assert torch.equal(model.blocks[0].mixer.q_proj.weight, weight)  # weights restored
    with torch.no_grad():
        assert torch.equal(model(ids)[0], fp)  # hooks removed


def test_outlier_probe_finds_a_planted_outlier_channel():
    model = tiny_lm()
    ids = torch.randint(0, 50, (4, 16), generator=torch.Generator().manual_seed(3))
    with OutlierProbe(model) as probe, torch.no_grad():
        out = model.blocks[0](model.embed(ids))[0]
        model(ids)
    layers = probe.per_layer()
    parts = ("", ".mixer_norm", ".mixer", ".ffn_norm", ".ffn")
    assert set(layers) == {f"blocks.{i}{p}" for i in (0, 1) for p in parts} | {"norm"}
    rows = out.reshape(4, -1)
    assert layers["blocks.0"]["max_abs"] == pytest.approx(float(rows.abs().max()))
    base = probe.summary()
    with torch.no_grad():
        model.blocks[0].ffn.w_down.weight[5] *= 500.0  # channel 5 of layer 0's FFN output explodes
    with OutlierProbe(model) as spiked, torch.no_grad():
        model(ids)
    s = spiked.summary()
    assert s["max_ffn_inf_norm"] > 20 * base["max_ffn_inf_norm"]
    assert s["max_kurtosis"] > 5 * base["max_kurtosis"] and s["max_kurtosis"] > 50
    with pytest.raises(SeqzooError, match="no forward pass"):
        OutlierProbe(model).summary()


def test_symmetric_weight_quantisation():
    w = torch.randn(40, 30, generator=torch.Generator().manual_seed(4))
    w[0, 0] = -3.0 * w.abs().max()  # the largest magnitude is negative: the grid is still symmetric around 0
    wq = fake_quantize_symmetric(w, 8)
    scale = float(w.abs().max()) / 127
    assert (wq - w).abs().max() <= scale / 2 + 1e-6
    levels = torch.round(wq / scale)
    assert torch.allclose(levels * scale, wq) and levels.min() >= -128 and levels.max() <= 127
    assert wq[0, 0] == pytest.approx(-127 * scale)  # min-max range: the extreme value is on the grid
    assert torch.equal(fake_quantize_symmetric(torch.zeros(3), 8), torch.zeros(3))
    assert torch.unique(fake_quantize_symmetric(w, 3)).numel() <= 8


def test_running_min_max_ranges_and_linear_outputs():
    model = tiny_lm()
    gen = torch.Generator().manual_seed(5)
    batches = [torch.randint(0, 50, (2, 10), generator=gen) for _ in range(3)]
    seen = []
    hook = model.blocks[0].ffn.register_forward_hook(lambda m, a, out: seen.append((float(out.min()), float(out.max()))))
    quant = ActivationQuantizer(model, momentum=0.9, linear_outputs=True)
    ranges = quant.calibrate(batches)
    hook.remove()
    lo, hi = seen[0]
    for b_lo, b_hi in seen[1:]:  # lo <- 0.9 lo + 0.1 min(x), hi likewise
        lo, hi = 0.9 * lo + 0.1 * b_lo, 0.9 * hi + 0.1 * b_hi
    assert ranges["blocks.0.ffn.w_down:out"] == pytest.approx((lo, hi))
    assert ranges["blocks.0.ffn.w_down:out"] != pytest.approx((min(s[0] for s in seen), max(s[1] for s in seen)))
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert {f"{n}:out" for n in linears} <= set(ranges)
    with pytest.raises(SeqzooError, match="momentum"):
        ActivationQuantizer(model, momentum=1.0)


def test_repro_model_and_data_follow_the_paper_setup():
    from seqzoo.repro.quantizable import BOS, QUICK, build_model, load_data

    model = build_model("gated", QUICK)
    norms = [m for m in model.modules() if isinstance(m, (torch.nn.LayerNorm, torch.nn.RMSNorm))]
    assert norms and all(isinstance(m, torch.nn.LayerNorm) for m in norms)  # LayerNorm with a bias everywhere
    assert all(m.bias is not None for m in norms) and model.blocks[0].mixer.q_proj.bias is not None
    assert model.blocks[0].mixer.gate and model.blocks[0].mixer.softmax == "vanilla"
    from seqzoo.train import param_groups
    decayed = {id(p) for g in param_groups(model, lr=1e-3, weight_decay=0.1) if g["weight_decay"] > 0 for p in g["params"]}
    assert all(id(m.weight) in decayed and id(m.bias) not in decayed for m in norms)  # the paper's wd on LN gamma
    data = load_data(QUICK)
    batch = data.get_batch("train", 7, 3)
    assert batch["inputs"].shape == batch["targets"].shape == (3, QUICK.seq_len)
    assert (batch["inputs"][:, 0] == BOS).all() and (batch["inputs"][:, 1:] != BOS).all()
    assert torch.equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])  # targets are the next bytes


def test_repro_quick_runs():
    from seqzoo.repro import get_repro

    result = get_repro("quantizable").run(True)
    assert len(result.checks) == 9
    stats = result.details["stats"]
    assert set(stats) == {"vanilla", "clipped", "gated"}
    for s in stats.values():
        assert math.isfinite(s["fp_loss"]) and math.isfinite(s["w8a8_loss"]) and s["max_inf_norm"] > 0
    assert [p["step"] for p in stats["vanilla"]["curve"]] == [2, 4]
