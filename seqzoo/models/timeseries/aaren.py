"""An Aaren forecaster: a stack of Aaren layers over patch tokens, forecasting by autoregressive rollout in O(1) memory.

Paper: "Attention as an RNN", Leo Feng, Frederick Tung, Hajimirsadeghi Hossein, Mohamed Osama Ahmed, Yoshua Bengio
and Greg Mori, 2024, arXiv 2405.13956 (sec. 3.3, Aaren; sec. 4.3, time-series forecasting, where Aaren replaces
the Transformer of Time-Series-Library's models). The layer is :class:`seqzoo.mixers.rnn.aaren.Aaren`:

    o_t = Σ_{i≤t} exp(q·k_i/√d) v_i / Σ_{i≤t} exp(q·k_i/√d)          (a learned constant query q per head)

computed in parallel by a prefix scan over the (max, sum, weighted sum) triples, or as an RNN whose state
(m, u, w) has a size independent of t.

The forecaster (each variate on its own, RevIN-normalised):

    tokens     p_1 … p_T                    non-overlapping patches of ``patch_len`` values (the oldest
                                            ``seq_len mod patch_len`` values are dropped when it does not divide)
    embedding  e_j = W_in p_j (+ W_mark m_j) (m_j: the calendar features of the patch's first step, when given)
    backbone   pre-norm residual blocks  h ← h + Aaren(RMSNorm(h)),  h ← h + FFN(RMSNorm(h))
               (seqzoo's CausalLM block, ``seqzoo.models.causal_lm.Block``)
    head       p̂_{j+1} = W_out RMSNorm(h_j)  (next-patch prediction)

Training (parallel form): the horizon MSE of the rollout (the trainer's loss) plus the teacher-forced next-patch
MSE over the lookback, ``mean_j ‖p̂_{j+1} − p_{j+1}‖²``, reported as ``aux_loss`` (weight ``next_patch_weight``).
Forecasting: the context runs through the parallel scan once, then every further patch is produced by one
recurrent step from the carried state — the memory of the rollout does not grow with the horizon (Aaren's
claim), and its outputs equal running the parallel form over the context plus the generated patches (tested).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...core.errors import SeqzooError
from ..causal_lm import Block, run_blocks
from ..config import ModelConfig
from ._instance_norm import instance_denormalize, instance_normalize
from .base import Forecaster, register_forecaster


@register_forecaster("aaren", paper="Attention as an RNN", arxiv="2405.13956")
class AarenForecaster(Forecaster):
    """Aaren forecaster (arXiv 2405.13956): patch tokens → Aaren blocks → next-patch head, rolled out
    autoregressively from the Aaren state (constant memory per step).

    Options: ``d_model``, ``n_layers``, ``n_heads``, ``patch_len``, ``ffn`` ("glu", "mlp", "none"), ``revin``,
    ``use_marks`` (add the calendar features of each patch), ``next_patch_weight``, ``impl`` of the scan for
    the context ("auto", "parallel", "recurrent").
    """

    ett_recipe = {
        "options": {"d_model": 64, "n_layers": 2, "n_heads": 4, "patch_len": 16},
        "lr": 1e-3, "batch_size": 32, "epochs": 10, "patience": 3,
        "source": "the paper trains Aaren in place of TSLib's Transformer with TSLib's settings (epochs 10, "
                  "patience 3, batch 32); d_model 64, 2 layers, patch 16 and lr 1e-3 fixed beforehand for CPU",
    }

    def __init__(self, seq_len: int, pred_len: int, n_vars: int, n_time: int = 4, d_model: int = 64,
                 n_layers: int = 2, n_heads: int = 4, patch_len: int = 16, ffn: str = "glu", revin: bool = True,
                 use_marks: bool = True, next_patch_weight: float = 1.0, impl: str = "auto"):
        super().__init__(seq_len, pred_len, n_vars, n_time)
        if isinstance(patch_len, bool) or not isinstance(patch_len, int) or not 1 <= patch_len <= seq_len:
            raise SeqzooError(f"aaren forecaster patch_len must be an int in [1, seq_len={seq_len}], got {patch_len!r}")
        self.patch_len, self.revin, self.next_patch_weight = patch_len, revin, float(next_patch_weight)
        self.n_context = seq_len // patch_len
        self.n_steps = math.ceil(pred_len / patch_len)
        cfg = ModelConfig(d_model=d_model, n_layers=n_layers, mixer="aaren", ffn=ffn,
                          mixer_options={"aaren": {"n_heads": n_heads, "impl": impl}})
        cfg.validate()
        self.embed = nn.Linear(patch_len, d_model)
        self.mark_embed = nn.Linear(n_time, d_model) if use_marks and n_time > 0 else None
        self.blocks = nn.ModuleList(Block(cfg, "aaren") for _ in range(n_layers))
        self.norm = nn.RMSNorm(d_model)
        self.head = nn.Linear(d_model, patch_len)

    # -- pieces -----------------------------------------------------------------------------------------------------
    def embed_patches(self, patches: Tensor, marks: Tensor | None) -> Tensor:
        """``patches [M, T, patch_len]`` (+ ``marks [M, T, n_time]``) → ``[M, T, d_model]``."""
        e = self.embed(patches)
        return e + self.mark_embed(marks) if self.mark_embed is not None and marks is not None else e

    def step(self, tokens: Tensor, state: list | None = None) -> tuple[Tensor, list]:
        """Run the backbone over embedded ``tokens [M, T, d]`` from ``state``: ``(next-patch predictions
        [M, T, patch_len], state)``. One call over many tokens uses the parallel scan, one token the recurrence."""
        h = tokens
        h, new_state = run_blocks(self.blocks, h, state)
        return self.head(self.norm(h)), new_state

    def _patch_marks(self, marks: Tensor | None, n_vars: int, n_patches: int, drop: int) -> Tensor | None:
        """Marks of each patch's first step, repeated per variate: ``[B·C, n_patches, n_time]``."""
        if marks is None or self.mark_embed is None:
            return None
        first = marks[:, drop::self.patch_len][:, :n_patches]
        if first.shape[1] < n_patches:  # the last horizon patch may start past the given marks: repeat the last
            first = torch.cat([first, first[:, -1:].expand(-1, n_patches - first.shape[1], -1)], dim=1)
        return first.repeat_interleave(n_vars, dim=0)

    def rollout(self, context: Tensor, n_steps: int, context_marks: Tensor | None = None,
                future_marks: Tensor | None = None) -> tuple[Tensor, Tensor, list]:
        """``context [M, T, patch_len]`` → ``(predicted patches [M, n_steps, patch_len], teacher-forced predictions
        over the context [M, T, patch_len], final state)``. The context goes through the parallel form once; each
        further patch is one recurrent step fed with the previous prediction."""
        ctx_pred, state = self.step(self.embed_patches(context, context_marks))
        out = [ctx_pred[:, -1:]]
        for s in range(1, n_steps):
            marks = future_marks[:, s - 1:s] if future_marks is not None else None
            nxt, state = self.step(self.embed_patches(out[-1], marks), state)
            out.append(nxt)
        return torch.cat(out, dim=1), ctx_pred, state

    # -- forecaster -------------------------------------------------------------------------------------------------
    def forecast(self, x: Tensor, x_mark: Tensor | None, y_mark: Tensor | None) -> Tensor:
        batch, length, n_vars = x.shape
        if self.revin:
            x, mean, std = instance_normalize(x)
        drop = length % self.patch_len
        series = x[:, drop:].transpose(1, 2).reshape(batch * n_vars, -1)
        context = series.view(batch * n_vars, -1, self.patch_len)
        ctx_marks = self._patch_marks(x_mark, n_vars, context.shape[1], drop)
        # rollout step s ≥ 1 is fed the predicted horizon patch s − 1, whose first step is (s − 1)·patch_len
        fut_marks = (self._patch_marks(y_mark, n_vars, self.n_steps - 1, 0)
                     if y_mark is not None and self.n_steps > 1 else None)
        pred, ctx_pred, _ = self.rollout(context, self.n_steps, ctx_marks, fut_marks)
        if context.shape[1] > 1:
            self.aux_loss = self.next_patch_weight * F.mse_loss(ctx_pred[:, :-1], context[:, 1:])
        y = pred.reshape(batch, n_vars, -1)[:, :, :self.pred_len].transpose(1, 2)
        return instance_denormalize(y, mean, std) if self.revin else y


__all__ = ["AarenForecaster"]
