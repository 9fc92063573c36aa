"""Building blocks shared by the transformer forecasters (Informer, Autoformer, iTransformer).

Layouts follow Time-Series-Library (TSLib, ``layers/Embed.py``, ``layers/Transformer_EncDec.py``,
``layers/Autoformer_EncDec.py``); the attention mechanisms themselves are the library's ops
(``seqzoo.mixers.attention.probsparse`` and ``.autocorrelation``) and PyTorch's scaled dot-product attention.

* :func:`series_decomposition` — Autoformer's decomposition ("Autoformer: Decomposition Transformers with
  Auto-Correlation for Long-Term Series Forecasting", Wu et al., NeurIPS 2021, arXiv 2106.13008, eq. 1):
  ``trend = AvgPool(ReplicatePad(x))`` with window k, ``seasonal = x − trend``. Used by Autoformer and by the
  linear baselines (DLinear).
* Embeddings (Informer, "Informer: Beyond Efficient Transformer for Long Sequence Time-Series Forecasting", Zhou et
  al., AAAI 2021, arXiv 2012.07436, appendix B "input representation"):
  ``E(x_t) = Conv1d_{k=3, circular}(x)_t + PE(t) + W_mark · mark_t``, with the sinusoidal
  ``PE(t, 2i) = sin(t / 10000^{2i/d})``, ``PE(t, 2i+1) = cos(t / 10000^{2i/d})`` and TSLib's ``timeF`` marks
  (a bias-free linear map of the calendar features). Autoformer drops the positional term.
* :class:`InvertedEmbedding` — iTransformer ("iTransformer: Inverted Transformers Are Effective for Time Series
  Forecasting", Liu et al., ICLR 2024, arXiv 2310.06625, eq. 1): ``h_n = Linear_{T→D}(x_{:, n})``, one token per
  variate; calendar features become extra tokens (one per feature, its whole lookback as the token).
* :class:`AttentionLayer` — multi-head attention with separate query and key/value inputs (so one class serves
  self- and cross-attention): ``out = W_o · Attn(W_q x_q, W_k x_kv, W_v x_kv)`` where ``Attn`` is one of
  ``"full"`` (softmax, optionally causal), ``"probsparse"`` (Informer's ProbSparse op) or ``"autocorrelation"``
  (Autoformer's Auto-Correlation op). The projections have the same names and shapes for every kind, so weights
  move between kinds (a test checks ProbSparse with u = L equals full attention this way).
* :class:`EncoderLayer`, :class:`DecoderLayer` — the post-norm transformer layers of TSLib
  (``x = LN(x + Attn(x)); x = LN(x + FFN(x))``; the decoder adds a cross-attention sub-layer), the FFN being
  ``W_2 · act(W_1 x)`` (TSLib writes it as two kernel-1 convolutions, the same map).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...core.errors import SeqzooError
from ...mixers.attention.autocorrelation import autocorrelation
from ...mixers.attention.probsparse import draw_sample_index, probsparse_attention, probsparse_counts
from ...mixers.attention.series_decomp import moving_average
from ...mixers.attention.softmax import check_heads

ATTENTION_KINDS = ("full", "probsparse", "autocorrelation")
ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu}


# -- decomposition ------------------------------------------------------------------------------------------------
def series_decomposition(x: Tensor, kernel_size: int) -> tuple[Tensor, Tensor]:
    """``(seasonal, trend)`` of ``x: [B, T, C]``: trend = moving average of window ``kernel_size`` along T with the
    first/last value repeated as padding (so a constant series is its own trend), seasonal = x − trend."""
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1:
        raise SeqzooError(f"kernel_size must be a positive int (25 in Autoformer), got {kernel_size!r}")
    if not isinstance(x, Tensor) or x.dim() != 3 or not x.is_floating_point():
        got = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise SeqzooError(f"series_decomposition expects a float tensor [B, T, C], got {got}")
    if x.shape[1] == 0:
        return x.clone(), x.clone()
    trend = moving_average(x, kernel_size)
    return x - trend, trend


class SeasonalLayerNorm(nn.Module):
    """Autoformer's LayerNorm for the seasonal part: ``LN(x) − mean_t LN(x)`` (the time mean removed)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(x)
        return x - x.mean(dim=1, keepdim=True)


