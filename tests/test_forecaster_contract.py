"""The forecaster contract (seqzoo/models/timeseries/base.py), applied to every registered forecaster.

A new forecaster gets these tests by registering: shapes at two window geometries, marks optional, no leakage
between rows of a batch, determinism in eval mode, gradients that reach the parameters, dependence on the input
(a constant stub fails), and one-line errors for windows of the wrong shape.
"""

from __future__ import annotations

import pytest
import torch

from seqzoo.core.errors import SeqzooError
from seqzoo.models.timeseries import build_forecaster, list_forecasters

FORECASTERS = list_forecasters()


def _inputs(batch, seq_len, pred_len, n_vars, seed=0):
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(seq_len + pred_len, dtype=torch.float32)
    season = torch.sin(2 * torch.pi * t / 24)[None, :, None]
    x_full = season + 0.3 * torch.randn(batch, seq_len + pred_len, n_vars, generator=gen)
    marks = torch.rand(batch, seq_len + pred_len, 4, generator=gen) - 0.5
    return x_full[:, :seq_len], marks[:, :seq_len], marks[:, seq_len:]


def _build(name, seq_len=96, pred_len=96, n_vars=7):
    torch.manual_seed(0)
    return build_forecaster(name, seq_len=seq_len, pred_len=pred_len, n_vars=n_vars)


def test_registry_lists_forecasters_and_rejects_unknown():
    with pytest.raises(SeqzooError, match="unknown forecaster"):
        build_forecaster("no-such-model", seq_len=8, pred_len=4, n_vars=1)
    for name in FORECASTERS:
        with pytest.raises(SeqzooError, match="unknown option"):
            build_forecaster(name, seq_len=96, pred_len=96, n_vars=7, no_such_option=1)


@pytest.mark.parametrize("name", FORECASTERS)
@pytest.mark.parametrize("geometry", [(96, 96, 7), (48, 24, 3)])
def test_shapes_with_and_without_marks(name, geometry):
    seq_len, pred_len, n_vars = geometry
    model = _build(name, seq_len, pred_len, n_vars).eval()
    x, x_mark, y_mark = _inputs(2, seq_len, pred_len, n_vars)
    with torch.no_grad():
        for y in (model(x, x_mark, y_mark), model(x)):
            assert y.shape == (2, pred_len, n_vars)
            assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", FORECASTERS)
def test_rows_of_a_batch_do_not_leak_and_eval_is_deterministic(name):
    model = _build(name).eval()
    x, x_mark, y_mark = _inputs(3, 96, 96, 7)
    with torch.no_grad():
        together = model(x, x_mark, y_mark)
        again = model(x, x_mark, y_mark)
        alone = model(x[1:2], x_mark[1:2], y_mark[1:2])
        x_other = x.clone()
        x_other[0] = 5 * torch.randn_like(x[0])
        changed = model(x_other, x_mark, y_mark)
    torch.testing.assert_close(together, again, rtol=0, atol=0)
    torch.testing.assert_close(together[1:2], alone, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(changed[1:], together[1:], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(changed[0], together[0]), "the forecast does not depend on the history"


@pytest.mark.parametrize("name", FORECASTERS)
def test_gradients_reach_the_parameters(name):
    model = _build(name).train()
    x, x_mark, y_mark = _inputs(2, 96, 96, 7)
    y = model(x, x_mark, y_mark)
    loss = (y - 1.0).pow(2).mean()
    if model.aux_loss is not None:
        loss = loss + model.aux_loss
    loss.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable, "a forecaster must have trainable parameters"
    for p in trainable:
        assert p.grad is None or torch.isfinite(p.grad).all()
    reached = sum(p.numel() for p in trainable if p.grad is not None and p.grad.abs().sum() > 0)
    total = sum(p.numel() for p in trainable)
    assert reached >= 0.5 * total, f"only {reached}/{total} trainable parameters received a gradient"


@pytest.mark.parametrize("name", FORECASTERS)
def test_wrong_window_shapes_are_one_line_errors(name):
    model = _build(name, 48, 24, 3)
    x, x_mark, y_mark = _inputs(2, 48, 24, 3)
    with pytest.raises(SeqzooError, match="expects x of shape"):
        model(x[..., :2])
    with pytest.raises(SeqzooError, match="y_mark"):
        model(x, x_mark, y_mark[:, :5])
    if not getattr(model, "any_length", False):
        with pytest.raises(SeqzooError, match="seq_len"):
            model(x[:, :40])
