"""TEMPO, AutoTimes and their LM backbone (seqzoo/models/timeseries/{tempo,autotimes,lm_backbone}.py)."""

import json
import math
from datetime import datetime

import pytest
import torch
import torch.nn.functional as F

from seqzoo.core.config import to_dict
from seqzoo.core.errors import SeqzooError
from seqzoo.models import CausalLM
from seqzoo.models.config import ModelConfig
from seqzoo.models.hf_gpt2 import GPT2, GPT2Config
from seqzoo.models.timeseries import build_forecaster
from seqzoo.models.timeseries.autotimes import timef_to_text
from seqzoo.models.timeseries.lm_backbone import load_lm_backbone
from seqzoo.models.timeseries.tempo import PromptPool, decompose, seasonal_component
from seqzoo.train.checkpoint import save_checkpoint

TINY_LM = ModelConfig(d_model=32, n_layers=2, mixer="attention", mixer_options={"attention": {"n_heads": 2}})


def seqzoo_checkpoint(tmp_path):
    torch.manual_seed(3)
    lm = CausalLM(TINY_LM)
    path = tmp_path / "lm" / "step_000001"
    save_checkpoint(path, model=lm, step=1, config={"model": to_dict(TINY_LM)})
    return lm, path


def gpt2_directory(tmp_path):
    """A random GPT-2 written in Hugging Face's layout (Conv1D weights transposed back to [in, out])."""
    torch.manual_seed(4)
    cfg = GPT2Config(vocab_size=40, n_positions=64, n_embd=16, n_layer=2, n_head=2)
    model = GPT2(cfg)
    sd = {}
    for k, v in model.state_dict().items():
        conv = k.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))
        sd["transformer." + k] = (v.t() if conv else v).contiguous()
    directory = tmp_path / "gpt2"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"model_type": "gpt2", "vocab_size": 40, "n_positions": 64,
                                                      "n_embd": 16, "n_layer": 2, "n_head": 2}))
    torch.save(sd, directory / "pytorch_model.bin")
    return model, directory


# -- LM backbone ----------------------------------------------------------------------------------------------------
def test_backbone_from_seqzoo_checkpoint_reproduces_the_lm(tmp_path):
    lm, path = seqzoo_checkpoint(tmp_path)
    backbone = load_lm_backbone(path)
    ids = torch.randint(0, 256, (2, 9))
    hidden, _ = backbone(backbone.embed_tokens(ids))
    logits, _ = lm(ids)
    torch.testing.assert_close(backbone.lm.head(hidden), logits)
    assert backbone.encode_text("Hé") == list("Hé".encode())
    # the run directory (with its ``latest`` file) works too
    (tmp_path / "lm" / "latest").write_text("step_000001\n")
    assert load_lm_backbone(tmp_path / "lm").d_model == 32


def test_backbone_from_gpt2_directory_and_state_threading(tmp_path):
    model, directory = gpt2_directory(tmp_path)
    backbone = load_lm_backbone(directory).double()
    assert backbone.is_gpt2 and backbone.d_model == 16
    e = torch.randn(2, 7, 16, dtype=torch.float64)
    full, _ = backbone(e)
    a, state = backbone(e[:, :3])
    b, _ = backbone(e[:, 3:], state)
    torch.testing.assert_close(torch.cat([a, b], 1), full, rtol=1e-10, atol=1e-10)
    ids = torch.randint(0, 40, (1, 5))
    torch.testing.assert_close(backbone(backbone.embed_tokens(ids))[0], model.double()(ids)[0])


def test_backbone_bad_paths_are_one_line_errors(tmp_path):
    for bad, match in ((tmp_path / "missing", "not a directory"), (tmp_path, "neither config.json")):
        with pytest.raises(SeqzooError, match=match) as e:
            load_lm_backbone(bad)
        assert "\n" not in str(e.value)
    with pytest.raises(SeqzooError, match="lm_layers"):
        load_lm_backbone(None).truncate(5)


# -- TEMPO ----------------------------------------------------------------------------------------------------------
def test_decomposition_sums_to_input_and_recovers_a_season():
    x = torch.randn(3, 96, 4, dtype=torch.float64).cumsum(1)
    trend, seasonal, residual = decompose(x, trend_kernel=25, period=24)
    torch.testing.assert_close(trend + seasonal + residual, x, rtol=0, atol=1e-12)
    # the seasonal part of an exactly periodic zero-mean signal is the signal itself
    t = torch.arange(96, dtype=torch.float64)
    season = (torch.sin(2 * math.pi * t / 24) + 0.3 * torch.cos(2 * math.pi * t / 8))[None, :, None]
    torch.testing.assert_close(seasonal_component(season, 24), season, rtol=0, atol=1e-12)
    # a linear trend is exact away from the padded ends
    line = (0.5 * t - 3)[None, :, None]
    torch.testing.assert_close(decompose(line, 25, 24)[0][:, 12:-12], line[:, 12:-12], rtol=0, atol=1e-12)


def test_prompt_pool_picks_the_key_nearest_the_query():
    pool = PromptPool(pool_size=6, prompt_len=2, d_model=8, top_k=2).double()
    query = 3.0 * pool.keys.detach()[[4, 1]] + 0.01 * torch.randn(2, 8, dtype=torch.float64)
    prompts, idx, loss = pool.select(query)
    assert idx[:, 0].tolist() == [4, 1]
    brute = torch.tensor([[F.cosine_similarity(q, k, dim=0) for k in pool.keys.detach()] for q in query])
    assert idx.tolist() == brute.topk(2, dim=-1).indices.tolist()
    torch.testing.assert_close(prompts[0, :2], pool.prompts[4])
    torch.testing.assert_close(loss, 1 - brute.topk(2, dim=-1).values.mean())
    single = PromptPool(pool_size=1, prompt_len=3, d_model=8, top_k=1)
    assert single.select(torch.randn(5, 8))[1].eq(0).all()


