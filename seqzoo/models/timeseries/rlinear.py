"""RLinear: reversible instance normalisation around one linear map along time.

Paper: "Revisiting Long-term Time Series Forecasting: An Investigation on Linear Mapping", Li, Qi, Li and Xu,
2023, arXiv 2305.10721 (section 3; code: plumprc/RTSF ``models/RLinear.py``, ``layers/Invertible.py``).

For each variate c with history ``x ∈ R^L`` (RevIN, Kim et al. ICLR 2022, with learnable affine γ_c, β_c):

    μ = mean(x),  σ = sqrt(var(x) + ε)                  (population variance, ε = 1e-5; statistics not back-propagated)
    z = γ_c (x − μ)/σ + β_c                             normalise
    z' = W · dropout(z) + b                             W ∈ R^{H×L}, shared by all variates (individual=False)
    ŷ = (z' − β_c)/(γ_c + ε²) · σ + μ                   denormalise

Because of the normalisation the forecast is equivariant to adding a constant to a variate's history (the forecast
shifts by the same constant) and to scaling it. Defaults follow the RTSF ETTh1 script (``--rev``, affine RevIN,
dropout 0.1, a shared linear layer); calendar marks are not used.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...core.errors import SeqzooError
from ._instance_norm import instance_denormalize, instance_normalize
from .base import Forecaster, register_forecaster


class RevIN(nn.Module):
    """Reversible instance normalisation over time, per sample and variate (``x: [B, T, C]``), with RTSF's
    learnable affine map on top of the shared non-affine statistics (:mod:`._instance_norm`)."""

    def __init__(self, n_vars: int, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        self.eps, self.affine = eps, affine
        if affine:
            self.weight = nn.Parameter(torch.ones(n_vars))
            self.bias = nn.Parameter(torch.zeros(n_vars))

    def normalize(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        z, mean, std = instance_normalize(x, self.eps)
        if self.affine:
            z = z * self.weight + self.bias
        return z, (mean, std)

    def denormalize(self, z: Tensor, stats: tuple[Tensor, Tensor]) -> Tensor:
        mean, std = stats
        if self.affine:
            z = (z - self.bias) / (self.weight + self.eps * self.eps)
        return instance_denormalize(z, mean, std)


@register_forecaster("rlinear", paper="Revisiting Long-term Time Series Forecasting: An Investigation on Linear "
                     "Mapping", arxiv="2305.10721")
class RLinear(Forecaster):
    """RLinear (arXiv 2305.10721): RevIN, then one linear map from the history to the horizon."""

    ett_recipe = {
        "options": {"dropout": 0.1, "revin": True, "affine": True, "individual": False},
        "lr": 5e-3, "batch_size": 128, "epochs": 15, "patience": 10, "lradj": "type1",
        "source": "plumprc/RTSF script.md ETTh1 line (--rev --batch_size 128 --learning_rate 0.005) with run.py "
                  "defaults (drop 0.1, train_epochs 15, patience 10, lradj type1, RevIN affine); seq_len 96 as in "
                  "iTransformer's Table 10 instead of the script's 336",
        "cpu_feasible": True,
    }

    def __init__(self, seq_len: int, pred_len: int, n_vars: int, n_time: int = 4, *, dropout: float = 0.1,
                 revin: bool = True, affine: bool = True, individual: bool = False):
        super().__init__(seq_len, pred_len, n_vars, n_time)
        if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0.0 <= dropout < 1.0:
            raise SeqzooError(f"dropout must be a number in [0, 1), got {dropout!r}")
        for label, value in (("revin", revin), ("affine", affine), ("individual", individual)):
            if not isinstance(value, bool):
                raise SeqzooError(f"{label} must be true or false, got {value!r}")
        self.revin = RevIN(n_vars, affine=affine) if revin else None
        self.dropout = nn.Dropout(float(dropout))
        self.individual = individual
        self.linear = nn.ModuleList(nn.Linear(seq_len, pred_len) for _ in range(n_vars if individual else 1))

    def forecast(self, x: Tensor, x_mark: Tensor | None, y_mark: Tensor | None) -> Tensor:
        stats = None
        if self.revin is not None:
            x, stats = self.revin.normalize(x)
        z = self.dropout(x).transpose(1, 2)                                    # [B, C, L]
        if self.individual:
            out = torch.stack([self.linear[c](z[:, c]) for c in range(self.n_vars)], dim=1)
        else:
            out = self.linear[0](z)
        out = out.transpose(1, 2)                                              # [B, H, C]
        return self.revin.denormalize(out, stats) if stats is not None else out
