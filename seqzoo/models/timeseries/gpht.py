"""GPHT: a generative pretrained hierarchical transformer that forecasts any horizon autoregressively.

Paper: "Generative Pretrained Hierarchical Transformer for Time Series Forecasting", Liu, Zhao, Lin, Wang and Wu,
KDD 2024, arXiv 2402.16516 (reference notes: systems-part1.md §31, anchors-domains.md §6.3).

Channel independence: each variate of a window is a univariate series, normalised by its own lookback mean and
standard deviation (and mapped back after forecasting). The series is cut into tokens of ``P`` (``token_len``)
points, x = [τ_0, τ_1, …, τ_{n−1}], τ_j ∈ R^P. A hierarchy of stages s = 1 … S with pooling rates
r_1 > … > r_S (default 8, 4, 2, 1; each divides P) each fit what the stages before them left unexplained:

    u^1 = x                                                     (tokens of the normalised series)
    z_j^s = Pool_{r_s}(u_j^s) ∈ R^{P / r_s}                     max (or average) pooling inside each token
    e_j^s = z_j^s W_in^s + PE(j)                                patch embedding + sinusoidal position
    h^s = CausalTransformer^s(e^s)                              token j attends to tokens ≤ j
    p_j^s = Norm(h_j^s) W_out^s ∈ R^P                           stage s's forecast of the next token τ_{j+1}
    u_j^{s+1} = u_j^s − p_{j−1}^s  (j ≥ 1),  u_0^{s+1} = u_0^s   the residual left for the next stage
    τ̂_{j+1} = Σ_s p_j^s                                         the forecast is the sum over stages

Coarse stages see a max-pooled series and model the low-frequency shape; finer stages model the residual. The
pretraining loss is the MSE of τ̂_{j+1} against τ_{j+1} at every position (next-token prediction over a mixture
of data sets; :mod:`seqzoo.tasks.timeseries.pretrain`). Inference appends τ̂ to the series and repeats until the
horizon is covered (one model for every horizon, no horizon-specific head). Everything is causal at token
granularity (pooling never crosses a token boundary), so one parallel pass gives every next-token forecast.

Blocks reuse :class:`seqzoo.models.causal_lm.Block` (pre-RMSNorm, softmax attention without RoPE since positions
are added to the embeddings, GELU MLP); the paper's code uses post-norm ``nn.TransformerEncoder`` layers, a
difference of layer placement only. A lookback that is not a multiple of ``P`` loses its oldest
``L mod P`` points (the tokens must align with the end of the series).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...core.errors import SeqzooError
from ..causal_lm import Block, run_blocks
from ..config import ModelConfig
from ._instance_norm import forecast_channel_independent
from .base import Forecaster, register_forecaster

PAPER = "Generative Pretrained Hierarchical Transformer for Time Series Forecasting"


def sinusoidal_positions(n: int, d: int, *, device=None, dtype=torch.float32) -> Tensor:
    """PE(j)_{2i} = sin(j / 10000^{2i/d}), PE(j)_{2i+1} = cos(j / 10000^{2i/d}); shape [n, d]."""
    pos = torch.arange(n, dtype=torch.float64, device=device)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, d, 2, dtype=torch.float64, device=device) / d)
    pe = torch.zeros(n, d, dtype=torch.float64, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)[:, : d // 2]
    return pe.to(dtype)


class GPHTStage(nn.Module):
    """One stage: pool inside each token, embed, causal transformer, next-token head."""

    def __init__(self, token_len: int, rate: int, d_model: int, n_layers: int, n_heads: int, pooling: str):
        super().__init__()
        self.rate, self.token_len, self.pooling = rate, token_len, pooling
        self.embed = nn.Linear(token_len // rate, d_model)
        cfg = ModelConfig(vocab_size=1, d_model=d_model, n_layers=n_layers, mixer="attention",
                          mixer_options={"attention": {"n_heads": n_heads, "rope": False}}, ffn="mlp")
        self.blocks = nn.ModuleList(Block(cfg, "attention") for _ in range(n_layers))
        self.norm = nn.RMSNorm(d_model)
        self.head = nn.Linear(d_model, token_len)

    def forward(self, tokens: Tensor, state: list | None = None, offset: int = 0) -> tuple[Tensor, list]:
        """``tokens [N, n, P]`` (at positions ``offset …``, after the tokens behind ``state``) → next-token
        forecasts ``[N, n, P]`` and the new state (the attention KV caches)."""
        n_series, n_tokens, length = tokens.shape
        flat = tokens.reshape(n_series * n_tokens, 1, length)
        pool = F.max_pool1d if self.pooling == "max" else F.avg_pool1d
        pooled = pool(flat, self.rate, self.rate).reshape(n_series, n_tokens, length // self.rate)
        positions = sinusoidal_positions(offset + n_tokens, self.embed.out_features, device=tokens.device,
                                         dtype=pooled.dtype)[offset:]
        h = self.embed(pooled) + positions
        h, new_state = run_blocks(self.blocks, h, state)
        return self.head(self.norm(h)), new_state


@register_forecaster("gpht", paper=PAPER, arxiv="2402.16516")
class GPHT(Forecaster):
    """GPHT forecaster (module docstring): hierarchical residual stages, autoregressive rollout to any horizon.

    Options: ``token_len`` (P), ``pool_rates`` (one stage per rate, coarsest first; each must divide P),
    ``d_model``, ``n_layers`` (per stage), ``n_heads``, ``pooling`` ("max" or "avg"), ``instance_norm``.
    Any lookback of at least P points works (``any_length``).
    """

    any_length = True
    ett_recipe = {
        "options": {},
        "lr": 1e-4, "batch_size": 32, "epochs": 10, "patience": 3,
        "cpu_feasible": False,
        "source": "TSLib long-term-forecast defaults (Adam lr 1e-4, batch 32, 10 epochs, patience 3); the GPHT "
                  "repository's scripts pretrain on a mixture (scripts/pretrain.sh: lr 1e-4) and fine-tune, with "
                  "no from-scratch ETTh1 script",
    }

    def __init__(self, seq_len: int, pred_len: int, n_vars: int, n_time: int = 4, *, token_len: int = 24,
                 pool_rates: tuple[int, ...] | list[int] = (8, 4, 2, 1), d_model: int = 64, n_layers: int = 1,
                 n_heads: int = 4, pooling: str = "max", instance_norm: bool = True):
        super().__init__(seq_len, pred_len, n_vars, n_time)
        if not isinstance(token_len, int) or isinstance(token_len, bool) or token_len <= 0:
            raise SeqzooError(f"token_len must be a positive int, got {token_len!r}")
        rates = tuple(pool_rates)
        if not rates or any(not isinstance(r, int) or isinstance(r, bool) or r <= 0 or token_len % r for r in rates):
            raise SeqzooError(f"pool_rates must be positive ints dividing token_len={token_len}, got {pool_rates!r}")
        if pooling not in ("max", "avg"):
            raise SeqzooError(f"unknown pooling {pooling!r}; valid: avg, max")
        if seq_len < token_len:
            raise SeqzooError(f"seq_len={seq_len} is shorter than one token (token_len={token_len}); "
                              f"valid: seq_len >= token_len")
        self.token_len, self.pool_rates, self.instance_norm = token_len, rates, bool(instance_norm)
        self.stages = nn.ModuleList(GPHTStage(token_len, r, d_model, n_layers, n_heads, pooling) for r in rates)

    # -- the hierarchy ------------------------------------------------------------------------------------------------
    def tokenize(self, series: Tensor) -> Tensor:
        """``[N, T]`` → ``[N, T // P, P]``, dropping the oldest ``T mod P`` points."""
        n_tokens = series.shape[1] // self.token_len
        if n_tokens == 0:
            raise SeqzooError(f"GPHT needs at least token_len={self.token_len} points, got {series.shape[1]}")
        return series[:, series.shape[1] - n_tokens * self.token_len:].reshape(series.shape[0], n_tokens,
                                                                                 self.token_len)

    def stage_forecasts(self, tokens: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Each stage's input ``u^s`` and next-token forecasts ``p^s`` (both ``[N, n, P]``)."""
        inputs, preds, residual = [], [], tokens
        for stage in self.stages:
            inputs.append(residual)
            pred, _ = stage(residual)
            preds.append(pred)
            shifted = torch.cat([torch.zeros_like(pred[:, :1]), pred[:, :-1]], dim=1)
            residual = residual - shifted
        return inputs, preds

    def next_tokens(self, tokens: Tensor) -> Tensor:
        """τ̂_{j+1} = Σ_s p_j^s for every position j: ``[N, n, P]``."""
        return torch.stack(self.stage_forecasts(tokens)[1]).sum(0)

    def pretrain_loss(self, series: Tensor) -> tuple[Tensor, dict]:
        """MSE of every next-token forecast on a batch of (normalised) series ``[N, T]`` (T ≥ 2P)."""
        if series.dim() != 2 or series.shape[1] < 2 * self.token_len:
            raise SeqzooError(f"pretrain_loss expects series [N, T] with T >= 2·token_len = {2 * self.token_len}, "
                              f"got {list(series.shape)}")
        tokens = self.tokenize(series)
        loss = F.mse_loss(self.next_tokens(tokens)[:, :-1], tokens[:, 1:])
        return loss, {"mse": float(loss.detach())}

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        """Pretraining loss of ``{"inputs": [N, T]}`` (what :class:`seqzoo.train.Trainer` calls)."""
        return self.pretrain_loss(batch["inputs"])[0]

    def generate(self, context: Tensor, steps: int, *, use_cache: bool = True) -> Tensor:
        """Forecast ``steps`` points after each (normalised) series of ``context [N, L]``: predict the next token,
        append it, repeat; returns ``[N, steps]``.

        With ``use_cache`` each appended token is run through the stages once, threading every stage's KV cache:
        by causality the stage inputs of earlier tokens never change, and the new token's stage-s input is the
        token minus the stage-(s−1) forecasts made for it (u^{s} = u^{s−1} − p^{s−1}_{prev}).
        ``use_cache=False`` recomputes the whole hierarchy each step (the reference it is tested against)."""
        tokens = self.tokenize(context)
        outputs, done = [], 0
        if not use_cache:
            while done < steps:
                nxt = self.next_tokens(tokens)[:, -1:]
                outputs.append(nxt[:, 0])
                done += self.token_len
                tokens = torch.cat([tokens, nxt], dim=1)
            return torch.cat(outputs, dim=1)[:, :steps]
        states, last_preds, residual = [], [], tokens
        for stage in self.stages:  # prefill
            pred, state = stage(residual, None, 0)
            states.append(state)
            last_preds.append(pred[:, -1:])
            residual = residual - torch.cat([torch.zeros_like(pred[:, :1]), pred[:, :-1]], dim=1)
        offset = tokens.shape[1]
        nxt = torch.stack(last_preds).sum(0)
        while True:
            outputs.append(nxt[:, 0])
            done += self.token_len
            if done >= steps:
                break
            residual = nxt
            for i, stage in enumerate(self.stages):
                pred, states[i] = stage(residual, states[i], offset)
                residual = residual - last_preds[i]
                last_preds[i] = pred
            offset += 1
            nxt = torch.stack(last_preds).sum(0)
        return torch.cat(outputs, dim=1)[:, :steps]

    # -- forecaster contract ------------------------------------------------------------------------------------------
    def forecast(self, x: Tensor, x_mark: Tensor | None, y_mark: Tensor | None) -> Tensor:
        return forecast_channel_independent(x, self.pred_len, self.generate, self.instance_norm)


__all__ = ["GPHT", "GPHTStage", "sinusoidal_positions"]
