"""TEMPO: decomposition into trend, seasonal and residual, a prompt pool, and a pretrained causal LM backbone.

Paper: "TEMPO: Prompt-based Generative Pre-trained Transformer for Time Series Forecasting", Defu Cao, Furong Jia,
Sercan O. Arik, Tomas Pfister, Yixiang Zheng, Wen Ye and Yan Liu, ICLR 2024, arXiv 2310.04948.

For each variate of the window x (length L):

1. **Decomposition** (the paper uses STL; here the additive moving-average + period-averaging version, which is
   exact by construction):

       T = MovingAverage_k(x)                      (kernel ``trend_kernel``, the ends padded with the end values)
       S_t = mean{ (x − T)_s : s ≡ t (mod period) } − mean over one period     (``period``; 0 when period < 2
                                                                                 or period > L)
       R = x − T − S                               so T + S + R = x exactly.

2. Each component is RevIN-normalised on its own, patched (``patch_len``, ``stride``) and embedded by its own
   linear map into the LM's width d: tokens ``P_c ∈ R^{N×d}`` (c ∈ {T, S, R}).
3. **Prompt pool** (semi-soft prompts): M keys ``k_m ∈ R^d`` and M prompts ``V_m ∈ R^{ℓ_p×d}``. The query of a
   component is the mean of its tokens, ``q_c = mean_n P_c[n]``; the ``top_k`` keys of highest cosine similarity
   ``γ(q_c, k_m)`` are selected and their prompts prepended. The pool is trained to pull the selected keys toward
   their queries: ``L_key = 1 − mean_{selected} γ(q_c, k_m)``, reported as ``aux_loss`` (weight ``key_weight``).
4. **Backbone**: one pass of a pretrained causal LM (see :mod:`~seqzoo.models.timeseries.lm_backbone`; GPT-2 in the
   paper, its first ``lm_layers`` layers) over ``[V_T; P_T; V_S; P_S; V_R; P_R]`` given as input embeddings.
   The LM is frozen except its normalisation layers (``train_norms``; the paper also fine-tunes with LoRA, which is
   not included here).
5. **Recombination**: a linear head per component maps the LM outputs at that component's N token positions
   (flattened) to the horizon; each is de-normalised with its component's statistics and the forecast is
   ``Ŷ = Ŷ_T + Ŷ_S + Ŷ_R`` (:meth:`TEMPO.component_forecasts` returns the three).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...core.errors import SeqzooError
from ._instance_norm import check_patching, instance_denormalize, instance_normalize, num_patches, patchify
from .base import Forecaster, register_forecaster
from .lm_backbone import load_lm_backbone

COMPONENTS = ("trend", "seasonal", "residual")


def moving_average(x: Tensor, kernel: int) -> Tensor:
    """Centred moving average over dim 1 of ``x [B, L, C]``, the ends padded by repeating the end values."""
    front, back = (kernel - 1) // 2, kernel // 2
    padded = torch.cat([x[:, :1].expand(-1, front, -1), x, x[:, -1:].expand(-1, back, -1)], dim=1)
    return padded.unfold(1, kernel, 1).mean(-1)


def seasonal_component(detrended: Tensor, period: int) -> Tensor:
    """Period averaging of ``detrended [B, L, C]``: every step gets the mean of the steps of its phase
    (t mod period), centred to zero mean over one period; zeros when ``period`` < 2 or ``period`` > L."""
    length = detrended.shape[1]
    if period < 2 or period > length:
        return torch.zeros_like(detrended)
    phase = torch.arange(length, device=detrended.device) % period
    one_hot = F.one_hot(phase, period).to(detrended.dtype)                     # [L, period]
    means = torch.einsum("blc,lp->bpc", detrended, one_hot) / one_hot.sum(0)[None, :, None]
    means = means - means.mean(1, keepdim=True)
    return means[:, phase]


def decompose(x: Tensor, trend_kernel: int = 25, period: int = 24) -> tuple[Tensor, Tensor, Tensor]:
    """``x [B, L, C]`` → (trend, seasonal, residual), each ``[B, L, C]``, with trend + seasonal + residual = x."""
    trend = moving_average(x, trend_kernel)
    seasonal = seasonal_component(x - trend, period)
    return trend, seasonal, x - trend - seasonal


class PromptPool(nn.Module):
    """``pool_size`` keys and prompts of ``prompt_len`` tokens; ``select(query)`` picks the ``top_k`` keys of highest
    cosine similarity to each query and returns ``(prompts [M, top_k·prompt_len, d], indices [M, top_k],
    key-matching loss 1 − mean similarity of the selected keys)``."""

    def __init__(self, pool_size: int, prompt_len: int, d_model: int, top_k: int):
        super().__init__()
        for name, value in (("pool_size", pool_size), ("prompt_len", prompt_len), ("top_k", top_k)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SeqzooError(f"tempo {name} must be a positive int, got {value!r}")
        if top_k > pool_size:
            raise SeqzooError(f"tempo top_k={top_k} exceeds pool_size={pool_size}")
        self.top_k = top_k
        self.keys = nn.Parameter(torch.empty(pool_size, d_model).uniform_(-1, 1))
        self.prompts = nn.Parameter(torch.empty(pool_size, prompt_len, d_model).uniform_(-1, 1))

    def similarity(self, query: Tensor) -> Tensor:
        return F.normalize(query, dim=-1) @ F.normalize(self.keys, dim=-1).t()          # [M, pool]

    def select(self, query: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        sim = self.similarity(query)
        chosen_sim, idx = sim.topk(self.top_k, dim=-1)
        prompts = self.prompts[idx].flatten(1, 2)                                       # [M, k·ℓ_p, d]
        return prompts.to(query.dtype), idx, 1 - chosen_sim.mean()


@register_forecaster("tempo", paper="TEMPO: Prompt-based Generative Pre-trained Transformer for Time Series "
                                    "Forecasting", arxiv="2310.04948")
class TEMPO(Forecaster):
    """TEMPO (arXiv 2310.04948): trend/seasonal/residual decomposition, per-component patch embeddings, a prompt
    pool with key–query matching, one pass of a frozen pretrained causal LM, per-component heads summed.

    Options: ``backbone`` (None: a fresh random byte LM; or a seqzoo checkpoint / Hugging Face GPT-2 directory,
    see ``lm_backbone``), ``lm_layers`` (keep the first layers; the paper uses 6 of GPT-2's 12), ``train_norms``,
    ``trend_kernel``, ``period``, ``patch_len``, ``stride``, ``pool_size``, ``prompt_len``, ``top_k``,
    ``key_weight`` (weight of the key-matching loss), ``use_prompts`` (False: no pool, the GPT4TS-like ablation),
    ``dropout`` before the heads.
    """

    ett_recipe = {
        "options": {"backbone": None, "patch_len": 16, "stride": 8, "pool_size": 30, "prompt_len": 3, "top_k": 3,
                    "trend_kernel": 25, "period": 24},
        "lr": 1e-3, "batch_size": 32, "epochs": 10, "patience": 3,
        "source": "DC-research/TEMPO (patch 16, stride 8, prompt_len 3, top-k 3 as read in tempo/models/TEMPO.py per "
                  "the reference notes; pool size 30 and lr 1e-3 not verified); backbone None = a random byte LM "
                  "unless a pretrained one is passed (set options.backbone to a checkpoint path)",
    }

    def __init__(self, seq_len: int, pred_len: int, n_vars: int, n_time: int = 4,
                 backbone: str | os.PathLike | None = None, lm_layers: int | None = None, train_norms: bool = True,
                 trend_kernel: int = 25, period: int = 24, patch_len: int = 16, stride: int = 8,
                 pool_size: int = 30, prompt_len: int = 3, top_k: int = 3, key_weight: float = 0.1,
                 use_prompts: bool = True, dropout: float = 0.0):
        super().__init__(seq_len, pred_len, n_vars, n_time)
        if isinstance(trend_kernel, bool) or not isinstance(trend_kernel, int) or trend_kernel < 1:
            raise SeqzooError(f"tempo trend_kernel must be a positive int, got {trend_kernel!r}")
        if isinstance(period, bool) or not isinstance(period, int) or period < 0:
            raise SeqzooError(f"tempo period must be a non-negative int (0: no seasonal part), got {period!r}")
        check_patching("tempo", seq_len, patch_len, stride)
        self.trend_kernel, self.period, self.patch_len, self.stride = trend_kernel, period, patch_len, stride
        self.key_weight = float(key_weight)
        self.backbone = load_lm_backbone(backbone).truncate(lm_layers).freeze(train_norms=train_norms)
        d = self.backbone.d_model
        self.n_patches = num_patches(seq_len, patch_len, stride)
        self.embeds = nn.ModuleDict({c: nn.Linear(patch_len, d) for c in COMPONENTS})
        self.pool = PromptPool(pool_size, prompt_len, d, top_k) if use_prompts else None
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({c: nn.Linear(self.n_patches * d, pred_len) for c in COMPONENTS})

    def component_forecasts(self, x: Tensor) -> dict[str, Tensor]:
        """The three de-normalised component forecasts ``{name: [B, H, C]}`` (their sum is the forecast); sets
        ``aux_loss`` to the weighted key-matching loss."""
        batch, _, n_vars = x.shape
        parts, stats, sequence, spans, key_losses = {}, {}, [], {}, []
        for name, comp in zip(COMPONENTS, decompose(x, self.trend_kernel, self.period)):
            comp, mean, std = instance_normalize(comp)
            stats[name] = (mean, std)
            patches = patchify(comp.transpose(1, 2).reshape(batch * n_vars, -1), self.patch_len, self.stride)
            tokens = self.embeds[name](patches)                                   # [B·C, N, d]
            if self.pool is not None:
                prompts, _, key_loss = self.pool.select(tokens.mean(1))
                sequence.append(prompts)
                key_losses.append(key_loss)
            start = sum(t.shape[1] for t in sequence)
            spans[name] = (start, start + tokens.shape[1])
            sequence.append(tokens)
        hidden, _ = self.backbone(torch.cat(sequence, dim=1))
        for name in COMPONENTS:
            a, b = spans[name]
            y = self.heads[name](self.dropout(hidden[:, a:b].flatten(1)))            # [B·C, H]
            y = y.view(batch, n_vars, self.pred_len).transpose(1, 2)
            parts[name] = instance_denormalize(y, *stats[name])
        if key_losses:
            self.aux_loss = self.key_weight * torch.stack(key_losses).mean()
        return parts

    def forecast(self, x: Tensor, x_mark: Tensor | None, y_mark: Tensor | None) -> Tensor:
        parts = self.component_forecasts(x)
        return parts["trend"] + parts["seasonal"] + parts["residual"]


__all__ = ["TEMPO", "PromptPool", "decompose", "moving_average", "seasonal_component", "COMPONENTS"]