def test_tempo_forecast_is_sum_of_components_and_lm_frozen_except_norms():
    model = build_forecaster("tempo", seq_len=48, pred_len=12, n_vars=2, patch_len=8, stride=4, pool_size=5,
                             top_k=2, period=12, trend_kernel=13)
    x = torch.randn(2, 48, 2)
    y = model(x)
    parts = model.component_forecasts(x)
    torch.testing.assert_close(y, parts["trend"] + parts["seasonal"] + parts["residual"])
    (y.square().mean() + model.aux_loss).backward()
    for name, p in model.backbone.named_parameters():
        is_norm = "norm" in name or ".ln_" in name
        assert p.requires_grad == is_norm, name
        assert (p.grad is not None) == is_norm, name
    assert model.pool.keys.grad is not None and model.pool.prompts.grad is not None
    assert all(p.grad is not None for p in model.embeds.parameters())


def test_tempo_uses_the_selected_prompts_and_ablation_runs():
    model = build_forecaster("tempo", seq_len=48, pred_len=12, n_vars=1, patch_len=8, stride=4, pool_size=4,
                             top_k=1, period=12).eval()
    x = torch.randn(2, 48, 1)
    before = model(x)
    with torch.no_grad():
        model.pool.prompts.add_(1.0)
    assert (model(x) - before).abs().max() > 1e-5
    ablation = build_forecaster("tempo", seq_len=48, pred_len=12, n_vars=1, patch_len=8, stride=4,
                                use_prompts=False)
    assert ablation(x).shape == (2, 12, 1) and ablation.aux_loss is None


# -- AutoTimes ------------------------------------------------------------------------------------------------------
def small_autotimes(**kw):
    opts = dict(token_len=8, mlp_hidden=16)
    opts.update(kw)
    return build_forecaster("autotimes", seq_len=32, pred_len=20, n_vars=2, **opts)


def test_autotimes_lm_frozen_and_only_segment_mlps_train():
    model = small_autotimes()
    x = torch.randn(2, 32, 2)
    y = model(x, torch.rand(2, 32, 4) - 0.5, torch.rand(2, 20, 4) - 0.5)
    (y.square().mean() + model.aux_loss).backward()
    assert all(p.grad is None and not p.requires_grad for p in model.backbone.parameters())
    s, h, d = 8, 16, model.backbone.d_model
    mlp = lambda a, b: a * h + h + h * h + h + h * b + b      # noqa: E731  (2 hidden layers)
    assert sum(p.numel() for p in model.trainable_parameters()) == mlp(s, d) + mlp(d, s) + 1
    assert all(p.grad is not None for p in model.trainable_parameters())


def test_autotimes_next_segment_is_causal_and_aligned():
    model = small_autotimes(revin=False).double()
    segments = torch.randn(3, 5, 8, dtype=torch.float64)
    embeds = model.embed_segments(segments, None)
    pred, _ = model.predict_next(embeds)
    changed = segments.clone()
    changed[:, 3:] += 1.0
    pred2, _ = model.predict_next(model.embed_segments(changed, None))
    torch.testing.assert_close(pred[:, :3], pred2[:, :3], rtol=1e-12, atol=1e-12)
    assert (pred[:, 3:] - pred2[:, 3:]).abs().max() > 1e-8
    # aux_loss compares the output at segment i with segment i + 1 (not i)
    series = torch.randn(1, 32, 2, dtype=torch.float64)
    model(series)
    segs = series.transpose(1, 2).reshape(2, 4, 8)
    ctx, _ = model.predict_next(model.embed_segments(segs, None))
    torch.testing.assert_close(model.aux_loss, F.mse_loss(ctx[:, :-1], segs[:, 1:]))


def test_autotimes_cached_rollout_equals_recomputation():
    model = small_autotimes(revin=False).double()
    context = torch.randn(2, 4, 8, dtype=torch.float64)
    pred, _ = model.rollout(model.embed_segments(context, None), n_steps=5)
    full = torch.cat([context, pred[:, :-1]], dim=1)
    recomputed, _ = model.predict_next(model.embed_segments(full, None))
    torch.testing.assert_close(recomputed[:, 3:], pred, rtol=1e-10, atol=1e-10)
    x = torch.randn(1, 32, 2, dtype=torch.float64)
    torch.testing.assert_close(model.forecast_horizon(x, 37)[:, :20], model(x))


def test_autotimes_timestamps_and_in_context_prompt():
    stamp = datetime(2016, 7, 1, 0)   # ETTh1's first row, a Friday
    mark = [stamp.hour / 23 - 0.5, stamp.weekday() / 6 - 0.5, (stamp.day - 1) / 30 - 0.5,
            (stamp.timetuple().tm_yday - 1) / 365 - 0.5]
    assert timef_to_text(mark) == "Fri Jul 01 00:00"
    model = small_autotimes().eval()
    x = torch.randn(2, 32, 2)
    xm, ym = torch.rand(2, 32, 4) - 0.5, torch.rand(2, 20, 4) - 0.5
    with torch.no_grad():
        plain, stamped = model(x), model(x, xm, ym)
        assert (plain - stamped).abs().max() > 1e-6
        n_texts = len(model._text_cache)
        model(x, xm, ym)
        assert len(model._text_cache) == n_texts > 0          # cached, not recomputed
        prompted = model.forecast_in_context(torch.randn(2, 24, 2), x)
        assert prompted.shape == plain.shape and (prompted - plain).abs().max() > 1e-6
    with pytest.raises(SeqzooError, match="shorter than one segment"):
        model.forecast_in_context(torch.randn(2, 4, 2), x)
