"""Time-MoE: a decoder-only time-series foundation model with sparse mixture-of-experts FFNs.

Paper: "Time-MoE: Billion-Scale Time Series Foundation Models with Mixture of Experts", Shi, Wang, Nie, Liu, Wen,
Jin and others, ICLR 2025, arXiv 2409.16040 (sec. 3; reference notes: anchors-domains.md §6.1).

Every scalar time point is a token (point-wise tokenisation); each variate of a multivariate window is a separate
series (channel independence). For a series x_1 … x_T:

    h_t^0 = SiLU(x_t W_g) ⊙ (x_t W_e)                             SwiGLU input embedding (W_g, W_e: 1 × d, no bias)
    u_t^l = h_t^{l-1} + Attn(RMSNorm(h^{l-1}))_t                  causal self-attention with RoPE, bias on q, k, v only
    h_t^l = u_t^l + MoE(RMSNorm(u_t^l))                           sparse MoE FFN (seqzoo/models/moe.py): top-k of E
                                                                  SwiGLU experts + a sigmoid-gated shared expert
    x̂_{t+1:t+p_j} = RMSNorm(h_t^L) W_{p_j}                        a linear head per horizon p_j ∈ P = {1, 8, 32, 64}

Training (multi-resolution forecasting; paper eqs. 8–9): every position t predicts the next p_j points with every
head; the loss is the mean over heads of the Huber loss (δ = 2) over the valid targets (positions whose targets run
past the end of the series are masked), plus α · L_aux (α = 0.02, the load-balancing loss of each MoE layer):

    L = (1/|P|) Σ_j Huber_δ(x_{t+1:t+p_j}, x̂_{t+1:t+p_j}) + α Σ_layers L_aux

Inference (paper sec. 3.2, "multi-resolution scheduling"): to forecast H points, repeatedly use the largest head
whose horizon is ≤ the points still missing (if none, the smallest head, truncated), append its forecast to the
context and continue autoregressively; the attention KV cache is threaded, so each appended point is processed
once (``generate(..., use_cache=False)`` recomputes from scratch, the reference it is tested against).

Each series is normalised by its own mean and standard deviation over the context before entering the model and
the forecast is mapped back (the paper normalises outside the model; the Forecaster wrapper does it here so that
pretrained weights transfer zero-shot to any data set).

Scale: the paper's base model is 12 layers, d = 384, 8 experts (top 2) + shared, 50M activated parameters, trained
on 309B points; the defaults here (2 layers, d = 64) are a CPU-sized version of the same architecture.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...core.errors import SeqzooError
from ..causal_lm import Block, run_blocks
from ..config import ModelConfig
from ..moe import SparseMoE
from ._instance_norm import forecast_channel_independent
from .base import Forecaster, register_forecaster

PAPER = "Time-MoE: Billion-Scale Time Series Foundation Models with Mixture of Experts"


def horizon_targets(series: Tensor, horizon: int) -> tuple[Tensor, Tensor]:
    """Targets ``[N, T, horizon]`` with ``targets[:, t, j] = series[:, t + 1 + j]`` and a validity mask (False where
    ``t + 1 + j`` runs past the end)."""
    n, length = series.shape
    padded = torch.cat([series[:, 1:], series.new_zeros(n, horizon)], dim=1)
    targets = padded.unfold(1, horizon, 1)[:, :length]
    steps = torch.arange(length, device=series.device)[:, None] + 1 + torch.arange(horizon, device=series.device)
    return targets, (steps < length).expand(n, length, horizon)


@register_forecaster("time_moe", paper=PAPER, arxiv="2409.16040")
class TimeMoE(Forecaster):
    """Time-MoE forecaster (module docstring): point-wise tokens, MoE decoder, multi-resolution heads.

    Options: ``d_model``, ``n_layers``, ``n_heads``; MoE: ``n_experts``, ``top_k``, ``ffn_hidden`` (default
    2·d_model; the shared expert gets ``ffn_hidden`` and each routed expert ``ffn_hidden // top_k``),
    ``shared_expert``, ``aux_weight`` (α), ``capacity_factor``; ``horizons`` (the forecasting heads),
    ``huber_delta``; ``instance_norm`` (normalise each series by its context statistics). Any context length
    works (``any_length``).
    """

    any_length = True
    ett_recipe = {
        "options": {},
        "lr": 1e-4, "batch_size": 32, "epochs": 10, "patience": 3,
        "cpu_feasible": False,  # training through the autoregressive rollout is slow on CPU
        "source": "TSLib long-term-forecast defaults (Adam lr 1e-4, batch 32, 10 epochs, patience 3): TSLib runs "
                  "Time-MoE only zero-shot and the paper (Table 4) fine-tunes pretrained weights for one epoch, so "
                  "there is no from-scratch ETTh1 script to copy",
    }

    def __init__(self, seq_len: int, pred_len: int, n_vars: int, n_time: int = 4, *, d_model: int = 64,
                 n_layers: int = 2, n_heads: int = 4, n_experts: int = 8, top_k: int = 2,
                 ffn_hidden: int | None = None, shared_expert: bool = True, aux_weight: float = 0.02,
                 capacity_factor: float | None = None, horizons: tuple[int, ...] | list[int] = (1, 8, 32, 64),
                 huber_delta: float = 2.0, instance_norm: bool = True):
        super().__init__(seq_len, pred_len, n_vars, n_time)
        horizons = tuple(sorted(set(horizons)))
        if not horizons or any(not isinstance(h, int) or isinstance(h, bool) or h <= 0 for h in horizons):
            raise SeqzooError(f"horizons must be a non-empty list of positive ints, got {horizons!r}")
        if huber_delta <= 0:
            raise SeqzooError(f"huber_delta must be positive, got {huber_delta!r}")
        self.horizons, self.huber_delta, self.instance_norm = horizons, float(huber_delta), bool(instance_norm)
        self.backbone_cfg = ModelConfig(
            vocab_size=1, d_model=d_model, n_layers=n_layers, mixer="attention",
            mixer_options={"attention": {"n_heads": n_heads, "bias": True}}, ffn="moe",
            ffn_hidden=ffn_hidden or 2 * d_model, moe_experts=n_experts, moe_top_k=top_k,
            moe_shared_expert=shared_expert, moe_aux_weight=aux_weight, moe_capacity_factor=capacity_factor)
        self.backbone_cfg.validate()
        self.embed_gate = nn.Linear(1, d_model, bias=False)
        self.embed_value = nn.Linear(1, d_model, bias=False)
        self.blocks = nn.ModuleList(Block(self.backbone_cfg, "attention") for _ in range(n_layers))
        for block in self.blocks:  # Time-MoE: biases on the q, k, v projections only
            block.mixer.o_proj.register_parameter("bias", None)
        self.norm = nn.RMSNorm(d_model)
        self.heads = nn.ModuleList(nn.Linear(d_model, h, bias=False) for h in horizons)
        self._init_weights()

    def _init_weights(self, std: float = 0.02) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        # the scalar embedding keeps PyTorch's default U(-1, 1): at std 0.02, SiLU(w_g x)·(w_e x) ≈ w_g w_e x² / 2
        # would be an even function of x near 0 and hide the sign of the input from the first layer
        self.embed_gate.reset_parameters()
        self.embed_value.reset_parameters()

    # -- backbone ---------------------------------------------------------------------------------------------------
    def hidden(self, series: Tensor, state: list | None = None) -> tuple[Tensor, list, Tensor]:
        """Run the decoder on ``series [N, T]`` (continuing from ``state``); returns the normalised hidden states
        ``[N, T, d]``, the new state (attention KV caches) and this pass's load-balancing loss (α-weighted)."""
        x = series[..., None]
        h = F.silu(self.embed_gate(x)) * self.embed_value(x)
        h, new_state = run_blocks(self.blocks, h, state)
        aux = torch.stack([b.ffn.aux_loss.float() for b in self.blocks if isinstance(b.ffn, SparseMoE)]).sum()
        return self.norm(h), new_state, aux

    def pretrain_loss(self, series: Tensor) -> tuple[Tensor, dict]:
        """Multi-resolution Huber loss + α·aux on a batch of (normalised) series ``[N, T]`` (module docstring)."""
        if series.dim() != 2 or series.shape[1] < 2:
            raise SeqzooError(f"pretrain_loss expects series [N, T] with T >= 2, got {list(series.shape)}")
        h, _, aux = self.hidden(series)
        per_head = []
        for head, horizon in zip(self.heads, self.horizons):
            target, valid = horizon_targets(series, horizon)
            err = F.huber_loss(head(h), target, delta=self.huber_delta, reduction="none")
            per_head.append((err * valid).sum() / valid.sum().clamp_min(1))
        forecast = torch.stack(per_head).mean()
        return forecast + aux, {"forecast": float(forecast.detach()), "aux": float(aux.detach())}

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        """Pretraining loss of a batch ``{"inputs": [N, T]}`` (what :class:`seqzoo.train.Trainer` calls)."""
        return self.pretrain_loss(batch["inputs"])[0]

    def schedule(self, steps: int) -> list[int]:
        """The head horizons used, in order, to forecast ``steps`` points (the last one may be truncated)."""
        plan, remaining = [], steps
        while remaining > 0:
            fitting = [h for h in self.horizons if h <= remaining]
            horizon = fitting[-1] if fitting else self.horizons[0]
            plan.append(horizon)
            remaining -= horizon
        return plan

    def generate(self, context: Tensor, steps: int, *, use_cache: bool = True) -> Tensor:
        """Forecast ``steps`` points after each (normalised) series of ``context [N, L]`` with the greedy head
        schedule; returns ``[N, steps]`` and sets ``aux_loss`` to the mean of the passes' load-balancing losses."""
        h, state, aux = self.hidden(context)
        last, seq, auxes, outputs, done = h[:, -1], context, [aux], [], 0
        for horizon in self.schedule(steps):
            pred = self.heads[self.horizons.index(horizon)](last)[:, : steps - done]
            outputs.append(pred)
            done += pred.shape[1]
            if done >= steps:
                break
            if use_cache:
                h, state, aux = self.hidden(pred, state)
            else:
                seq = torch.cat([seq, pred], dim=1)
                h, _, aux = self.hidden(seq)
            last = h[:, -1]
            auxes.append(aux)
        self.aux_loss = torch.stack(auxes).mean()
        return torch.cat(outputs, dim=1)

    # -- forecaster contract ------------------------------------------------------------------------------------------
    def forecast(self, x: Tensor, x_mark: Tensor | None, y_mark: Tensor | None) -> Tensor:
        return forecast_channel_independent(x, self.pred_len, self.generate, self.instance_norm)


__all__ = ["TimeMoE", "horizon_targets"]
