"""Autoformer: decomposition transformer with Auto-Correlation.

Paper: "Autoformer: Decomposition Transformers with Auto-Correlation for Long-Term Series Forecasting", Wu, Xu,
Wang and Long, NeurIPS 2021, arXiv 2106.13008. Layout as in Time-Series-Library (TSLib ``models/Autoformer.py``,
``layers/Autoformer_EncDec.py``), whose ETTh1 script gives the published L = 96 numbers.

Series decomposition (eq. 1): ``X_t = AvgPool(Padding(X))``, ``X_s = X − X_t`` (window 25, replicate padding).

Auto-Correlation (eqs. 5–7, the library's ``autocorrelation`` op): ``R(τ) = irfft(rfft(Q) ⊙ conj(rfft(K)))``
averaged over heads and channels, the top ``k = ⌊c·ln L⌋`` delays, softmax weights and
``Σ_i w_i · Roll(V, −τ_i)``. Cross-correlation with a shorter encoder output pads keys/values with zeros.

Decoder inputs (eq. 2), from the lookback ``X_en`` (length I) and ``label_len = I/2`` in TSLib:

    X_ens, X_ent = SeriesDecomp(X_en)
    X_des = Concat(X_ens[-label_len:], zeros(pred_len))          seasonal init
    X_det = Concat(X_ent[-label_len:], mean(X_en) × pred_len)    trend init

Encoder layer (eq. 3): ``S¹ = Decomp(AutoCorr(X) + X)_s``; ``S² = Decomp(FFN(S¹) + S¹)_s`` — the trend parts are
discarded; a final seasonal LayerNorm (LayerNorm minus its time mean).

Decoder layer (eq. 4), progressive trend accumulation:

    S¹, T¹ = Decomp(AutoCorr(X) + X)
    S², T² = Decomp(AutoCorr(S¹, X_enc) + S¹)
    S³, T³ = Decomp(FFN(S²) + S²)
    T     ← T + W · (T¹ + T² + T³)          (W: Conv1d d_model → n_vars, kernel 3, circular)

Output: ``W_S · SeasonalLN(S) + T`` over the last ``pred_len`` steps. The seasonal input is embedded by a value
(Conv1d) + calendar embedding without positions; the trend stays in the data space (n_vars channels).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._layers import (AttentionLayer, DataEmbedding, FeedForward, SeasonalLayerNorm, check_dropout,
                      check_label_len, check_marks, check_positive_int, decoder_marks, series_decomposition)
from .base import Forecaster, register_forecaster


class AutoformerEncoderLayer(nn.Module):
    """``x = Decomp(x + AutoCorr(x))_s; x = Decomp(x + FFN(x))_s``."""

    def __init__(self, attention: AttentionLayer, d_model: int, d_ff: int, moving_avg: int, dropout: float,
                 activation: str):
        super().__init__()
        self.attention = attention
        self.ffn = FeedForward(d_model, d_ff, dropout, activation, bias=False)
        self.moving_avg = moving_avg
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x, _ = series_decomposition(x + self.dropout(self.attention(x)), self.moving_avg)
        x, _ = series_decomposition(x + self.ffn(x), self.moving_avg)
        return x


class AutoformerDecoderLayer(nn.Module):
    """Self Auto-Correlation, cross Auto-Correlation and FFN, each followed by a decomposition; returns the seasonal
    part and the projected sum of the three trends (to be accumulated)."""

    def __init__(self, self_attention: AttentionLayer, cross_attention: AttentionLayer, d_model: int, n_vars: int,
                 d_ff: int, moving_avg: int, dropout: float, activation: str):
        super().__init__()
        self.self_attention, self.cross_attention = self_attention, cross_attention
        self.ffn = FeedForward(d_model, d_ff, dropout, activation, bias=False)
        self.trend_projection = nn.Conv1d(d_model, n_vars, kernel_size=3, padding=1, padding_mode="circular",
                                          bias=False)
        self.moving_avg = moving_avg
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, memory: Tensor) -> tuple[Tensor, Tensor]:
        x, trend1 = series_decomposition(x + self.dropout(self.self_attention(x)), self.moving_avg)
        x, trend2 = series_decomposition(x + self.dropout(self.cross_attention(x, memory)), self.moving_avg)
        x, trend3 = series_decomposition(x + self.ffn(x), self.moving_avg)
        trend = self.trend_projection((trend1 + trend2 + trend3).transpose(1, 2)).transpose(1, 2)
        return x, trend


@register_forecaster("autoformer", paper="Autoformer: Decomposition Transformers with Auto-Correlation for "
                     "Long-Term Series Forecasting", arxiv="2106.13008")
class Autoformer(Forecaster):
    """Autoformer (Wu et al., NeurIPS 2021, arXiv 2106.13008): progressive series decomposition inside an
    encoder–decoder whose attention is Auto-Correlation (period-based delays, time-delay aggregation).

    Options: ``d_model``, ``n_heads``, ``e_layers``, ``d_layers``, ``d_ff``, ``factor`` (c in k = ⌊c ln L⌋),
    ``moving_avg`` (decomposition window), ``label_len`` (None → seq_len // 2), ``dropout``, ``activation``,
    ``batch_delays`` (in training, delays from the batch-mean correlation as in the reference code; inference
    always chooses per sequence). Defaults are small for CPU; :attr:`ett_recipe` holds TSLib's ETTh1 sizes.
    """

    ett_recipe = {
        "options": {"d_model": 512, "n_heads": 8, "e_layers": 2, "d_layers": 1, "d_ff": 2048, "factor": 3,
                    "moving_avg": 25, "label_len": 48, "dropout": 0.1, "activation": "gelu", "batch_delays": True},
        "lr": 1e-4, "batch_size": 32, "epochs": 10, "patience": 3, "cpu_feasible": False,
        "source": "TSLib scripts/long_term_forecast/ETT_script/Autoformer_ETTh1.sh (e_layers 2, d_layers 1, "
                  "factor 3, label_len 48) with run.py defaults (d_model 512, n_heads 8, d_ff 2048, moving_avg 25, "
                  "dropout 0.1, gelu, timeF, lr 1e-4, batch 32, 10 epochs, patience 3); batch-shared training "
                  "delays as in layers/AutoCorrelation.py",
    }

    def __init__(self, seq_len: int, pred_len: int, n_vars: int, n_time: int = 4, *, d_model: int = 64,
                 n_heads: int = 4, e_layers: int = 2, d_layers: int = 1, d_ff: int = 128, factor: float = 1.0,
                 moving_avg: int = 25, label_len: int | None = None, dropout: float = 0.1,
                 activation: str = "gelu", batch_delays: bool = True):
        super().__init__(seq_len, pred_len, n_vars, n_time)
        for name, value in (("d_model", d_model), ("e_layers", e_layers), ("d_layers", d_layers), ("d_ff", d_ff)):
            check_positive_int(name, value)
        self.moving_avg = check_positive_int("moving_avg", moving_avg, " (25 in Autoformer)")
        self.label_len = check_label_len(label_len, seq_len)
        dropout = check_dropout(dropout)

        def attn() -> AttentionLayer:
            return AttentionLayer(d_model, n_heads, "autocorrelation", factor=factor, batch_delays=batch_delays)

        self.enc_embedding = DataEmbedding(n_vars, d_model, n_time, dropout, positional=False)
        self.dec_embedding = DataEmbedding(n_vars, d_model, n_time, dropout, positional=False)
        self.encoder_layers = nn.ModuleList(
            AutoformerEncoderLayer(attn(), d_model, d_ff, moving_avg, dropout, activation) for _ in range(e_layers))
        self.encoder_norm = SeasonalLayerNorm(d_model)
        self.decoder_layers = nn.ModuleList(
            AutoformerDecoderLayer(attn(), attn(), d_model, n_vars, d_ff, moving_avg, dropout, activation)
            for _ in range(d_layers))
        self.decoder_norm = SeasonalLayerNorm(d_model)
        self.projection = nn.Linear(d_model, n_vars)

    def decoder_init(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(seasonal_init, trend_init)``, each ``[B, label_len + pred_len, C]`` (eq. 2)."""
        seasonal, trend = series_decomposition(x, self.moving_avg)
        start = x.shape[1] - self.label_len
        mean = x.mean(dim=1, keepdim=True).expand(-1, self.pred_len, -1)
        zeros = x.new_zeros(x.shape[0], self.pred_len, x.shape[2])
        return torch.cat([seasonal[:, start:], zeros], dim=1), torch.cat([trend[:, start:], mean], dim=1)

    def forecast(self, x: Tensor, x_mark: Tensor | None, y_mark: Tensor | None) -> Tensor:
        check_marks(self, x_mark, y_mark)
        seasonal, trend = self.decoder_init(x)
        memory = self.enc_embedding(x, x_mark)
        for layer in self.encoder_layers:
            memory = layer(memory)
        memory = self.encoder_norm(memory)
        h = self.dec_embedding(seasonal, decoder_marks(x_mark, y_mark, self.label_len))
        for layer in self.decoder_layers:
            h, residual_trend = layer(h, memory)
            trend = trend + residual_trend
        out = trend + self.projection(self.decoder_norm(h))
        return out[:, -self.pred_len:]


__all__ = ["Autoformer", "AutoformerDecoderLayer", "AutoformerEncoderLayer"]
