"""iTransformer: the transformer applied on the inverted dimension (variates as tokens).

Paper: "iTransformer: Inverted Transformers Are Effective for Time Series Forecasting", Liu, Hu, Zhang, Wu, Wang,
Ma and Long, ICLR 2024, arXiv 2310.06625. Layout as in Time-Series-Library (TSLib ``models/iTransformer.py``) and
the official thuml/iTransformer code.

For a lookback ``X ∈ R^{T×N}`` (eq. 1):

    series-wise normalisation (use_norm):  x̃_n = (x_n − μ_n) / σ_n,  μ_n, σ_n² = mean, variance of x_{:,n} over T
                                            (σ_n = √(var + 1e-5), population variance)
    h⁰_n   = Embedding(x̃_{:,n}) = Linear_{T→D}(x̃_{:,n})               one token per variate; the F calendar
                                                                       features of the lookback are F more tokens
    Hˡ⁺¹   = TrmBlock(Hˡ):  H = LN(H + Self-Attn(H));  H = LN(H + FFN(H))   full, non-causal attention over the
                                                                       N (+F) tokens, no positional encoding
    ŷ_{:,n} = Projection(h^L_n) = Linear_{D→S}(LN(h^L_n))               covariate tokens dropped,
    y_{:,n} = ŷ_{:,n} · σ_n + μ_n                                       de-normalised

Attention mixes variates (the multivariate correlations); the FFN and LayerNorm act on each variate token alone,
so the model is permutation-equivariant over variates (without calendar tokens) and, with ``use_norm``, affine
equivariant per variate: ``f(a·X + b) = a·f(X) + b`` for ``a > 0`` (up to the 1e-5 in σ).
"""

from __future__ import annotations

from torch import Tensor, nn

from ...core.errors import SeqzooError
from ._layers import AttentionLayer, EncoderLayer, InvertedEmbedding, check_dropout, check_marks, check_positive_int
from .base import Forecaster, register_forecaster


@register_forecaster("itransformer", paper="iTransformer: Inverted Transformers Are Effective for Time Series "
                     "Forecasting", arxiv="2310.06625")
class ITransformer(Forecaster):
    """iTransformer (Liu et al., ICLR 2024, arXiv 2310.06625): each variate's lookback is one token, a standard
    encoder attends across variates, a linear head emits the horizon.

    Options: ``d_model``, ``n_heads``, ``e_layers``, ``d_ff``, ``dropout``, ``activation``, ``use_norm``
    (series-wise normalisation). Time marks, when given, are appended as extra tokens (as TSLib does) and dropped
    before the output. Defaults are small for CPU; :attr:`ett_recipe` holds TSLib's ETTh1 sizes.
    """

    ett_recipe = {
        "options": {"d_model": 128, "n_heads": 8, "e_layers": 2, "d_ff": 128, "dropout": 0.1, "activation": "gelu",
                    "use_norm": True},
        "lr": 1e-4, "batch_size": 32, "epochs": 10, "patience": 3, "cpu_feasible": True,
        "source": "TSLib scripts/long_term_forecast/ETT_script/iTransformer_ETTh1.sh (e_layers 2, d_model 128, "
                  "d_ff 128) with run.py defaults (n_heads 8, dropout 0.1, gelu, use_norm 1, timeF, lr 1e-4, "
                  "batch 32, 10 epochs, patience 3)",
    }

    def __init__(self, seq_len: int, pred_len: int, n_vars: int, n_time: int = 4, *, d_model: int = 64,
                 n_heads: int = 4, e_layers: int = 2, d_ff: int = 64, dropout: float = 0.1,
                 activation: str = "gelu", use_norm: bool = True):
        super().__init__(seq_len, pred_len, n_vars, n_time)
        for name, value in (("d_model", d_model), ("e_layers", e_layers), ("d_ff", d_ff)):
            check_positive_int(name, value)
        if not isinstance(use_norm, bool):
            raise SeqzooError(f"use_norm must be True or False, got {use_norm!r}")
        dropout = check_dropout(dropout)
        self.use_norm = use_norm
        self.embedding = InvertedEmbedding(seq_len, d_model, dropout)
        self.encoder_layers = nn.ModuleList(
            EncoderLayer(AttentionLayer(d_model, n_heads, "full", dropout=dropout), d_model, d_ff, dropout, activation)
            for _ in range(e_layers))
        self.encoder_norm = nn.LayerNorm(d_model)
        self.projection = nn.Linear(d_model, pred_len)

    def forecast(self, x: Tensor, x_mark: Tensor | None, y_mark: Tensor | None) -> Tensor:
        check_marks(self, x_mark, None)
        n_vars = x.shape[2]
        if self.use_norm:
            mean = x.mean(dim=1, keepdim=True).detach()
            x = x - mean
            std = (x.var(dim=1, keepdim=True, unbiased=False) + 1e-5).sqrt()
            x = x / std
        h = self.embedding(x, x_mark)                                   # [B, N (+F), D]
        for layer in self.encoder_layers:
            h = layer(h)
        y = self.projection(self.encoder_norm(h)).transpose(1, 2)[:, :, :n_vars]   # [B, S, N]
        if self.use_norm:
            y = y * std + mean
        return y


__all__ = ["ITransformer"]
