"""GPHT (seqzoo/models/timeseries/gpht.py): token causality, rollout = parallel next-token output, residual
hierarchy, single-stage reduction, pretraining."""

from __future__ import annotations

import pytest
import torch

from seqzoo.core.errors import SeqzooError
from seqzoo.models.timeseries import build_forecaster
from seqzoo.models.timeseries.gpht import GPHT


def _tiny(**kw) -> GPHT:
    torch.manual_seed(0)
    opts = dict(token_len=8, pool_rates=(4, 2, 1), d_model=16, n_layers=1, n_heads=2)
    opts.update(kw)
    return build_forecaster("gpht", seq_len=32, pred_len=20, n_vars=2, **opts)


def test_causal_at_token_granularity():
    model = _tiny().double().eval()
    a = torch.randn(3, 48, dtype=torch.float64)
    b = a.clone()
    b[:, 27:] = torch.randn(3, 21, dtype=torch.float64)  # changes token 3 (points 24..31) onwards
    with torch.no_grad():
        pa, pb = model.next_tokens(model.tokenize(a)), model.next_tokens(model.tokenize(b))
    torch.testing.assert_close(pa[:, :3], pb[:, :3], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(pa[:, 3:], pb[:, 3:])


def test_one_step_rollout_equals_parallel_output_and_teacher_forcing_matches():
    model = _tiny().double().eval()
    series = torch.randn(2, 56, dtype=torch.float64)  # 7 tokens
    with torch.no_grad():
        parallel = model.next_tokens(model.tokenize(series))
        one_step = model.generate(series[:, :24], 8)
        torch.testing.assert_close(one_step, parallel[:, 2], rtol=1e-12, atol=1e-12)
        for j in range(1, 7):  # teacher-forced prefix of j tokens: its last forecast is the parallel one at j−1
            prefix = model.next_tokens(model.tokenize(series[:, : 8 * j]))
            torch.testing.assert_close(prefix[:, -1], parallel[:, j - 1], rtol=1e-12, atol=1e-12)


def test_cached_rollout_equals_recompute_from_scratch():
    model = _tiny().double().eval()
    context = torch.randn(3, 35, dtype=torch.float64)
    with torch.no_grad():
        cached = model.generate(context, 45)
        fresh = model.generate(context, 45, use_cache=False)
    torch.testing.assert_close(cached, fresh, rtol=1e-10, atol=1e-10)


def test_rollout_feeds_forecasts_back_and_covers_any_horizon():
    model = _tiny().double().eval()
    context = torch.randn(2, 32, dtype=torch.float64)
    with torch.no_grad():
        out = model.generate(context, 20)  # three tokens of 8, cut to 20
        first = model.generate(context, 8)
        second = model.generate(torch.cat([context, first], 1), 8)
    assert out.shape == (2, 20)
    torch.testing.assert_close(out[:, :8], first)
    torch.testing.assert_close(out[:, 8:16], second, rtol=1e-12, atol=1e-12)


def test_each_stage_models_the_residual_of_the_previous():
    model = _tiny().double().eval()
    tokens = model.tokenize(torch.randn(2, 40, dtype=torch.float64))
    with torch.no_grad():
        inputs, preds = model.stage_forecasts(tokens)
        total = model.next_tokens(tokens)
    torch.testing.assert_close(inputs[0], tokens)
    for s in range(1, 3):
        torch.testing.assert_close(inputs[s][:, 0], inputs[s - 1][:, 0])
        torch.testing.assert_close(inputs[s][:, 1:], inputs[s - 1][:, 1:] - preds[s - 1][:, :-1])
    torch.testing.assert_close(total, sum(preds))
    assert [st.embed.in_features for st in model.stages] == [2, 4, 8]  # pooled token widths P / r


def test_pooling_is_max_inside_each_token():
    model = _tiny(pool_rates=(4,)).double().eval()
    stage = model.stages[0]
    seen = {}
    stage.embed.register_forward_hook(lambda m, args, out: seen.update(x=args[0]))  # returns None: output kept
    tokens = torch.arange(16, dtype=torch.float64).reshape(1, 2, 8)
    with torch.no_grad():
        stage(tokens)
    torch.testing.assert_close(seen["x"], torch.tensor([[[3.0, 7.0], [11.0, 15.0]]], dtype=torch.float64))


def test_zeroing_later_stages_reduces_to_a_single_stage_model():
    model = _tiny().double().eval()
    single = _tiny(pool_rates=(4,)).double().eval()
    single.stages[0].load_state_dict(model.stages[0].state_dict())
    with torch.no_grad():
        for stage in model.stages[1:]:
            stage.head.weight.zero_()
            stage.head.bias.zero_()
        x = torch.randn(2, 32, 2, dtype=torch.float64)
        torch.testing.assert_close(model(x), single(x), rtol=1e-12, atol=1e-12)
        # and the later stages do matter once their heads are non-zero
        model.stages[2].head.bias.fill_(0.5)
        assert not torch.allclose(model(x), single(x))


def test_lookback_not_a_multiple_of_the_token_drops_the_oldest_points():
    model = _tiny().double().eval()
    x = torch.randn(1, 37, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model.generate(x, 8), model.generate(x[:, 5:], 8))


def test_channel_independence_and_scale_equivariance():
    model = _tiny().double().eval()
    x = torch.randn(2, 32, 2, dtype=torch.float64)
    with torch.no_grad():
        y = model(x)
        x2 = x.clone()
        x2[..., 0] = torch.randn(2, 32, dtype=torch.float64)
        y2 = model(x2)
        scaled = model(2.0 * x - 1.0)
    torch.testing.assert_close(y[..., 1], y2[..., 1])
    torch.testing.assert_close(scaled, 2.0 * y - 1.0, rtol=1e-4, atol=1e-4)


def test_bad_options_are_one_line_errors():
    with pytest.raises(SeqzooError, match="pool_rates"):
        _tiny(pool_rates=(3,))
    with pytest.raises(SeqzooError, match="pooling"):
        _tiny(pooling="median")
    with pytest.raises(SeqzooError, match="shorter than one token"):
        build_forecaster("gpht", seq_len=4, pred_len=4, n_vars=1, token_len=8)
    with pytest.raises(SeqzooError, match="pretrain_loss"):
        _tiny().pretrain_loss(torch.randn(2, 10))


def test_pretraining_learns_a_sine():
    torch.manual_seed(1)
    model = _tiny(d_model=32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    t = torch.arange(64, dtype=torch.float32)
    for _ in range(80):
        phase = torch.rand(16, 1) * 6.28
        loss, _ = model.pretrain_loss(torch.sin(2 * torch.pi * t / 12 + phase) + 0.05 * torch.randn(16, 64))
        opt.zero_grad()
        loss.backward()
        opt.step()
    series = torch.sin(2 * torch.pi * t / 12 + torch.rand(8, 1) * 6.28)
    with torch.no_grad():
        pred = model.eval().generate(series[:, :40], 24)
    mse = (pred - series[:, 40:]).pow(2).mean()
    naive = (series[:, 39:40] - series[:, 40:]).pow(2).mean()
    assert mse < 0.2 * naive


def test_repro_quick_mode_runs():
    from seqzoo.repro import get_repro

    result = get_repro("gpht").run(True, threads=0)
    assert sum("zero-shot" in c.name for c in result.checks) == 2
    assert {"gpht_zero_shot", "seasonal_naive", "dlinear_supervised"} <= set(result.details["ETTh1"][24])
