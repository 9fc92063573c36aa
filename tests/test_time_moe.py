"""Time-MoE (seqzoo/models/timeseries/time_moe.py): labels, head schedule, cached rollout, causality, loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seqzoo.core.errors import SeqzooError
from seqzoo.models.moe import SparseMoE
from seqzoo.models.timeseries import build_forecaster
from seqzoo.models.timeseries.time_moe import TimeMoE, horizon_targets


def _tiny(**kw) -> TimeMoE:
    torch.manual_seed(0)
    opts = dict(d_model=16, n_layers=2, n_heads=2, n_experts=4, top_k=2, horizons=(1, 4, 8))
    opts.update(kw)
    return build_forecaster("time_moe", seq_len=24, pred_len=12, n_vars=3, **opts)


def test_horizon_targets_are_the_next_points_never_the_current_one():
    series = torch.arange(10, dtype=torch.float64)[None]
    targets, valid = horizon_targets(series, 3)
    assert targets.shape == valid.shape == (1, 10, 3)
    for t in range(10):
        for j in range(3):
            if t + 1 + j < 10:
                assert valid[0, t, j] and targets[0, t, j] == t + 1 + j
            else:
                assert not valid[0, t, j]


def test_pretrain_loss_is_mean_over_heads_of_masked_huber_plus_aux():
    model = _tiny().double()
    series = torch.randn(2, 11, dtype=torch.float64)
    loss, parts = model.pretrain_loss(series)
    h, _, aux = model.hidden(series)
    per_head = []
    for head, horizon in zip(model.heads, model.horizons):
        out, errs = head(h), []
        for n in range(2):
            for t in range(11):
                for j in range(horizon):
                    if t + 1 + j < 11:
                        errs.append(F.huber_loss(out[n, t, j], series[n, t + 1 + j], delta=2.0))
        per_head.append(torch.stack(errs).mean())
    expected = torch.stack(per_head).mean() + aux
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
    assert parts["aux"] > 0 and aux.item() == pytest.approx(parts["aux"])


@pytest.mark.parametrize("steps", [1, 3, 8, 12, 17, 30])
def test_schedule_uses_the_largest_fitting_head_and_emits_exactly_the_horizon(steps):
    model = _tiny()
    plan = model.schedule(steps)
    assert sum(plan) == steps  # horizons include 1, so no truncation is needed
    remaining = steps
    for horizon in plan:
        assert horizon == max(h for h in model.horizons if h <= remaining)
        remaining -= horizon
    out = model.generate(torch.randn(2, 20), steps)
    assert out.shape == (2, steps)


def test_schedule_truncates_the_smallest_head_when_nothing_fits():
    model = _tiny(horizons=(4, 8))
    assert model.schedule(3) == [4]
    assert model.schedule(13) == [8, 4, 4]
    assert model.generate(torch.randn(1, 10), 13).shape == (1, 13)


def test_cached_rollout_equals_recompute_from_scratch():
    model = _tiny().double().eval()
    context = torch.randn(3, 20, dtype=torch.float64)
    with torch.no_grad():
        cached = model.generate(context, 21)
        fresh = model.generate(context, 21, use_cache=False)
    torch.testing.assert_close(cached, fresh, rtol=1e-10, atol=1e-10)


def test_rollout_feeds_each_forecast_back_in():
    """The second chunk of a rollout equals the one-shot head output from the context extended by the first."""
    model = _tiny().double().eval()
    context = torch.randn(2, 20, dtype=torch.float64)
    with torch.no_grad():
        out = model.generate(context, 16)  # heads 8 then 8
        first = out[:, :8]
        h, _, _ = model.hidden(torch.cat([context, first], 1))
        second = model.heads[model.horizons.index(8)](h[:, -1])
    torch.testing.assert_close(out[:, 8:], second, rtol=1e-10, atol=1e-10)


def test_decoder_is_causal():
    model = _tiny().double().eval()
    a = torch.randn(2, 16, dtype=torch.float64)
    b = a.clone()
    b[:, 10:] = torch.randn(2, 6, dtype=torch.float64)
    with torch.no_grad():
        ha, _, _ = model.hidden(a)
        hb, _, _ = model.hidden(b)
    torch.testing.assert_close(ha[:, :10], hb[:, :10], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(ha[:, 10:], hb[:, 10:])


def test_channels_are_independent_and_forecasts_are_scale_equivariant():
    model = _tiny().double().eval()
    x = torch.randn(2, 24, 3, dtype=torch.float64)
    with torch.no_grad():
        y = model(x)
        solo = build_forecaster("time_moe", seq_len=24, pred_len=12, n_vars=1, d_model=16, n_layers=2, n_heads=2,
                                n_experts=4, top_k=2, horizons=(1, 4, 8)).double().eval()
        solo.load_state_dict(model.state_dict())
        y1 = solo(x[:, :, 1:2])
        shifted = model(3.0 * x + 5.0)
    torch.testing.assert_close(y[:, :, 1:2], y1, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(shifted, 3.0 * y + 5.0, rtol=1e-4, atol=1e-4)  # eps in the std


def test_architecture_pieces():
    model = _tiny()
    assert all(isinstance(b.ffn, SparseMoE) and b.ffn.shared_expert is not None for b in model.blocks)
    attn = model.blocks[0].mixer
    assert attn.q_proj.bias is not None and attn.k_proj.bias is not None and attn.v_proj.bias is not None
    assert attn.o_proj.bias is None and attn.rotary is not None
    assert [head.out_features for head in model.heads] == [1, 4, 8]
    y = model(torch.randn(2, 24, 3))
    assert y.shape == (2, 12, 3) and model.aux_loss is not None and model.aux_loss.item() > 0


def test_bad_options_are_one_line_errors():
    with pytest.raises(SeqzooError, match="horizons"):
        _tiny(horizons=(0, 4))
    with pytest.raises(SeqzooError, match="huber_delta"):
        _tiny(huber_delta=0)
    with pytest.raises(SeqzooError, match="pretrain_loss"):
        _tiny().pretrain_loss(torch.randn(4))


def test_pretraining_learns_a_sine():
    """A few dozen steps of the pretraining loss on noisy sines make the rollout beat repeating the last value."""
    torch.manual_seed(1)
    model = _tiny(d_model=32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    t = torch.arange(48, dtype=torch.float32)
    for _ in range(60):
        phase = torch.rand(16, 1) * 6.28
        series = torch.sin(2 * torch.pi * t / 12 + phase) + 0.05 * torch.randn(16, 48)
        loss, _ = model.pretrain_loss(series)
        opt.zero_grad()
        loss.backward()
        opt.step()
    phase = torch.rand(8, 1) * 6.28
    series = torch.sin(2 * torch.pi * t / 12 + phase)
    with torch.no_grad():
        pred = model.eval().generate(series[:, :36], 12)
    mse = (pred - series[:, 36:]).pow(2).mean()
    naive = (series[:, 35:36] - series[:, 36:]).pow(2).mean()
    assert mse < 0.2 * naive


def test_repro_quick_mode_runs():
    from seqzoo.repro import get_repro

    result = get_repro("time-moe").run(True, threads=0)
    names = [c.name for c in result.checks]
    assert any("test windows" in n for n in names) and sum("zero-shot" in n for n in names) == 2
    for name in ("ETTh1", "ETTh2"):
        row = result.details[name]
        expected = {"time_moe_zero_shot", "repeat_last", "seasonal_naive", "lookback_mean", "dlinear_supervised"}
        assert expected <= set(row)
    assert result.details["pretraining"]["steps"] == 3
