"""TSM2, SpaceTime and Aaren forecasters (seqzoo/models/timeseries/{tsm2,spacetime,aaren}.py): mechanism properties."""

import math

import pytest
import torch
import torch.nn.functional as F

from seqzoo.core.errors import SeqzooError
from seqzoo.models.timeseries import build_forecaster
from seqzoo.models.timeseries.aaren import AarenForecaster
from seqzoo.models.timeseries.spacetime import SpaceTimeForecaster
from seqzoo.models.timeseries.tsm2 import TSM2


# -- TSM2 -----------------------------------------------------------------------------------------------------------
def small_tsm2(**kw):
    opts = dict(d_model=16, n_layers=2, patch_len=8, stride=4, d_state=4, dropout=0.0)
    opts.update(kw)
    return build_forecaster("tsm2", seq_len=32, pred_len=8, n_vars=3, **opts).double().eval()


def test_tsm2_time_mixer_is_causal_over_patches():
    """Changing the last time step changes only the patches that contain it (the last two with stride 4 and the
    end padding); every earlier patch's features are untouched, through all layers and the variate mixers."""
    model = small_tsm2()
    x = torch.randn(2, 32, 3, dtype=torch.float64)
    x2 = x.clone()
    x2[:, -1] += 5.0
    h1, h2 = model.encode(x), model.encode(x2)                       # [B, C, P, d], P = 8
    assert model.n_patches == 8
    torch.testing.assert_close(h1[:, :, :6], h2[:, :, :6], rtol=1e-12, atol=1e-12)
    assert (h1[:, :, 6:] - h2[:, :, 6:]).abs().max() > 1e-3


def test_tsm2_variate_mixer_mixes_variates_and_ablation_does_not():
    x = torch.randn(2, 32, 3, dtype=torch.float64)
    x2 = x.clone()
    x2[:, :, 0] = torch.randn(2, 32, dtype=torch.float64)
    mixed = small_tsm2()
    assert (mixed(x)[..., 1:] - mixed(x2)[..., 1:]).abs().max() > 1e-4
    independent = small_tsm2(variate_mixer=False)
    torch.testing.assert_close(independent(x)[..., 1:], independent(x2)[..., 1:], rtol=1e-12, atol=1e-12)


def test_tsm2_weighted_averages_reach_every_earlier_feature():
    """Each sub-block reads a learnable average of all earlier features: the weight of the embedding (f_0) in the
    head's average changes the forecast, and the last average has 2·n_layers + 1 weights."""
    model = small_tsm2()
    assert [w.numel() for w in model.average_weights] == [1, 2, 3, 4, 5]
    x = torch.randn(2, 32, 3, dtype=torch.float64)
    before = model(x)
    with torch.no_grad():
        model.average_weights[-1][0] += 1.0
    assert (model(x) - before).abs().max() > 1e-6


def test_tsm2_bad_options():
    with pytest.raises(SeqzooError, match="patch_len"):
        build_forecaster("tsm2", seq_len=8, pred_len=4, n_vars=2, patch_len=40, stride=4)


# -- SpaceTime ------------------------------------------------------------------------------------------------------
R, OMEGA = 0.98, 2 * math.pi / 16
PHI = (2 * R * math.cos(OMEGA), -R * R)          # a stable, slowly decaying oscillation: an AR(2) recursion


def ar2_batch(n, length, horizon, gen):
    x = torch.zeros(n, length + horizon)
    x[:, :2] = torch.randn(n, 2, generator=gen)
    for t in range(2, length + horizon):
        x[:, t] = PHI[0] * x[:, t - 1] + PHI[1] * x[:, t - 2]
    return x[:, :length, None], x[:, length:, None]


def test_spacetime_closed_loop_fits_ar2_recursion():
    """After a short fit on AR(2) windows (random initial conditions), the closed-loop forecast continues the true
    recursion: relative MSE far below that of the last-value (≈ 2) or zero (1) forecasts."""
    torch.manual_seed(0)
    length, horizon = 32, 16
    model = build_forecaster("spacetime", seq_len=length, pred_len=horizon, n_vars=1, d_model=4, n_layers=0,
                             d_state=4, decoder_norm=False, norm="none")
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    gen = torch.Generator().manual_seed(1)
    for _ in range(150):
        x, y = ar2_batch(32, length, horizon, gen)
        loss = F.mse_loss(model(x), y) + model.aux_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = ar2_batch(128, length, horizon, torch.Generator().manual_seed(99))
    with torch.no_grad():
        rel = ((model(x) - y) ** 2).mean() / (y ** 2).mean()
    assert rel < 0.1, rel


