"""DLinear and RLinear (mechanism properties a stub fails) and the TSLib training loop (fit_forecaster /
evaluate_forecaster: lr schedule, early stopping, best-weights restore, aux loss, determinism, every window scored)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from seqzoo.core.errors import SeqzooError
from seqzoo.models.timeseries.base import Forecaster
from seqzoo.models.timeseries.dlinear import DLinear
from seqzoo.models.timeseries.rlinear import RLinear, RevIN
from seqzoo.tasks.timeseries.data import load_forecast_data
from seqzoo.tasks.timeseries.metrics import mae, mse
from seqzoo.tasks.timeseries.training import (EarlyStopping, check_recipe, evaluate_forecaster, fit_forecaster,
                                              type1_lr)


def _reference_moving_average(x: np.ndarray, k: int) -> np.ndarray:
    """Edge-replicated moving average along axis 1, written as an explicit loop."""
    front, back = (k - 1) // 2, k // 2
    padded = np.concatenate([np.repeat(x[:, :1], front, 1), x, np.repeat(x[:, -1:], back, 1)], axis=1)
    return np.stack([padded[:, t:t + k].mean(1) for t in range(x.shape[1])], axis=1)


def test_dlinear_decomposition_sums_back_and_matches_a_moving_average():
    model = DLinear(seq_len=48, pred_len=12, n_vars=3, moving_avg=25)
    x = torch.randn(2, 48, 3, dtype=torch.float64)
    seasonal, trend = model.decompose(x)
    torch.testing.assert_close(seasonal + trend, x)
    np.testing.assert_allclose(trend.numpy(), _reference_moving_average(x.numpy(), 25), rtol=1e-10, atol=1e-12)
    const = torch.full((1, 48, 2), 3.5, dtype=torch.float64)
    assert torch.allclose(DLinear(48, 12, 2).decompose(const)[0], torch.zeros_like(const))


def test_dlinear_forward_equals_the_two_linear_maps():
    torch.manual_seed(1)
    model = DLinear(seq_len=32, pred_len=8, n_vars=4).double()
    for p in model.parameters():
        nn.init.normal_(p)
    x = torch.randn(3, 32, 4, dtype=torch.float64)
    trend = torch.from_numpy(_reference_moving_average(x.numpy(), 25))
    ws, bs = model.seasonal[0].weight, model.seasonal[0].bias
    wt, bt = model.trend[0].weight, model.trend[0].bias
    expected = torch.einsum("hl,blc->bhc", ws, x - trend) + bs[:, None] + torch.einsum("hl,blc->bhc", wt, trend) \
        + bt[:, None]
    torch.testing.assert_close(model(x), expected)


def test_dlinear_init_and_individual_heads():
    model = DLinear(seq_len=24, pred_len=6, n_vars=2)
    assert torch.allclose(model.seasonal[0].weight, torch.full((6, 24), 1 / 24))
    assert torch.allclose(model.trend[0].weight, torch.full((6, 24), 1 / 24))
    ind = DLinear(seq_len=24, pred_len=6, n_vars=3, individual=True).eval()
    x = torch.randn(2, 24, 3)
    before = ind(x)
    with torch.no_grad():
        ind.seasonal[1].weight.add_(1.0)
    after = ind(x)
    assert torch.equal(before[..., [0, 2]], after[..., [0, 2]]) and not torch.allclose(before[..., 1], after[..., 1])
    with pytest.raises(SeqzooError, match="kernel_size"):
        DLinear(24, 6, 2, moving_avg=0)


def _trained_rlinear(n_vars=3):
    torch.manual_seed(0)
    model = RLinear(seq_len=40, pred_len=10, n_vars=n_vars)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))         # move the affine RevIN and the map away from their init
    return model.eval()


def test_rlinear_is_shift_and_scale_equivariant_per_variate():
    model = _trained_rlinear()
    x = torch.randn(4, 40, 3, dtype=torch.float64)
    model = model.double()
    y = model(x)
    shift = torch.tensor([5.0, -20.0, 0.5], dtype=torch.float64)
    torch.testing.assert_close(model(x + shift), y + shift, rtol=1e-6, atol=1e-6)
    scale = torch.tensor([3.0, 0.5, 10.0], dtype=torch.float64)
    torch.testing.assert_close(model(x * scale), y * scale, rtol=1e-4, atol=1e-4)   # up to RevIN's ε
    assert not torch.allclose(y, torch.zeros_like(y))


def test_rlinear_without_revin_is_not_shift_equivariant_and_revin_round_trips():
    plain = RLinear(seq_len=40, pred_len=10, n_vars=2, revin=False).eval()
    x = torch.randn(2, 40, 2)
    assert not torch.allclose(plain(x + 10.0), plain(x) + 10.0, atol=1e-3)
    norm = RevIN(2)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([2.0, 0.7]))
        norm.bias.copy_(torch.tensor([0.3, -1.0]))
    z, stats = norm.normalize(x)
    mean, std = x.mean(1, keepdim=True), torch.sqrt(x.var(1, keepdim=True, unbiased=False) + 1e-5)
    torch.testing.assert_close(z, (x - mean) / std * norm.weight + norm.bias)
    torch.testing.assert_close(norm.denormalize(z, stats), x, rtol=1e-5, atol=1e-5)


def test_recipes_are_complete_and_build():
    for cls in (DLinear, RLinear):
        recipe = check_recipe(cls.ett_recipe)
        assert recipe["source"] and recipe["cpu_feasible"] is True
        cls(seq_len=96, pred_len=96, n_vars=7, **recipe["options"])
    assert (DLinear.ett_recipe["lr"], DLinear.ett_recipe["batch_size"]) == (1e-4, 32)
    assert RLinear.ett_recipe["options"]["affine"] is True
    with pytest.raises(SeqzooError, match="lr"):
        check_recipe({"lr": -1})
    with pytest.raises(SeqzooError, match="lradj"):
        check_recipe({"lradj": "cosine-ish"})


def test_type1_schedule_and_early_stopping():
    assert [type1_lr(1.0, e) for e in range(4)] == [1.0, 1.0, 0.5, 0.25]
    stop = EarlyStopping(patience=2)
    assert [stop.step(v) for v in (1.0, 0.9, 0.9)] == [True, True, False]   # equal is not an improvement
    assert not stop.stop and stop.step(0.95) is False and stop.stop


def _csv(tmp_path, rows=700):
    t = np.arange(rows)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"date": pd.date_range("2020-01-01", periods=rows, freq="h"),
                          "a": np.sin(2 * np.pi * t / 24) + 0.1 * rng.standard_normal(rows),
                          "OT": np.cos(2 * np.pi * t / 12) + 0.1 * rng.standard_normal(rows)})
    frame.to_csv(tmp_path / "s.csv", index=False)
    return tmp_path / "s.csv"


def test_fit_is_deterministic_learns_and_restores_the_best_weights(tmp_path):
    data = load_forecast_data(_csv(tmp_path), seq_len=48, pred_len=12)
    recipe = {"lr": 0.01, "batch_size": 16, "epochs": 4, "patience": 2}
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = RLinear(48, 12, 2)
        before = evaluate_forecaster(model, data.loader("val", 16))["mse"]
        history = fit_forecaster(model, data, recipe, seed=5)
        runs.append((model, history))
    (m1, h1), (m2, h2) = runs
    assert h1["val_mse"] == h2["val_mse"]
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    assert h1["best_val_mse"] < before and h1["lr"][:3] == [0.01, 0.01, 0.005]
    assert evaluate_forecaster(m1, data.loader("val", 7))["mse"] == pytest.approx(h1["best_val_mse"], rel=1e-6)


class _AuxOnly(Forecaster):
    """Predicts zeros plus a learnable constant; its aux loss pulls ``q`` towards 3."""

    def __init__(self, seq_len, pred_len, n_vars, n_time=4):
        super().__init__(seq_len, pred_len, n_vars, n_time)
        self.c = nn.Parameter(torch.zeros(()))
        self.q = nn.Parameter(torch.zeros(()))

    def forecast(self, x, x_mark, y_mark):
        self.aux_loss = (self.q - 3.0) ** 2
        return x.new_zeros(x.shape[0], self.pred_len, self.n_vars) + self.c


def test_fit_adds_the_models_aux_loss(tmp_path):
    data = load_forecast_data(_csv(tmp_path), seq_len=24, pred_len=6, features="MS")
    model = _AuxOnly(24, 6, 2)
    fit_forecaster(model, data, {"lr": 0.05, "batch_size": 32, "epochs": 3, "patience": 3}, seed=0)
    assert model.q.item() > 0.5


def test_evaluate_scores_every_window_exactly(tmp_path):
    data = load_forecast_data(_csv(tmp_path), seq_len=48, pred_len=12)
    model = DLinear(48, 12, 2).eval()
    result = evaluate_forecaster(model, data.loader("test", 9))
    x, y, xm, ym = data.gather(data.starts("test"))
    with torch.no_grad():
        pred = model(x, xm, ym)
    assert result["windows"] == data.num_windows("test") == x.shape[0]
    assert result["mse"] == pytest.approx(mse(pred, y), rel=1e-6)
    assert result["mae"] == pytest.approx(mae(pred, y), rel=1e-6)
    assert mse(np.array([1.0, 3.0]), np.array([0.0, 0.0])) == 5.0
    with pytest.raises(SeqzooError, match="does not match"):
        mse(np.zeros(3), np.zeros(4))
