"""DLinear: a series decomposition and two linear maps along time.

Paper: "Are Transformers Effective for Time Series Forecasting?", Zeng, Chen, Zhang and Xu, AAAI 2023,
arXiv 2205.13504 (section 4, "LTSF-Linear").

For each variate, with history ``x ∈ R^L`` and horizon ``H``:

    trend    x_t = AvgPool_k(ReplicatePad(x))        (moving average, window k = 25, stride 1, edge values repeated)
    seasonal x_s = x − x_t
    ŷ = W_s x_s + b_s + W_t x_t + b_t                 W_s, W_t ∈ R^{H×L}

``individual=False`` (Time-Series-Library's ETTh1 script) shares ``W_s, W_t`` across variates; ``individual=True``
gives each variate its own pair. As in the reference code (TSLib ``models/DLinear.py``) both weight matrices start
at ``1/L`` (every output step starts as the window mean) and the biases keep PyTorch's default initialisation.
The decomposition is Autoformer's block, reused from :mod:`seqzoo.mixers.attention.series_decomp`.
Calendar marks are not used.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...core.errors import SeqzooError
from ...mixers.attention.series_decomp import SeriesDecomposition
from .base import Forecaster, register_forecaster


def _linear(seq_len: int, pred_len: int) -> nn.Linear:
    layer = nn.Linear(seq_len, pred_len)
    with torch.no_grad():
        layer.weight.fill_(1.0 / seq_len)
    return layer


@register_forecaster("dlinear", paper="Are Transformers Effective for Time Series Forecasting?", arxiv="2205.13504")
class DLinear(Forecaster):
    """DLinear (arXiv 2205.13504): moving-average decomposition, one linear map along time per component."""

    ett_recipe = {
        "options": {"moving_avg": 25, "individual": False},
        "lr": 1e-4, "batch_size": 32, "epochs": 10, "patience": 3, "lradj": "type1",
        "source": "Time-Series-Library scripts/long_term_forecast/ETT_script/DLinear_ETTh1.sh (features M, "
                  "seq_len 96, label_len 48) with run.py defaults: moving_avg 25, lr 1e-4, batch 32, 10 epochs, "
                  "patience 3, lradj type1; TSLib's Model(configs, individual=False)",
        "cpu_feasible": True,
    }

    def __init__(self, seq_len: int, pred_len: int, n_vars: int, n_time: int = 4, *, moving_avg: int = 25,
                 individual: bool = False):
        super().__init__(seq_len, pred_len, n_vars, n_time)
        if not isinstance(individual, bool):
            raise SeqzooError(f"individual must be true or false, got {individual!r}")
        self.decomposition = SeriesDecomposition(moving_avg)
        self.individual = individual
        count = n_vars if individual else 1
        self.seasonal = nn.ModuleList(_linear(seq_len, pred_len) for _ in range(count))
        self.trend = nn.ModuleList(_linear(seq_len, pred_len) for _ in range(count))

    def decompose(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(seasonal, trend)`` of ``x: [B, L, C]``; they sum to ``x``."""
        return self.decomposition(x)

    def forecast(self, x: Tensor, x_mark: Tensor | None, y_mark: Tensor | None) -> Tensor:
        seasonal, trend = (part.transpose(1, 2) for part in self.decompose(x))   # [B, C, L]
        if self.individual:
            out = torch.stack([self.seasonal[c](seasonal[:, c]) + self.trend[c](trend[:, c])
                               for c in range(self.n_vars)], dim=1)
        else:
            out = self.seasonal[0](seasonal) + self.trend[0](trend)
        return out.transpose(1, 2)
