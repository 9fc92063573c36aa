"""AutoTimes: a frozen causal LM as an autoregressive forecaster over segment tokens, with textual timestamps.

Paper: "AutoTimes: Autoregressive Time Series Forecasters via Large Language Models", Yong Liu, Guo Qin, Xiangdong
Huang, Jianmin Wang and Mingsheng Long, NeurIPS 2024, arXiv 2402.02370.

Each variate on its own (channel independence), normalised by its lookback mean and standard deviation:

    segments      s_1 … s_N ∈ R^S           non-overlapping, S = ``token_len`` (the oldest ``seq_len mod S``
                                            values are dropped when S does not divide the lookback)
    embedding     e_i = Enc(s_i)             an MLP (``mlp_layers`` hidden layers of ``mlp_hidden``) into the LM
                                            width d — with timestamps, ``e_i ← e_i/‖e_i‖ + α · t_i/‖t_i‖`` (α learnable)
    timestamps    t_i = LM(text_i)[last]     the LM's last hidden state on the text "This is Time Series from
                                            <start> to <end>" of segment i ("position embedding" by text);
                                            computed without gradients and cached per text (precomputed)
    LM            h_1 … h_N = LM(e_1 … e_N)  the frozen causal LM on input embeddings (causal: h_i sees e_{≤i})
    next segment  ŝ_{i+1} = Dec(h_i)         an MLP back to S values

Only Enc, Dec and α are trained (:meth:`AutoTimes.trainable_parameters`). Training is next-segment prediction:
the trainer's horizon MSE on the rollout plus the teacher-forced loss ``mean_i ‖ŝ_{i+1} − s_{i+1}‖²`` over the
lookback, reported as ``aux_loss`` (weight ``next_segment_weight``). Any horizon is forecast by rolling out: the
predicted segment is embedded (with its timestamp from ``y_mark``) and appended, continuing the LM's key/value cache
(or recurrent state) — one model for every horizon (:meth:`AutoTimes.forecast_horizon`).

In-context forecasting (:meth:`AutoTimes.forecast_in_context`): segments of another series (normalised by their
own statistics, without timestamps) are prepended to the lookback's as a prompt, and the rollout continues after
the lookback.

Timestamps come from the protocol's ``timeF`` features (hour of day, day of week, day of month, day of year,
each ``index / max − 0.5``), which are decoded back to a calendar text (the year is unknown; a non-leap year is
assumed for the month name). With other mark layouts the text lists the feature values.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...core.errors import SeqzooError
from ._instance_norm import instance_denormalize, instance_normalize
from .base import Forecaster, register_forecaster
from .lm_backbone import LMBackbone, load_lm_backbone

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_STARTS = (0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)


def timef_to_text(mark: list[float]) -> str:
    """One ``timeF`` mark (hourly: hour, weekday, day of month, day of year, each in [−0.5, 0.5]) as text."""
    if len(mark) != 4:
        return " ".join(f"{v:+.3f}" for v in mark)
    hour = round((mark[0] + 0.5) * 23)
    weekday = min(max(round((mark[1] + 0.5) * 6), 0), 6)
    day_of_year = min(max(round((mark[3] + 0.5) * 365), 0), 364)
    month = max(i for i, start in enumerate(_MONTH_STARTS) if start <= day_of_year)
    day = round((mark[2] + 0.5) * 30) + 1
    return f"{_DAYS[weekday]} {_MONTHS[month]} {day:02d} {hour:02d}:00"


def _mlp(d_in: int, d_out: int, hidden: int, layers: int) -> nn.Sequential:
    dims = [d_in] + [hidden] * layers
    parts: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        parts += [nn.Linear(a, b), nn.GELU()]
    return nn.Sequential(*parts, nn.Linear(dims[-1], d_out))


@register_forecaster("autotimes", paper="AutoTimes: Autoregressive Time Series Forecasters via Large Language Models",
                     arxiv="2402.02370")
class AutoTimes(Forecaster):
    """AutoTimes (arXiv 2402.02370): segment tokens + textual-timestamp position embeddings through a frozen causal
    LM, next-segment prediction, autoregressive rollout to any horizon, in-context forecasting.

    Options: ``backbone`` (None: a fresh random byte LM; or a seqzoo checkpoint / Hugging Face GPT-2 directory),
    ``lm_layers``, ``token_len`` (S), ``mlp_hidden``, ``mlp_layers``, ``use_timestamps``, ``revin``,
    ``next_segment_weight``.
    """

    ett_recipe = {
        "options": {"backbone": None, "token_len": 24, "mlp_hidden": 256, "mlp_layers": 2},
        "lr": 5e-4, "batch_size": 32, "epochs": 10, "patience": 3,
        "source": "thuml/AutoTimes (2-layer MLPs of width 256 per the reference notes); token_len 24 instead of "
                  "the paper's 96 because the protocol's lookback is 96 (paper: 672); lr 5e-4 fixed beforehand, "
                  "not verified against the paper's script; backbone None = a random byte LM unless a pretrained "
                  "one is passed",
    }

    def __init__(self, seq_len: int, pred_len: int, n_vars: int, n_time: int = 4,
                 backbone: str | os.PathLike | LMBackbone | None = None, lm_layers: int | None = None,
                 token_len: int = 24, mlp_hidden: int = 256, mlp_layers: int = 2, use_timestamps: bool = True,
                 revin: bool = True, next_segment_weight: float = 1.0):
        super().__init__(seq_len, pred_len, n_vars, n_time)
        if isinstance(token_len, bool) or not isinstance(token_len, int) or not 1 <= token_len <= seq_len:
            raise SeqzooError(f"autotimes token_len must be an int in [1, seq_len={seq_len}], got {token_len!r}")
        for name, value in (("mlp_hidden", mlp_hidden), ("mlp_layers", mlp_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SeqzooError(f"autotimes {name} must be a positive int, got {value!r}")
        self.token_len, self.revin, self.use_timestamps = token_len, revin, use_timestamps
        self.next_segment_weight = float(next_segment_weight)
        lm = backbone if isinstance(backbone, LMBackbone) else load_lm_backbone(backbone)
        self.backbone = lm.truncate(lm_layers).freeze(train_norms=False)
        d = self.backbone.d_model
        self.encoder = _mlp(token_len, d, mlp_hidden, mlp_layers)
        self.decoder = _mlp(d, token_len, mlp_hidden, mlp_layers)
        self.add_scale = nn.Parameter(torch.ones(())) if use_timestamps else None
        self._text_cache: dict[str, Tensor] = {}

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()        # the frozen LM never uses dropout
        return self

    # -- timestamps -------------------------------------------------------------------------------------------------
    def timestamp_embeddings(self, start_marks: Tensor, end_marks: Tensor) -> Tensor:
        """Embeddings ``[B, N, d]`` of the texts "This is Time Series from <start> to <end>" for marks
        ``[B, N, n_time]``; each distinct text is run through the LM once and cached."""
        starts, ends = start_marks.detach().cpu().tolist(), end_marks.detach().cpu().tolist()
        texts = [f"This is Time Series from {timef_to_text(a)} to {timef_to_text(b)}"
                 for row_a, row_b in zip(starts, ends) for a, b in zip(row_a, row_b)]
        missing = sorted({t for t in texts if t not in self._text_cache})
        if missing:
            for text, vec in zip(missing, self.backbone.embed_texts(missing)):
                self._text_cache[text] = vec
        out = torch.stack([self._text_cache[t] for t in texts]).to(start_marks.device)
        return out.view(start_marks.shape[0], start_marks.shape[1], -1)

    def _segment_stamps(self, marks: Tensor | None, n_segments: int, offset: int) -> Tensor | None:
        """Start/end marks of segment i (steps ``offset + i·S`` and ``offset + i·S + S − 1``) → embeddings."""
        if marks is None or not self.use_timestamps:
            return None
        start = torch.arange(n_segments, device=marks.device) * self.token_len + offset
        end = (start + self.token_len - 1).clamp(max=marks.shape[1] - 1)
        return self.timestamp_embeddings(marks[:, start.clamp(max=marks.shape[1] - 1)], marks[:, end])

    # -- the autoregressive core ------------------------------------------------------------------------------------
    def embed_segments(self, segments: Tensor, stamps: Tensor | None) -> Tensor:
        """``segments [M, N, S]`` (+ timestamp embeddings ``[M, N, d]``) → LM input embeddings ``[M, N, d]``."""
        e = self.encoder(segments)
        if self.add_scale is None:
            return e
        e = F.normalize(e, dim=-1)      # same scale with or without a timestamp (prompts, missing marks)
        return e if stamps is None else e + self.add_scale * F.normalize(stamps.to(e.dtype), dim=-1)

    def predict_next(self, embeds: Tensor, state: list | None = None) -> tuple[Tensor, list]:
        """LM over ``embeds [M, N, d]`` (continuing ``state``) → ``(ŝ [M, N, S], state)``: output i predicts
        segment i + 1 and depends on embeddings ≤ i only."""
        hidden, state = self.backbone(embeds, state)
        return self.decoder(hidden), state

    def rollout(self, embeds: Tensor, n_steps: int, future_stamps: Tensor | None = None,
                state: list | None = None) -> tuple[Tensor, Tensor]:
        """Given the embedded context, predict ``n_steps`` segments autoregressively with the LM cache:
        ``(predicted segments [M, n_steps, S], teacher-forced predictions over the context [M, N, S])``."""
        ctx_pred, state = self.predict_next(embeds, state)
        out = [ctx_pred[:, -1:]]
        for s in range(1, n_steps):
            stamp = future_stamps[:, s - 1:s] if future_stamps is not None else None
            nxt, state = self.predict_next(self.embed_segments(out[-1], stamp), state)
            out.append(nxt)
        return torch.cat(out, dim=1), ctx_pred

    # -- forecasting ------------------------------------------------------------------------------------------------
    def _segments(self, x: Tensor) -> tuple[Tensor, int]:
        """``x [B, L, C]`` (normalised) → ``([B·C, N, S], dropped)``."""
        batch, length, n_vars = x.shape
        drop = length % self.token_len
        series = x[:, drop:].transpose(1, 2).reshape(batch * n_vars, -1)
        return series.view(batch * n_vars, -1, self.token_len), drop

    def forecast_horizon(self, x: Tensor, horizon: int, x_mark: Tensor | None = None, y_mark: Tensor | None = None,
                         prompt: Tensor | None = None) -> Tensor:
        """Forecast ``horizon`` steps (any length) from ``x [B, L, C]``; ``prompt [B, Lp, C]`` (optional) is another
        series prepended as in-context segments. Sets ``aux_loss`` (teacher-forced next-segment loss)."""
        if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
            raise SeqzooError(f"forecast horizon must be a positive int, got {horizon!r}")
        batch, _, n_vars = x.shape
        if self.revin:
            x, mean, std = instance_normalize(x)
        segments, drop = self._segments(x)
        repeat = (lambda t: t.repeat_interleave(n_vars, dim=0) if t is not None else None)
        embeds = self.embed_segments(segments, repeat(self._segment_stamps(x_mark, segments.shape[1], drop)))
        n_prompt = 0
        if prompt is not None:
            if prompt.dim() != 3 or prompt.shape[0] != batch or prompt.shape[2] != n_vars:
                raise SeqzooError(f"in-context prompt must be [{batch}, Lp, {n_vars}], got {list(prompt.shape)}")
            if prompt.shape[1] < self.token_len:
                raise SeqzooError(f"in-context prompt of {prompt.shape[1]} steps is shorter than one segment "
                                  f"(token_len={self.token_len})")
            p_segments, _ = self._segments(instance_normalize(prompt)[0] if self.revin else prompt)
            n_prompt = p_segments.shape[1]
            embeds = torch.cat([self.embed_segments(p_segments, None), embeds], dim=1)
        n_steps = math.ceil(horizon / self.token_len)
        if y_mark is not None and (y_mark.dim() != 3 or y_mark.shape[:2] != (batch, horizon)):
            raise SeqzooError(f"y_mark must have shape [{batch}, {horizon}, n_time], got {list(y_mark.shape)}")
        future = repeat(self._segment_stamps(y_mark, n_steps - 1, 0)) if y_mark is not None and n_steps > 1 else None
        pred, ctx_pred = self.rollout(embeds, n_steps, future)
        ctx_pred = ctx_pred[:, n_prompt:]
        if segments.shape[1] > 1:
            self.aux_loss = self.next_segment_weight * F.mse_loss(ctx_pred[:, :-1], segments[:, 1:])
        y = pred.reshape(batch, n_vars, -1)[:, :, :horizon].transpose(1, 2)
        return instance_denormalize(y, mean, std) if self.revin else y

    def forecast_in_context(self, prompt: Tensor, x: Tensor, x_mark: Tensor | None = None,
                            y_mark: Tensor | None = None) -> Tensor:
        """In-context forecasting: ``prompt [B, Lp, C]`` (another series) prepended to the lookback's segments."""
        return self.forecast_horizon(x, self.pred_len, x_mark, y_mark, prompt=prompt)

    def forecast(self, x: Tensor, x_mark: Tensor | None, y_mark: Tensor | None) -> Tensor:
        return self.forecast_horizon(x, self.pred_len, x_mark, y_mark)


__all__ = ["AutoTimes", "timef_to_text"]
