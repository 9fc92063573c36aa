"""The data and models of the ``s4`` and ``aaren`` reproductions (seqzoo/repro/s4.py, seqzoo/repro/aaren.py).

The full runs are the repro commands themselves; these tests pin the pieces a wrong implementation would get
wrong: the shapes task really encodes its class in long-range pixel structure, the pooled classifier averages
per-position logits, the S4 model's SSM learning rate follows the recipe, and the forecasting inputs carry a
step-index encoding that is the same whether a series is read in one piece or as a prefix (so decoding sees the
same features as training).
"""

import numpy as np
import pytest
import torch

from seqzoo.core.errors import SeqzooError
from seqzoo.models import CausalLM
from seqzoo.repro import aaren as aaren_repro
from seqzoo.repro import s4 as s4_repro


def test_sequential_shapes_batches_are_deterministic_and_scaled():
    task = s4_repro.SequentialShapes(side=12, seed=3)
    a, b = task.get_batch("train", 5, 6), task.get_batch("train", 5, 6)
    assert torch.equal(a["inputs"], b["inputs"]) and torch.equal(a["labels"], b["labels"])
    assert a["inputs"].shape == (6, 144, 1) and a["labels"].shape == (6,)
    assert a["inputs"].min() >= -1 and a["inputs"].max() <= 1
    assert not torch.equal(task.get_batch("val", 5, 6)["inputs"], a["inputs"])
    with pytest.raises(SeqzooError, match="valid: train, val, test"):
        task.get_batch("dev", 0, 2)
    with pytest.raises(SeqzooError, match="side >= 8"):
        s4_repro.SequentialShapes(side=4)


def test_shape_classes_differ_in_row_versus_column_structure():
    """Without noise, a horizontal bar is one bright row and a vertical bar one bright column: in the flattened
    sequence the first is a run of consecutive pixels, the second pixels ``side`` steps apart."""
    task = s4_repro.SequentialShapes(side=16, noise=0.0, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(5):
        horizontal, vertical = task.draw(0, rng), task.draw(1, rng)
        horizontal, vertical = horizontal > horizontal.min(), vertical > vertical.min()
        assert horizontal.sum(1).max() > horizontal.sum(0).max()
        assert vertical.sum(0).max() > vertical.sum(1).max()


def test_pooled_classifier_averages_the_per_position_logits():
    cfgs = s4_repro.model_configs(16, 1, 4)
    torch.manual_seed(0)
    model = s4_repro.PooledClassifier(cfgs["attention"])
    x = torch.randn(3, 20, 1)
    per_position, _ = model.backbone(x)
    assert torch.allclose(model(x), per_position.mean(1), atol=1e-6)
    labels = torch.tensor([0, 1, 3])
    expected = torch.nn.functional.cross_entropy(per_position.mean(1), labels)
    assert torch.allclose(model.loss({"inputs": x, "labels": labels}), expected, atol=1e-6)


def test_pooled_classifier_encoder_lets_the_pixel_value_through():
    """The second design's bug: CausalLM's continuous adapter had a token-embedding weight (std 0.02) beside
    nn.Linear's default bias U(−1, 1), so the pixel value was ~1 % of the normalised first-layer input and no
    model learned. The encoder is now S4's plain nn.Linear(1, H) (weight and bias both U(−1, 1))."""
    torch.manual_seed(0)
    for name, cfg in s4_repro.model_configs(32, 1, 4).items():
        model = s4_repro.PooledClassifier(cfg)
        weight = model.backbone.embed.weight
        assert weight.abs().max() <= 1.0 and weight.std() > 0.3, name
        pixels = s4_repro.SequentialShapes(side=8, seed=0).get_batch("train", 0, 4)["inputs"]
        normed = model.backbone.blocks[0].mixer_norm(model.backbone.embed(pixels))
        varying = (normed - normed.mean(1, keepdim=True)).pow(2).mean().sqrt()
        assert varying > 0.2 * normed.pow(2).mean().sqrt(), name


def test_model_configs_match_sizes_and_carry_the_ssm_learning_rate():
    cfgs = s4_repro.model_configs(32, 2, 4, ssm_lr=5e-4)
    counts = {name: CausalLM(cfg).num_parameters() for name, cfg in cfgs.items()}
    assert abs(counts["s4"] / counts["attention"] - 1) <= 0.10
    s4_mixer = CausalLM(cfgs["s4"]).blocks[0].mixer
    assert s4_mixer.ssm_lr == 5e-4


def test_forecast_inputs_carry_a_prefix_consistent_step_encoding():
    task = aaren_repro.SeasonalForecast(seq_len=32, lags=4, time_features=8, seed=1)
    long = task.get_batch("val", 0, 3, length=64)
    short = task.get_batch("val", 0, 3, length=32)
    assert long["inputs"].shape == (3, 64, 12) and short["inputs"].shape == (3, 32, 12)
    # the step encoding depends on t only, so a prefix sees the same features as the whole series
    assert torch.equal(long["inputs"][:, :32, 4:], short["inputs"][:, :, 4:])
    t = torch.arange(64, dtype=torch.float64)
    assert torch.allclose(long["inputs"][0, :, 4].double(), torch.sin(t), atol=1e-6)          # j = 0: sin(t)
    assert torch.allclose(long["inputs"][0, :, 8].double(), torch.cos(t), atol=1e-6)          # j = 0: cos(t)
    # the lag window ends with the previous target
    assert torch.equal(long["inputs"][:, 1:, 3], long["targets"][:, :-1, 0])
    assert aaren_repro.SeasonalForecast(time_features=0).get_batch("train", 0, 2)["inputs"].shape[-1] == 4
    with pytest.raises(SeqzooError, match="even time_features"):
        aaren_repro.SeasonalForecast(time_features=3)


def test_aaren_training_logs_a_validation_curve():
    task = aaren_repro.SeasonalForecast(seq_len=24, lags=4, seed=0)
    cfg = aaren_repro.model_configs(16, 1, task.input_dim)["aaren"]
    model, seconds, curve = aaren_repro.train(cfg, task, steps=5, batch_size=4, lr=3e-3)
    assert [step for step, _ in curve] == [1, 2, 3, 4, 5] and all(np.isfinite(v) for _, v in curve)
    assert seconds > 0 and isinstance(model, CausalLM)
