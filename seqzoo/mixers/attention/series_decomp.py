"""Series decomposition block of Autoformer (a plain ``nn.Module``, not a registered mixer).

Paper: "Autoformer: Decomposition Transformers with Auto-Correlation for Long-Term Series Forecasting", Wu, Xu,
Wang and Long, NeurIPS 2021, arXiv 2106.13008 (section 3.1, eq. 1):

    X_t = AvgPool(Padding(X)),    X_s = X − X_t

The trend ``X_t`` is a moving average of window ``kernel_size`` (stride 1) along time; the series is padded by
repeating its first value ``⌊(k−1)/2⌋`` times in front and its last value ``⌈(k−1)/2⌉`` times at the end, so the
trend has the input's length and a constant series is its own trend (the reference code, thuml/Autoformer,
pads ``(k−1)/2`` on both sides and so needs an odd ``k``; the same for odd ``k``). The seasonal part is the rest.
Autoformer places this block after every Auto-Correlation and feed-forward sub-layer and keeps the seasonal part
(25 is the reference's window).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...core.errors import SeqzooError


def moving_average(x: Tensor, kernel_size: int) -> Tensor:
    """Edge-padded moving average of ``x: [B, T, C]`` along T (window ``kernel_size``); returns ``[B, T, C]``."""
    front, back = (kernel_size - 1) // 2, kernel_size // 2
    padded = torch.cat([x[:, :1].expand(-1, front, -1), x, x[:, -1:].expand(-1, back, -1)], dim=1)
    return F.avg_pool1d(padded.transpose(1, 2), kernel_size, stride=1).transpose(1, 2)


class SeriesDecomposition(nn.Module):
    """Autoformer's series decomposition (arXiv 2106.13008, eq. 1): ``trend = moving average`` (edge padding),
    ``seasonal = x − trend``. ``forward(x: [B, T, C]) -> (seasonal, trend)``, both ``[B, T, C]``."""

    def __init__(self, kernel_size: int = 25):
        super().__init__()
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1:
            raise SeqzooError(f"kernel_size must be a positive int (25 in Autoformer), got {kernel_size!r}")
        self.kernel_size = kernel_size

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if not isinstance(x, Tensor) or x.dim() != 3 or not x.is_floating_point():
            got = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise SeqzooError(f"series decomposition expects a float tensor [B, T, C], got {got}")
        if x.shape[1] == 0:
            return x.clone(), x.clone()
        trend = moving_average(x, self.kernel_size)
        return x - trend, trend

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"


__all__ = ["SeriesDecomposition", "moving_average"]
