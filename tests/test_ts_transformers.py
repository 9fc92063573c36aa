"""Property tests of the transformer forecasters: Informer, Autoformer, iTransformer and their shared layers.

Each test checks a property of the mechanism that an obvious stub (a linear map, softmax attention instead of
Auto-Correlation, a per-variate model, a decomposition returning zeros) fails.
"""

from __future__ import annotations

import math

import pytest
import torch

from seqzoo.core.errors import SeqzooError
from seqzoo.mixers.attention.series_decomp import SeriesDecomposition
from seqzoo.models.timeseries import build_forecaster
from seqzoo.models.timeseries._layers import AttentionLayer, DecoderLayer, series_decomposition
from seqzoo.models.timeseries.autoformer import Autoformer
from seqzoo.models.timeseries.informer import DistilLayer, Informer
from seqzoo.models.timeseries.itransformer import ITransformer

NAMES = ("informer", "autoformer", "itransformer")


def _window(batch=2, seq_len=96, pred_len=24, n_vars=5, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(seq_len, dtype=dtype)
    x = torch.sin(2 * math.pi * t / 24)[None, :, None] + 0.5 * torch.randn(batch, seq_len, n_vars, generator=gen,
                                                                          dtype=dtype)
    x_mark = torch.rand(batch, seq_len, 4, generator=gen, dtype=dtype) - 0.5
    y_mark = torch.rand(batch, pred_len, 4, generator=gen, dtype=dtype) - 0.5
    return x, x_mark, y_mark


def _build(name, seq_len=96, pred_len=24, n_vars=5, dtype=torch.float32, **options):
    torch.manual_seed(0)
    return build_forecaster(name, seq_len=seq_len, pred_len=pred_len, n_vars=n_vars, **options).to(dtype).eval()


def _identity_projections(layer: AttentionLayer) -> None:
    with torch.no_grad():
        for proj in (layer.q_proj, layer.k_proj, layer.v_proj, layer.o_proj):
            proj.weight.copy_(torch.eye(proj.weight.shape[0]))
            proj.bias.zero_()


# -- series decomposition ------------------------------------------------------------------------------------------
def test_decomposition_reconstructs_and_extracts_the_trend():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 80, 4, generator=gen, dtype=torch.float64)
    seasonal, trend = series_decomposition(x, 25)
    torch.testing.assert_close(seasonal + trend, x, rtol=0, atol=1e-12)
    ref_seasonal, ref_trend = SeriesDecomposition(25)(x)      # the mixers' module: one definition of the block
    torch.testing.assert_close(trend, ref_trend, rtol=0, atol=0)

    # a constant series is its own trend (replicate padding, not zero padding)
    const = torch.full((1, 30, 2), 3.5, dtype=torch.float64)
    seasonal, trend = series_decomposition(const, 25)
    torch.testing.assert_close(trend, const, rtol=0, atol=1e-12)
    assert seasonal.abs().max() < 1e-12

    # a sinusoid whose period equals the window averages out: the trend is ~0 and the seasonal part is the signal;
    # a ramp is its own moving average away from the edges
    t = torch.arange(200, dtype=torch.float64)
    wave = torch.sin(2 * math.pi * t / 25)[None, :, None]
    seasonal, trend = series_decomposition(wave + 0.01 * t[None, :, None], 25)
    inner = slice(12, 188)
    torch.testing.assert_close(trend[:, inner], 0.01 * t[None, inner, None], rtol=0, atol=1e-10)
    torch.testing.assert_close(seasonal[:, inner], wave[:, inner], rtol=0, atol=1e-10)


def test_decomposition_rejects_bad_input():
    for bad, pattern in ((0, "kernel_size must be a positive int"), (2.5, "kernel_size")):
        with pytest.raises(SeqzooError, match=pattern):
            series_decomposition(torch.zeros(1, 10, 1), bad)
    with pytest.raises(SeqzooError, match=r"\[B, T, C\]"):
        series_decomposition(torch.zeros(10, 1), 5)


