"""TSM2: the MambaMixer architecture for multivariate time-series forecasting.

Paper: "MambaMixer: Efficient Selective State Space Models with Dual Token and Channel Selection", Ali Behrouz,
Michele Santacatterina and Ramin Zabih, 2024, arXiv 2403.19888 (sec. 4, "TSM2"; the block and the weighted
averaging are sec. 3.2).

For a window ``x ∈ R^{L×C}`` (C variates):

1. RevIN-normalise each variate over the window (``revin``; see ``_instance_norm``).
2. Patch each variate (``patch_len``, ``stride``; PatchTST-style end padding) and embed every patch,
   ``E_{c,p} = W_E x_{c,p} + W_pos[p]`` — ``f_0 ∈ R^{C×P×d}``.
3. ``n_layers`` MambaMixer layers. Layer ℓ has a **selective time mixer** (a :class:`~seqzoo.mixers.ssm.mamba.Mamba`
   block scanning the P patch tokens of each variate; unidirectional, so causal in time as in the paper's TSM2)
   and a **selective variate mixer** (the same selective SSM scanning the C variates of each patch, in both
   directions: ``y = Mamba_fwd(u) + Flip(Mamba_bwd(Flip(u)))``, since variates have no order). Both read the
   paper's **weighted average of all earlier features** ``f_0, y_Time^(1), y_Variate^(1), …``:

       x_Time^(ℓ)    = Σ_{i<ℓ} α_{ℓ,i} y_Time^(i) + Σ_{i<ℓ} β_{ℓ,i} y_Variate^(i)         (y^(0) = f_0)
       x_Variate^(ℓ) = Σ_{i≤ℓ} θ_{ℓ,i} y_Time^(i) + Σ_{i<ℓ} γ_{ℓ,i} y_Variate^(i)
       y_Time^(ℓ)    = TimeMixer_ℓ(RMSNorm(x_Time^(ℓ))),   y_Variate^(ℓ) = VariateMixer_ℓ(RMSNorm(x_Variate^(ℓ)))

   with learnable scalars, initialised to 1 (then the stack starts as a plain pre-norm residual network); the
   weights and their averaging are exactly those of :class:`seqzoo.models.mambamixer_stack.MambaMixerLM`, whose
   ``average`` this model reuses.
4. A last weighted average, RMSNorm, and a linear head per variate from the flattened ``P·d`` features to the
   horizon (PatchTST's flatten head), then de-normalisation.

In the paper's TSM2 the channel mixer runs over the variates (its "channels"); the hidden-channel selective mixer of
the vision/LM MambaMixer (:class:`~seqzoo.mixers.ssm.mambamixer.SelectiveChannelMixer`) mixes the d features of a
token instead and is not what TSM2 uses. ``variate_mixer=False`` removes the variate mixers (channel independence,
"time-only S6", the natural ablation).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...mixers.ssm.mamba import Mamba
from ..mambamixer_stack import MambaMixerLM
from ._instance_norm import check_patching, instance_denormalize, instance_normalize, num_patches, patchify
from .base import Forecaster, register_forecaster


class BidirectionalMamba(nn.Module):
    """``Mamba_fwd(u) + Flip(Mamba_bwd(Flip(u)))`` over the sequence axis of ``u [M, S, d]`` (no state kept)."""

    def __init__(self, d_model: int, **options):
        super().__init__()
        self.forward_scan = Mamba(d_model, **options)
        self.backward_scan = Mamba(d_model, **options)

    def forward(self, u: Tensor) -> Tensor:
        return self.forward_scan(u)[0] + self.backward_scan(u.flip(1))[0].flip(1)


@register_forecaster("tsm2", paper="MambaMixer: Efficient Selective State Space Models with Dual Token and "
                                   "Channel Selection (TSM2)", arxiv="2403.19888")
class TSM2(Forecaster):
    """TSM2 (arXiv 2403.19888): patch embedding, MambaMixer layers (causal selective time mixer + bidirectional
    selective variate mixer) joined by learnable weighted averages of all earlier features, flatten head.

    Options: ``d_model``, ``n_layers``, ``patch_len``, ``stride``, ``d_state``, ``expand``, ``d_conv`` (of every
    Mamba block), ``variate_mixer`` (False: time mixers only), ``revin``, ``dropout`` (before the head),
    ``impl`` of the selective scans.
    """

    ett_recipe = {
        "options": {"d_model": 64, "n_layers": 2, "patch_len": 16, "stride": 8, "d_state": 16, "dropout": 0.1},
        "lr": 1e-3, "batch_size": 32, "epochs": 10, "patience": 3,
        "source": "no official TSM2 code or script exists; TSLib long-term defaults (batch 32, 10 epochs, patience "
                  "3, lradj type1), PatchTST's patching (16/8); d_model 64, 2 layers and lr 1e-3 fixed beforehand for "
                  "this small model, not tuned",
    }

    def __init__(self, seq_len: int, pred_len: int, n_vars: int, n_time: int = 4, d_model: int = 64,
                 n_layers: int = 2, patch_len: int = 16, stride: int = 8, d_state: int = 16, expand: int = 2,
                 d_conv: int = 4, variate_mixer: bool = True, revin: bool = True, dropout: float = 0.1,
                 impl: str = "auto"):
        super().__init__(seq_len, pred_len, n_vars, n_time)
        check_patching("tsm2", seq_len, patch_len, stride)
        self.patch_len, self.stride, self.revin, self.n_layers = patch_len, stride, revin, n_layers
        self.n_patches = num_patches(seq_len, patch_len, stride)
        mamba = {"d_state": d_state, "expand": expand, "d_conv": d_conv, "impl": impl}
        self.patch_embed = nn.Linear(patch_len, d_model)
        self.position = nn.Parameter(0.02 * torch.randn(self.n_patches, d_model))
        self.time_mixers = nn.ModuleList(Mamba(d_model, **mamba) for _ in range(n_layers))
        self.variate_mixers = (nn.ModuleList(BidirectionalMamba(d_model, **mamba) for _ in range(n_layers))
                               if variate_mixer else None)
        subblocks = 2 * n_layers if variate_mixer else n_layers
        self.norms = nn.ModuleList(nn.RMSNorm(d_model) for _ in range(subblocks))
        # w_k ∈ R^k for sub-block k = 1 … (sub-blocks) and the head's average (MambaMixerLM's layout), all ones
        self.average_weights = nn.ParameterList(nn.Parameter(torch.ones(k)) for k in range(1, subblocks + 2))
        self.final_norm = nn.RMSNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.n_patches * d_model, pred_len)

    def encode(self, x: Tensor) -> Tensor:
        """Normalised ``x [B, L, C]`` → the final averaged features ``[B, C, P, d]`` (before the final norm)."""
        batch, _, n_vars = x.shape
        tokens = self.patch_embed(patchify(x.transpose(1, 2), self.patch_len, self.stride)) + self.position
        d = tokens.shape[-1]
        features = [tokens]                                                   # f_0 [B, C, P, d]
        k = 0
        for layer in range(self.n_layers):
            h = self.norms[k](MambaMixerLM.average(self.average_weights[k], features))
            y, _ = self.time_mixers[layer](h.reshape(batch * n_vars, self.n_patches, d))
            features.append(y.view(batch, n_vars, self.n_patches, d))
            k += 1
            if self.variate_mixers is not None:
                h = self.norms[k](MambaMixerLM.average(self.average_weights[k], features))
                h = h.transpose(1, 2).reshape(batch * self.n_patches, n_vars, d)    # scan over the variates
                y = self.variate_mixers[layer](h)
                features.append(y.view(batch, self.n_patches, n_vars, d).transpose(1, 2))
                k += 1
        return MambaMixerLM.average(self.average_weights[k], features)

    def forecast(self, x: Tensor, x_mark: Tensor | None, y_mark: Tensor | None) -> Tensor:
        if self.revin:
            x, mean, std = instance_normalize(x)
        h = self.final_norm(self.encode(x))                                       # [B, C, P, d]
        y = self.head(self.dropout(h.flatten(2))).transpose(1, 2)                 # [B, H, C]
        return instance_denormalize(y, mean, std) if self.revin else y


__all__ = ["TSM2", "BidirectionalMamba"]