# -- embeddings ---------------------------------------------------------------------------------------------------
def sinusoidal_positions(length: int, d_model: int, *, device=None, dtype=None) -> Tensor:
    """``[length, d_model]`` sinusoidal position codes (sin on even, cos on odd features)."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, d_model, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(length, d_model, device=device, dtype=torch.float32)
    pe[:, 0::2] = torch.sin(position * freq)
    pe[:, 1::2] = torch.cos(position * freq)[:, : d_model // 2]
    return pe.to(dtype or torch.get_default_dtype())


class TokenEmbedding(nn.Module):
    """Value embedding: a bias-free Conv1d (kernel 3, circular padding) from ``c_in`` channels to ``d_model``."""

    def __init__(self, c_in: int, d_model: int):
        super().__init__()
        self.conv = nn.Conv1d(c_in, d_model, kernel_size=3, padding=1, padding_mode="circular", bias=False)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_in", nonlinearity="leaky_relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x.transpose(1, 2)).transpose(1, 2)


class DataEmbedding(nn.Module):
    """``TokenEmbedding(x) [+ PE] [+ Linear(marks)]`` then dropout; ``x: [B, T, c_in]``, ``marks: [B, T, n_time]``
    or None (no calendar term). ``positional=False`` is Autoformer's embedding (TSLib ``DataEmbedding_wo_pos``)."""

    def __init__(self, c_in: int, d_model: int, n_time: int, dropout: float = 0.1, positional: bool = True):
        super().__init__()
        self.value = TokenEmbedding(c_in, d_model)
        self.time = nn.Linear(n_time, d_model, bias=False) if n_time > 0 else None
        self.positional = positional
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, marks: Tensor | None) -> Tensor:
        out = self.value(x)
        if self.positional:
            out = out + sinusoidal_positions(x.shape[1], out.shape[-1], device=x.device, dtype=out.dtype)
        if marks is not None and self.time is not None:
            out = out + self.time(marks)
        return self.dropout(out)


class InvertedEmbedding(nn.Module):
    """iTransformer's variate tokens: ``Linear_{seq_len→d_model}`` applied to each variate's whole lookback, and to
    each calendar feature as an extra token. ``x: [B, T, N]``, ``marks: [B, T, F]`` or None → ``[B, N (+F), D]``."""

    def __init__(self, seq_len: int, d_model: int, dropout: float = 0.1):
        super().__init__()
        self.proj = nn.Linear(seq_len, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, marks: Tensor | None) -> Tensor:
        tokens = x.transpose(1, 2)
        if marks is not None:
            tokens = torch.cat([tokens, marks.transpose(1, 2).to(tokens.dtype)], dim=1)
        return self.dropout(self.proj(tokens))


# -- attention ----------------------------------------------------------------------------------------------------
class AttentionLayer(nn.Module):
    """Multi-head attention ``W_o · Attn(W_q x_q, W_k x_kv, W_v x_kv)`` with ``Attn`` chosen by ``kind``.

    ``"full"``: softmax attention (``causal`` masks future keys; attention dropout as in TSLib's FullAttention).
    ``"probsparse"``: :func:`~seqzoo.mixers.attention.probsparse.probsparse_attention` with sampling ``factor``;
    key samples come from the global RNG in training and from a generator seeded by ``seed`` in eval (so
    inference is deterministic and independent of the batch). ``causal`` is the masked decoder form.
    ``"autocorrelation"``: :func:`~seqzoo.mixers.attention.autocorrelation.autocorrelation` with ``factor``;
    ``batch_delays`` (TSLib's training-time speed-up: delays from the batch-mean correlation) applies in training
    mode only. ``causal`` is ignored (Auto-Correlation rolls the whole series, as in the reference).
    """

    def __init__(self, d_model: int, n_heads: int, kind: str = "full", *, factor: float = 5.0,
                 causal: bool = False, dropout: float = 0.0, batch_delays: bool = False, seed: int = 0):
        super().__init__()
        if kind not in ATTENTION_KINDS:
            raise SeqzooError(f"unknown attention {kind!r}; valid: {', '.join(ATTENTION_KINDS)}")
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
            raise SeqzooError(f"factor must be a positive number, got {factor!r}")
        self.head_dim = check_heads(d_model, n_heads)
        self.n_heads, self.kind, self.factor, self.causal = n_heads, kind, float(factor), causal
        self.dropout, self.batch_delays, self.seed = dropout, batch_delays, seed
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.o_proj = nn.Linear(d_model, d_model)
        self.last_info = None  # what ProbSparse / Auto-Correlation chose in the latest call (for inspection)

    def forward(self, x_q: Tensor, x_kv: Tensor | None = None) -> Tensor:
        x_kv = x_q if x_kv is None else x_kv
        B, Lq, _ = x_q.shape
        Lk = x_kv.shape[1]
        q = self.q_proj(x_q).view(B, Lq, self.n_heads, self.head_dim)
        k = self.k_proj(x_kv).view(B, Lk, self.n_heads, self.head_dim)
        v = self.v_proj(x_kv).view(B, Lk, self.n_heads, self.head_dim)
        if self.kind == "full":
            o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                               dropout_p=self.dropout if self.training else 0.0,
                                               is_causal=self.causal).transpose(1, 2)
        elif self.kind == "probsparse":
            n_sample, _ = probsparse_counts(Lq, Lk, self.factor)
            generator = None if self.training else torch.Generator().manual_seed(self.seed)
            index = draw_sample_index(Lq, Lk, n_sample, generator, x_q.device)
            o, self.last_info = probsparse_attention(q, k, v, factor=self.factor, masked=self.causal,
                                                     sample_index=index)
        else:
            o, self.last_info = autocorrelation(q, k, v, factor=self.factor,
                                                batch_delays=self.batch_delays and self.training)
        return self.o_proj(o.reshape(B, Lq, -1))

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, n_heads={self.n_heads}, factor={self.factor:g}, causal={self.causal}"