def test_spacetime_one_model_any_horizon():
    """The closed loop is one recursion: a longer forecast extends a shorter one (a direct multi-horizon head
    would not)."""
    model = build_forecaster("spacetime", seq_len=24, pred_len=6, n_vars=2, d_model=8, n_layers=1, d_state=8).double()
    with torch.no_grad():
        for layer in [model.decoder]:
            layer.k.normal_(0, 0.2)             # a non-trivial closed loop
    x = torch.randn(3, 24, 2, dtype=torch.float64)
    short, long = model.forecast_horizon(x, 5), model.forecast_horizon(x, 40)
    torch.testing.assert_close(long[:, :5], short, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model(x), model.forecast_horizon(x, 6))


def test_spacetime_aux_loss_is_decoder_next_input_error():
    model = build_forecaster("spacetime", seq_len=16, pred_len=4, n_vars=2, d_model=8, n_layers=1, d_state=4,
                             next_input_weight=0.5).double()
    with torch.no_grad():
        model.decoder.k.normal_(0, 0.3)
    x = torch.randn(2, 16, 2, dtype=torch.float64)
    model(x)
    v = model._encode((x - x[:, -1:]).transpose(1, 2).reshape(4, 16, 1))
    _, u_hat, _ = model.decoder.next_inputs(v)
    torch.testing.assert_close(model.aux_loss, 0.5 * F.mse_loss(u_hat[:, :-1], v[:, 1:]))


def test_spacetime_bad_options():
    with pytest.raises(SeqzooError, match="norm"):
        build_forecaster("spacetime", seq_len=8, pred_len=4, n_vars=1, norm="zscore")
    with pytest.raises(SeqzooError, match="closed_loop_impl"):
        build_forecaster("spacetime", seq_len=8, pred_len=4, n_vars=1, closed_loop_impl="cuda")


# -- Aaren ----------------------------------------------------------------------------------------------------------
def small_aaren(**kw):
    opts = dict(d_model=16, n_layers=2, n_heads=2, patch_len=4)
    opts.update(kw)
    return build_forecaster("aaren", seq_len=20, pred_len=14, n_vars=2, **opts).double().eval()


def test_aaren_rollout_equals_parallel_form():
    """Rolling out with the recurrent state gives the same patches as running the parallel prefix scan over the
    context followed by the generated patches (each output predicting the next patch)."""
    model = small_aaren(use_marks=False)
    context = torch.randn(3, 5, 4, dtype=torch.float64)
    pred, _, _ = model.rollout(context, n_steps=6)
    full = torch.cat([context, pred[:, :-1]], dim=1)
    parallel, _ = model.step(model.embed_patches(full, None))
    torch.testing.assert_close(parallel[:, 4:], pred, rtol=1e-10, atol=1e-10)
    for block in model.blocks:
        assert block.mixer.impl == "auto"


def test_aaren_rollout_memory_is_constant_and_causal():
    model = small_aaren(use_marks=False)
    context = torch.randn(2, 5, 4, dtype=torch.float64)
    sizes = []
    for steps in (1, 4, 16):
        _, _, state = model.rollout(context, n_steps=steps)
        sizes.append(sum(t.numel() for layer in state for t in layer.values()))
    assert len(set(sizes)) == 1
    # teacher-forced predictions at patch j do not depend on later patches
    changed = context.clone()
    changed[:, 3:] += 1.0
    a, _ = model.step(model.embed_patches(context, None))
    b, _ = model.step(model.embed_patches(changed, None))
    torch.testing.assert_close(a[:, :3], b[:, :3], rtol=1e-12, atol=1e-12)
    assert (a[:, 3:] - b[:, 3:]).abs().max() > 1e-6


def test_aaren_forecast_uses_future_marks_and_sets_next_patch_loss():
    model = small_aaren()
    x = torch.randn(2, 20, 2, dtype=torch.float64)
    xm, ym = torch.rand(2, 20, 4, dtype=torch.float64) - 0.5, torch.rand(2, 14, 4, dtype=torch.float64) - 0.5
    y1 = model(x, xm, ym)
    assert model.aux_loss is not None and model.aux_loss > 0
    ym2 = ym.clone()
    ym2[:, 4:] += 0.3                          # marks of horizon patches 1… (fed to rollout steps ≥ 2)
    y2 = model(x, xm, ym2)
    torch.testing.assert_close(y1[:, :8], y2[:, :8], rtol=1e-12, atol=1e-12)   # patches 0, 1 see only earlier marks
    assert (y1[:, 8:] - y2[:, 8:]).abs().max() > 1e-8
    assert isinstance(model, AarenForecaster) and not isinstance(model, (TSM2, SpaceTimeForecaster))