# -- Auto-Correlation ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("period", [24, 16, 12])
def test_autocorrelation_finds_the_period_of_a_sinusoid(period):
    d_model, length = 8, 96
    layer = AttentionLayer(d_model, 2, "autocorrelation", factor=1.0).double().eval()
    _identity_projections(layer)
    t = torch.arange(length, dtype=torch.float64)
    phases = torch.linspace(0, 2, d_model, dtype=torch.float64)
    x = torch.sin(2 * math.pi * t[:, None] / period + phases)[None].repeat(2, 1, 1)
    y = layer(x)
    delays = layer.last_info.delays
    assert delays.shape[-1] == int(math.log(length))                 # k = ⌊c ln L⌋ with c = 1
    assert (delays % period == 0).all(), f"delays {delays[0, 0].tolist()} are not multiples of {period}"
    # rolling a periodic series by whole periods and averaging with weights summing to 1 returns it exactly;
    # softmax attention (a weighted mean of the time steps) would smear the wave out
    torch.testing.assert_close(y, x, rtol=0, atol=1e-10)

    full = AttentionLayer(d_model, 2, "full").double().eval()
    _identity_projections(full)
    assert not torch.allclose(full(x), x, atol=1e-2)


# -- Autoformer ----------------------------------------------------------------------------------------------------
def test_autoformer_decoder_init_is_seasonal_and_trend_of_the_lookback():
    model = _build("autoformer", label_len=48, dtype=torch.float64)
    x, _, _ = _window(dtype=torch.float64)
    seasonal_init, trend_init = model.decoder_init(x)
    assert seasonal_init.shape == trend_init.shape == (2, 48 + 24, 5)
    seasonal, trend = series_decomposition(x, 25)
    torch.testing.assert_close(seasonal_init[:, :48], seasonal[:, -48:], rtol=0, atol=0)
    torch.testing.assert_close(trend_init[:, :48], trend[:, -48:], rtol=0, atol=0)
    assert seasonal_init[:, 48:].abs().max() == 0
    torch.testing.assert_close(trend_init[:, 48:], x.mean(1, keepdim=True).expand(-1, 24, -1), rtol=0, atol=1e-12)


def test_autoformer_output_is_seasonal_plus_accumulated_trend():
    model = _build("autoformer", d_layers=2, dtype=torch.float64)
    x, x_mark, y_mark = _window(dtype=torch.float64)
    with torch.no_grad():
        baseline = model(x, x_mark, y_mark)
        model.projection.weight.zero_()
        model.projection.bias.zero_()
        for layer in model.decoder_layers:
            layer.trend_projection.weight.zero_()
        trend_only = model(x, x_mark, y_mark)
    # with the seasonal head and every trend increment switched off, only the trend init (the lookback mean) is left
    torch.testing.assert_close(trend_only, x.mean(1, keepdim=True).expand(-1, 24, -1), rtol=0, atol=1e-12)
    assert not torch.allclose(baseline, trend_only, atol=1e-3)


def test_autoformer_encoder_uses_autocorrelation_delays():
    model = _build("autoformer", factor=3)
    x, x_mark, y_mark = _window()
    with torch.no_grad():
        model(x, x_mark, y_mark)
    info = model.encoder_layers[0].attention.last_info
    assert info.delays.shape == (2, 4, int(3 * math.log(96)))
    cross = model.decoder_layers[0].cross_attention.last_info
    assert cross.delays.shape[-1] == int(3 * math.log(48 + 24))


