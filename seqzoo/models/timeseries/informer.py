"""Informer: ProbSparse encoder with self-attention distilling and a generative-style decoder.

Paper: "Informer: Beyond Efficient Transformer for Long Sequence Time-Series Forecasting", Zhou, Zhang, Peng,
Zhang, Li, Xiong and Zhang, AAAI 2021, arXiv 2012.07436. Layout as in Time-Series-Library (TSLib
``models/Informer.py``), whose ETTh1 script gives the published L = 96 numbers.

Input representation (appendix B): ``X_emb = Conv1d_{k=3,circular}(X) + PE + W_mark · marks``.

Encoder (section "Encoder"): ``e_layers`` layers of ProbSparse self-attention (the top ``u = c·⌈ln L⌉`` queries by
the sparsity measure ``M̄(q_i, K) = max_j s_ij − mean_j s_ij`` get full attention, the rest mean(V)), each but the
last followed by self-attention distilling (eq. 5):

    X_{j+1} = MaxPool_{k=3, s=2}( ELU( BatchNorm( Conv1d_{k=3, circular}(X_j) ) ) ),   L → ⌊(L − 1)/2⌋ + 1

so the length halves between layers (96 → 48 → 24 …); a final LayerNorm.
(TSLib pads the distilling convolution by 2 instead of 1, giving 49 instead of 48 for L = 96 — a leftover of old
PyTorch circular padding; the paper's halving is kept here.)

Decoder (section "Decoder: Generating Long Sequential Outputs in One Forward Procedure"): the input is the
concatenation of a start token — the last ``label_len`` known steps ``x[:, -label_len:]`` — and a zero placeholder
for the ``pred_len`` target steps (eq. 6: ``X_de = Concat(X_token, X_0)``), embedded like the encoder input with
the calendar features of both parts. Each decoder layer applies masked ProbSparse self-attention (queries see only
earlier positions), cross-attention to the encoder output and a feed-forward sub-layer (post-norm); a final
LayerNorm and a linear projection give all ``pred_len`` outputs in one forward pass (no step-by-step decoding).
As in TSLib, the cross-attention is ProbSparse too (``cross_attention="full"`` gives the original
Informer2020 code's full cross-attention).

``attention="full"`` replaces ProbSparse by full softmax attention everywhere (with the same parameters), the
"Informer†" ablation of the paper.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...core.errors import SeqzooError
from ._layers import (AttentionLayer, DataEmbedding, DecoderLayer, EncoderLayer, check_dropout, check_label_len,
                      check_marks, check_positive_int, decoder_marks)
from .base import Forecaster, register_forecaster


class DistilLayer(nn.Module):
    """Self-attention distilling between encoder layers: Conv1d(k=3, circular) → BatchNorm → ELU → MaxPool(3, 2, 1).
    ``[B, L, D] → [B, ⌊(L − 1)/2⌋ + 1, D]``."""

    def __init__(self, d_model: int):
        super().__init__()
        self.conv = nn.Conv1d(d_model, d_model, kernel_size=3, padding=1, padding_mode="circular")
        self.norm = nn.BatchNorm1d(d_model)
        self.act = nn.ELU()
        self.pool = nn.MaxPool1d(kernel_size=3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.act(self.norm(self.conv(x.transpose(1, 2))))).transpose(1, 2)


@register_forecaster("informer", paper="Informer: Beyond Efficient Transformer for Long Sequence Time-Series "
                     "Forecasting", arxiv="2012.07436")
class Informer(Forecaster):
    """Informer (Zhou et al., AAAI 2021, arXiv 2012.07436): ProbSparse encoder with distilling, generative decoder.

    Options: ``d_model``, ``n_heads``, ``e_layers``, ``d_layers``, ``d_ff``, ``factor`` (the c of ProbSparse),
    ``label_len`` (start-token length; None → seq_len // 2), ``distil``, ``dropout``, ``activation``
    (``"gelu"``/``"relu"``), ``attention`` (``"probsparse"`` or ``"full"``), ``cross_attention`` (None = same as
    ``attention``, or ``"full"``), ``seed`` (of the eval-mode key sampling). Defaults are small for CPU;
    :attr:`ett_recipe` holds TSLib's ETTh1 sizes.
    """

    ett_recipe = {
        "options": {"d_model": 512, "n_heads": 8, "e_layers": 2, "d_layers": 1, "d_ff": 2048, "factor": 3,
                    "label_len": 48, "distil": True, "dropout": 0.1, "activation": "gelu"},
        "lr": 1e-4, "batch_size": 32, "epochs": 10, "patience": 3, "cpu_feasible": False,
        "source": "TSLib scripts/long_term_forecast/ETT_script/Informer_ETTh1.sh (e_layers 2, d_layers 1, factor 3, "
                  "label_len 48) with run.py defaults (d_model 512, n_heads 8, d_ff 2048, dropout 0.1, gelu, "
                  "distil, timeF, lr 1e-4, batch 32, 10 epochs, patience 3)",
    }

    def __init__(self, seq_len: int, pred_len: int, n_vars: int, n_time: int = 4, *, d_model: int = 64,
                 n_heads: int = 4, e_layers: int = 2, d_layers: int = 1, d_ff: int = 128, factor: float = 5.0,
                 label_len: int | None = None, distil: bool = True, dropout: float = 0.1,
                 activation: str = "gelu", attention: str = "probsparse", cross_attention: str | None = None,
                 seed: int = 0):
        super().__init__(seq_len, pred_len, n_vars, n_time)
        for name, value in (("d_model", d_model), ("e_layers", e_layers), ("d_layers", d_layers), ("d_ff", d_ff)):
            check_positive_int(name, value)
        if attention not in ("probsparse", "full"):
            raise SeqzooError(f"unknown attention {attention!r} for informer; valid: probsparse, full")
        cross_attention = attention if cross_attention is None else cross_attention
        if cross_attention not in ("probsparse", "full"):
            raise SeqzooError(f"unknown cross_attention {cross_attention!r} for informer; valid: probsparse, full")
        if not isinstance(distil, bool):
            raise SeqzooError(f"distil must be True or False, got {distil!r}")
        self.label_len = check_label_len(label_len, seq_len)
        dropout = check_dropout(dropout)

        def attn(kind: str, causal: bool = False) -> AttentionLayer:
            return AttentionLayer(d_model, n_heads, kind, factor=factor, causal=causal, dropout=dropout, seed=seed)

        self.enc_embedding = DataEmbedding(n_vars, d_model, n_time, dropout)
        self.dec_embedding = DataEmbedding(n_vars, d_model, n_time, dropout)
        self.encoder_layers = nn.ModuleList(EncoderLayer(attn(attention), d_model, d_ff, dropout, activation)
                                            for _ in range(e_layers))
        self.distil_layers = nn.ModuleList(DistilLayer(d_model) for _ in range(e_layers - 1)) if distil else None
        self.encoder_norm = nn.LayerNorm(d_model)
        self.decoder_layers = nn.ModuleList(
            DecoderLayer(attn(attention, causal=True), attn(cross_attention), d_model, d_ff, dropout, activation)
            for _ in range(d_layers))
        self.decoder_norm = nn.LayerNorm(d_model)
        self.projection = nn.Linear(d_model, n_vars)

    def encode(self, x: Tensor, x_mark: Tensor | None) -> Tensor:
        """Encoder output ``[B, L', d_model]`` (``L'`` halved ``e_layers − 1`` times when distilling)."""
        h = self.enc_embedding(x, x_mark)
        for i, layer in enumerate(self.encoder_layers):
            h = layer(h)
            if self.distil_layers is not None and i < len(self.distil_layers):
                h = self.distil_layers[i](h)
        return self.encoder_norm(h)

    def decoder_input(self, x: Tensor) -> Tensor:
        """``[x[:, -label_len:]; zeros(pred_len)]`` — the start token and the placeholder, ``[B, label+pred, C]``."""
        start = x[:, x.shape[1] - self.label_len:]
        return torch.cat([start, x.new_zeros(x.shape[0], self.pred_len, x.shape[2])], dim=1)

    def forecast(self, x: Tensor, x_mark: Tensor | None, y_mark: Tensor | None) -> Tensor:
        check_marks(self, x_mark, y_mark)
        memory = self.encode(x, x_mark)
        h = self.dec_embedding(self.decoder_input(x), decoder_marks(x_mark, y_mark, self.label_len))
        for layer in self.decoder_layers:
            h = layer(h, memory)
        return self.projection(self.decoder_norm(h))[:, -self.pred_len:]


__all__ = ["DistilLayer", "Informer"]