class FeedForward(nn.Module):
    """``dropout(W_2 · dropout(act(W_1 x)))`` (TSLib's two kernel-1 convolutions)."""

    def __init__(self, d_model: int, d_ff: int, dropout: float, activation: str = "gelu", bias: bool = True):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise SeqzooError(f"unknown activation {activation!r}; valid: {', '.join(ACTIVATIONS)}")
        self.w1 = nn.Linear(d_model, d_ff, bias=bias)
        self.w2 = nn.Linear(d_ff, d_model, bias=bias)
        self.act = ACTIVATIONS[activation]
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.w2(self.dropout(self.act(self.w1(x)))))


class EncoderLayer(nn.Module):
    """Post-norm encoder layer: ``x = LN(x + drop(Attn(x))); x = LN(x + FFN(x))``."""

    def __init__(self, attention: AttentionLayer, d_model: int, d_ff: int, dropout: float = 0.1,
                 activation: str = "gelu"):
        super().__init__()
        self.attention = attention
        self.ffn = FeedForward(d_model, d_ff, dropout, activation)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm1(x + self.dropout(self.attention(x)))
        return self.norm2(x + self.ffn(x))


class DecoderLayer(nn.Module):
    """Post-norm decoder layer: ``x = LN(x + SelfAttn(x)); x = LN(x + CrossAttn(x, enc)); x = LN(x + FFN(x))``."""

    def __init__(self, self_attention: AttentionLayer, cross_attention: AttentionLayer, d_model: int, d_ff: int,
                 dropout: float = 0.1, activation: str = "gelu"):
        super().__init__()
        self.self_attention, self.cross_attention = self_attention, cross_attention
        self.ffn = FeedForward(d_model, d_ff, dropout, activation)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:
        x = self.norm1(x + self.dropout(self.self_attention(x)))
        x = self.norm2(x + self.dropout(self.cross_attention(x, memory)))
        return self.norm3(x + self.ffn(x))


# -- option checks ------------------------------------------------------------------------------------------------
def check_positive_int(name: str, value, hint: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SeqzooError(f"{name} must be a positive int{hint}, got {value!r}")
    return value


def check_dropout(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise SeqzooError(f"dropout must be a number in [0, 1), got {value!r}")
    return float(value)


def check_label_len(label_len, seq_len: int) -> int:
    """Decoder start-token length: None → ``seq_len // 2`` (TSLib's 48 for 96); must lie in ``[0, seq_len]``."""
    if label_len is None:
        return seq_len // 2
    if isinstance(label_len, bool) or not isinstance(label_len, int) or not 0 <= label_len <= seq_len:
        raise SeqzooError(f"label_len must be an int in [0, seq_len={seq_len}] (48 in TSLib), got {label_len!r}")
    return label_len


def check_marks(model, x_mark: Tensor | None, y_mark: Tensor | None) -> None:
    """One-line error when calendar features do not have the model's ``n_time`` features."""
    for label, mark in (("x_mark", x_mark), ("y_mark", y_mark)):
        if mark is not None and mark.shape[-1] != model.n_time:
            raise SeqzooError(f"{label} must have n_time={model.n_time} calendar features (the model was built "
                              f"with n_time={model.n_time}), got {mark.shape[-1]}")


def decoder_marks(x_mark: Tensor | None, y_mark: Tensor | None, label_len: int) -> Tensor | None:
    """Calendar features of the decoder input ``[label part; horizon]``, or None when either part is missing."""
    if x_mark is None or y_mark is None:
        return None
    return torch.cat([x_mark[:, x_mark.shape[1] - label_len:], y_mark], dim=1)


__all__ = ["ATTENTION_KINDS", "AttentionLayer", "DataEmbedding", "DecoderLayer", "EncoderLayer", "FeedForward",
           "InvertedEmbedding", "SeasonalLayerNorm", "TokenEmbedding", "check_dropout", "check_label_len",
           "check_marks", "check_positive_int", "decoder_marks", "series_decomposition", "sinusoidal_positions"]