# -- Informer ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("length", [96, 97, 48, 7])
def test_informer_distilling_halves_the_length(length):
    layer = DistilLayer(16).eval()
    out = layer(torch.randn(2, length, 16))
    assert out.shape == (2, (length - 1) // 2 + 1, 16)


def test_informer_encoder_length_follows_the_distilling_pyramid():
    x, x_mark, _ = _window()
    for e_layers, distil, expected in ((3, True, 24), (2, True, 48), (1, True, 96), (3, False, 96)):
        model = _build("informer", e_layers=e_layers, distil=distil)
        with torch.no_grad():
            assert model.encode(x, x_mark).shape == (2, expected, 64)


@pytest.mark.parametrize("causal,len_kv", [(False, None), (True, None), (False, 20)])  # 20: cross-attention
def test_probsparse_with_all_queries_active_equals_full_attention(causal, len_kv):
    torch.manual_seed(0)
    sparse = AttentionLayer(16, 4, "probsparse", factor=1000.0, causal=causal).double().eval()
    full = AttentionLayer(16, 4, "full", causal=causal).double().eval()
    full.load_state_dict(sparse.state_dict())
    x = torch.randn(3, 40, 16, dtype=torch.float64)
    kv = None if len_kv is None else torch.randn(3, len_kv, 16, dtype=torch.float64)
    torch.testing.assert_close(sparse(x, kv), full(x, kv), rtol=1e-10, atol=1e-10)
    # with the paper's factor only u = c⌈ln L⌉ queries are active and the outputs differ
    sparse.factor = 1.0
    out = sparse(x, kv)
    assert sparse.last_info.active.shape[-1] == math.ceil(math.log(40))
    assert not torch.allclose(out, full(x, kv), atol=1e-6)


def test_informer_with_probsparse_at_u_equal_l_is_the_full_attention_informer():
    sparse = _build("informer", factor=1000.0, dtype=torch.float64)
    full = _build("informer", attention="full", dtype=torch.float64)
    full.load_state_dict(sparse.state_dict())
    x, x_mark, y_mark = _window(dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(sparse(x, x_mark, y_mark), full(x, x_mark, y_mark), rtol=1e-9, atol=1e-9)
        sparse_small = _build("informer", factor=1.0, dtype=torch.float64)
        sparse_small.load_state_dict(sparse.state_dict())
        assert not torch.allclose(sparse_small(x, x_mark, y_mark), full(x, x_mark, y_mark), atol=1e-6)


def test_informer_decoder_input_is_start_token_and_zero_placeholder():
    model = _build("informer", label_len=30)
    x, _, _ = _window()
    dec = model.decoder_input(x)
    assert dec.shape == (2, 30 + 24, 5)
    torch.testing.assert_close(dec[:, :30], x[:, -30:], rtol=0, atol=0)
    assert dec[:, 30:].abs().max() == 0


@pytest.mark.parametrize("kind,factor", [("full", 5.0), ("probsparse", 1000.0)])
def test_informer_decoder_self_attention_is_masked(kind, factor):
    torch.manual_seed(0)
    attn = lambda causal: AttentionLayer(16, 4, kind, factor=factor, causal=causal, dropout=0.0)  # noqa: E731
    layer = DecoderLayer(attn(True), attn(False), 16, 32, dropout=0.0).double().eval()
    x = torch.randn(2, 30, 16, dtype=torch.float64)
    memory = torch.randn(2, 12, 16, dtype=torch.float64)
    changed = x.clone()
    changed[:, 20:] = torch.randn(2, 10, 16, dtype=torch.float64)
    a, b = layer(x, memory), layer(changed, memory)
    torch.testing.assert_close(a[:, :20], b[:, :20], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(a[:, 20:], b[:, 20:])


def test_informer_eval_sampling_is_fixed_and_training_sampling_is_random():
    model = _build("informer")
    x, x_mark, y_mark = _window()
    with torch.no_grad():
        torch.manual_seed(1)
        first = model(x, x_mark, y_mark)
        torch.manual_seed(2)
        torch.testing.assert_close(model(x, x_mark, y_mark), first, rtol=0, atol=0)
        model.train()
        for module in model.modules():                              # isolate the sampling from dropout
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        index = []
        for seed in (1, 2):
            torch.manual_seed(seed)
            model(x, x_mark, y_mark)
            index.append(model.encoder_layers[0].attention.last_info.sample_index.clone())
    assert not torch.equal(index[0], index[1])


# -- iTransformer --------------------------------------------------------------------------------------------------
def test_itransformer_is_permutation_equivariant_over_variates():
    model = _build("itransformer", n_vars=6, dtype=torch.float64)
    x, x_mark, y_mark = _window(n_vars=6, dtype=torch.float64)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    with torch.no_grad():
        y = model(x)
        torch.testing.assert_close(model(x[..., perm]), y[..., perm], rtol=1e-10, atol=1e-10)
        # the calendar tokens come after the variate tokens, so equivariance holds with them too
        y_marks = model(x, x_mark, y_mark)
        torch.testing.assert_close(model(x[..., perm], x_mark, y_mark), y_marks[..., perm], rtol=1e-10, atol=1e-10)
    # a temporal-token model (Informer) mixes the variates in its embedding and is not equivariant
    informer = _build("informer", n_vars=6, attention="full", dtype=torch.float64)
    with torch.no_grad():
        assert not torch.allclose(informer(x[..., perm]), informer(x)[..., perm], atol=1e-6)


def test_itransformer_variates_interact_only_through_attention():
    model = _build("itransformer", dtype=torch.float64)
    x, _, _ = _window(dtype=torch.float64)
    changed = x.clone()
    changed[..., 2] = 3 * torch.randn(2, 96, dtype=torch.float64)
    others = [0, 1, 3, 4]
    with torch.no_grad():
        assert not torch.allclose(model(x)[..., others], model(changed)[..., others], atol=1e-6)
        for layer in model.encoder_layers:                           # zero every attention output
            layer.attention.o_proj.weight.zero_()
            layer.attention.o_proj.bias.zero_()
        torch.testing.assert_close(model(x)[..., others], model(changed)[..., others], rtol=0, atol=1e-12)
        assert not torch.allclose(model(x)[..., 2], model(changed)[..., 2])


def test_itransformer_runs_on_another_number_of_variates_and_is_affine_equivariant():
    model = _build("itransformer", n_vars=5, dtype=torch.float64)
    x, _, _ = _window(n_vars=8, dtype=torch.float64)
    with torch.no_grad():
        assert model.forecast(x, None, None).shape == (2, 24, 8)    # same weights, N' = 8 variates
        x5 = x[..., :5]
        scale = torch.tensor([0.5, 2.0, 3.0, 1.0, 7.0], dtype=torch.float64)
        shift = torch.tensor([1.0, -4.0, 0.0, 10.0, 2.5], dtype=torch.float64)
        y = model(x5)
        torch.testing.assert_close(model(x5 * scale + shift), y * scale + shift, rtol=1e-4, atol=1e-4)
        raw = _build("itransformer", n_vars=5, use_norm=False, dtype=torch.float64)
        assert not torch.allclose(raw(x5 * scale + shift), raw(x5) * scale + shift, atol=1e-2)


# -- all three -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_no_batch_leakage_and_eval_determinism(name):
    model = _build(name)
    x, x_mark, y_mark = _window(batch=4)
    with torch.no_grad():
        together = model(x, x_mark, y_mark)
        torch.testing.assert_close(model(x, x_mark, y_mark), together, rtol=0, atol=0)
        for i in range(4):
            torch.testing.assert_close(model(x[i:i + 1], x_mark[i:i + 1], y_mark[i:i + 1]), together[i:i + 1],
                                       rtol=1e-5, atol=1e-5)
        other = x.clone()
        other[[0, 2]] = 4 * torch.randn(2, 96, 5)
        changed = model(other, x_mark, y_mark)
    torch.testing.assert_close(changed[[1, 3]], together[[1, 3]], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(changed[0], together[0], atol=1e-4)


@pytest.mark.parametrize("cls", [Informer, Autoformer, ITransformer])
def test_ett_recipes_come_from_the_scripts_and_build(cls):
    recipe = cls.ett_recipe
    assert {"options", "lr", "batch_size", "epochs", "patience", "source"} <= set(recipe)
    assert (recipe["lr"], recipe["batch_size"], recipe["epochs"], recipe["patience"]) == (1e-4, 32, 10, 3)
    assert "ETTh1" in recipe["source"]
    if cls is not ITransformer:
        assert recipe["options"]["label_len"] == 48 and recipe["options"]["factor"] == 3
    model = build_forecaster(cls.registry_name, seq_len=96, pred_len=96, n_vars=7, **recipe["options"])
    assert isinstance(model, cls)


@pytest.mark.parametrize("name,options,pattern", [
    ("informer", {"label_len": 97}, "label_len must be an int in"),
    ("informer", {"attention": "linear"}, "unknown attention 'linear'"),
    ("informer", {"cross_attention": "linear"}, "unknown cross_attention"),
    ("informer", {"n_heads": 5}, "n_heads"),
    ("autoformer", {"moving_avg": 0}, "moving_avg must be a positive int"),
    ("autoformer", {"dropout": 1.5}, "dropout must be a number"),
    ("itransformer", {"use_norm": "yes"}, "use_norm must be True or False"),
    ("itransformer", {"activation": "tanh"}, "unknown activation"),
])
def test_bad_options_are_one_line_errors(name, options, pattern):
    with pytest.raises(SeqzooError, match=pattern) as err:
        build_forecaster(name, seq_len=96, pred_len=24, n_vars=5, **options)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", NAMES)
def test_marks_with_the_wrong_number_of_features_are_one_line_errors(name):
    model = _build(name)
    x, x_mark, y_mark = _window()
    with pytest.raises(SeqzooError, match="n_time=4"):
        model(x, x_mark[..., :3], y_mark[..., :3])


def _tslib_param_count(name: str, d: int, d_ff: int, c: int, n_time: int, seq_len: int, pred_len: int,
                       e_layers: int, d_layers: int) -> int:
    """Parameters of the TSLib model of the same configuration, counted layer by layer from its modules."""
    linear = lambda i, o, bias=True: i * o + (o if bias else 0)  # noqa: E731
    attention = 4 * linear(d, d)
    norm = 2 * d
    if name == "itransformer":
        layer = attention + linear(d, d_ff) + linear(d_ff, d) + 2 * norm
        return linear(seq_len, d) + e_layers * layer + norm + linear(d, pred_len)
    embedding = 3 * c * d + n_time * d                                      # token conv (no bias) + timeF
    if name == "informer":
        ffn = linear(d, d_ff) + linear(d_ff, d)
        encoder = e_layers * (attention + ffn + 2 * norm) + (e_layers - 1) * (3 * d * d + d + 2 * d) + norm
        decoder = d_layers * (2 * attention + ffn + 3 * norm) + norm + linear(d, c)
        return 2 * embedding + encoder + decoder
    ffn = linear(d, d_ff, False) + linear(d_ff, d, False)                  # Autoformer: bias-free FFN
    encoder = e_layers * (attention + ffn) + norm
    decoder = d_layers * (2 * attention + ffn + 3 * d * c) + norm + linear(d, c)
    return 2 * embedding + encoder + decoder


@pytest.mark.parametrize("cls", [Informer, Autoformer, ITransformer])
def test_recipe_models_have_the_tslib_architecture_size(cls):
    options = cls.ett_recipe["options"]
    model = build_forecaster(cls.registry_name, seq_len=96, pred_len=96, n_vars=7, **options)
    expected = _tslib_param_count(cls.registry_name, options["d_model"], options["d_ff"], 7, 4, 96, 96,
                                  options["e_layers"], options.get("d_layers", 0))
    assert sum(p.numel() for p in model.parameters()) == expected
