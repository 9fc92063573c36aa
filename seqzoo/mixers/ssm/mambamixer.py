"""MambaMixer: a selective token mixer over time followed by a selective channel mixer across the channels of each
token, connected by learnable weighted averages of earlier features.

Paper: "MambaMixer: Efficient Selective State Space Models with Dual Token and Channel Selection", Ali Behrouz,
Michele Santacatterina and Ramin Zabih, 2024, arXiv 2403.19888 (sec. 3.2, "MambaMixer").

The paper's block has three parts (x ∈ R^{B×L×D}):

* **Selective token mixer** — a Mamba block over the tokens (the paper notes that with a 1-D convolution it *is*
  the Mamba block of arXiv 2312.00752):

      x̄ = σ(Conv(Linear(x))),  x̄_MLP = MLP(x),  B_x = Linear_B(x̄), C_x = Linear_C(x̄), Δ_x = softplus(Linear_Δ(x̄))
      y_Token = SSM_{A, B_x, C_x, Δ_x}(x̄) ⊗ x̄_MLP

  Here this is :class:`~seqzoo.mixers.ssm.mamba.Mamba` unchanged (unidirectional, i.e. causal, as in the paper's
  time-series model TSM2; the vision model's multi-directional scans are not causal and not provided).

* **Selective channel mixer** — the same selective SSM run along the channel axis, in both directions:

      x̃_fwd = σ(1D-Conv(Linear(xᵀ))),  x̃_bwd = σ(1D-Conv(Linear(Flip(x)ᵀ))),  x̃_MLP = MLP(xᵀ)
      y_Channel = SSM_fwd(x̃_fwd) ⊗ x̃_MLP + Flip(SSM_bwd(x̃_bwd)) ⊗ x̃_MLP

  In the paper the elements of the channel sequence are the channels' values over all L tokens (xᵀ ∈ R^{D×L}),
  which mixes tokens in both time directions. A causal mixer cannot see later tokens, so here each token is
  mixed on its own: for token t the sequence is its D channel values x_t[1..D], each a scalar that a shared
  per-element ``Linear(1 → 2E)`` lifts to the scan input u_c ∈ R^E and the gate z_c ∈ R^E (``channel_expand``
  E = 2). Per direction: a causal depthwise conv along the channel axis (kernel ``channel_d_conv``; no state is
  carried between tokens), SiLU, and a :class:`~seqzoo.mixers.ssm.mamba.SelectiveSSM` with N =
  ``channel_d_state`` states and its own A, Δ, B, C projections. The two directions' outputs are summed,
  multiplied by SiLU(z) and projected back to one value per channel by a shared ``Linear(E → 1)``.
  ``bidirectional_channels=False`` keeps only the forward direction (then channel c sees channels ≤ c only).
  The per-element projections have biases (a map from one scalar without a bias would only scale it). The
  channel scan's form is ``channel_impl`` ("auto" = "chunk" over the whole channel axis); ``impl`` picks the form
  of the scan over time.
  The channel mixer of token t reads only x_t, so the block stays causal in time, and its only recurrent state
  over time is the token mixer's.

* **Weighted averaging of earlier features** (DenseNet / DenseFormer style). With y^(0) = x the model input:

      x_Token^(ℓ)   = Σ_{i=0}^{ℓ−1} α_{ℓ,i} y_Token^(i) + Σ_{i=0}^{ℓ−1} β_{ℓ,i} y_Channel^(i)
      x_Channel^(ℓ) = Σ_{i=0}^{ℓ}   θ_{ℓ,i} y_Token^(i) + Σ_{i=0}^{ℓ−1} γ_{ℓ,i} y_Channel^(i)

  with learnable scalars α, β, θ, γ. These sums run over the outputs of *all earlier layers*, so they cannot live
  inside one mixer of a residual stack: the full cross-layer version is the backbone
  :class:`seqzoo.models.mambamixer_stack.MambaMixerLM`. The registered mixer below is one MambaMixer block for
  any residual backbone (CausalLM); it keeps the part of the averaging that is inside the block, the channel
  mixer's input ``x_Channel = θ_0 x + θ_1 y_Token`` (the paper's ℓ = 1 case, θ initialised to 1), and returns
  ``y_Token + y_Channel``, so that the backbone's residual ``h + y_Token + y_Channel`` is the all-ones reading of
  the next layer's average.

Normalisation: the paper's equations name none; the channel mixer's input gets an RMSNorm (pre-norm, like every
mixer input in the backbones).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...core.errors import SeqzooError
from ...core.mixer import Mixer
from ...core.registry import register_mixer
from ...core.state import State
from ..short_conv import ShortConv
from .mamba import SCAN_IMPLS, Mamba, SelectiveSSM, positive_int, resolve_scan_impl


class _ChannelScan(nn.Module):
    """One direction of the channel mixer: causal depthwise conv along the channel axis, SiLU, selective SSM."""

    def __init__(self, width: int, d_state: int, d_conv: int, impl: str, chunk_size: int, ssm_lr):
        super().__init__()
        self.conv = ShortConv(width, d_conv)
        self.ssm = SelectiveSSM(width, d_state, 1, impl=impl, chunk_size=chunk_size, ssm_lr=ssm_lr,
                                owner="mambamixer channel mixer")

    def forward(self, u: Tensor) -> Tensor:
        """``u: [M, D, E]`` (D = the channel axis, scanned) → ``[M, D, E]``; every row starts from a zero state."""
        u, _ = self.conv(u)
        y, _ = self.ssm(F.silu(u))
        return y


class SelectiveChannelMixer(nn.Module):
    """The selective channel mixer of MambaMixer (arXiv 2403.19888): for every token separately, a selective SSM
    over its D channel values, forwards and (``bidirectional``) backwards, gated and projected back.
    ``[B, T, D] → [B, T, D]``; stateless over time (each token is mixed on its own)."""

    def __init__(self, d_model: int, d_state: int = 16, expand: int = 2, d_conv: int = 4,
                 bidirectional: bool = True, impl: str = "auto", chunk_size: int = 256,
                 ssm_lr: float | None = None):
        super().__init__()
        owner = "mambamixer channel mixer"
        self.d_model = positive_int(owner, "d_model", d_model)
        self.width = positive_int(owner, "channel_expand", expand)
        positive_int(owner, "channel_d_state", d_state)
        positive_int(owner, "channel_d_conv", d_conv)
        if not isinstance(bidirectional, bool):
            raise SeqzooError(f"{owner}: bidirectional_channels must be true or false, got {bidirectional!r}")
        self.bidirectional = bidirectional
        self.in_proj = nn.Linear(1, 2 * self.width)          # per channel value: scan input u_c and gate z_c
        self.forward_scan = _ChannelScan(self.width, d_state, d_conv, impl, chunk_size, ssm_lr)
        self.backward_scan = (_ChannelScan(self.width, d_state, d_conv, impl, chunk_size, ssm_lr)
                              if bidirectional else None)
        self.out_proj = nn.Linear(self.width, 1)

    def forward(self, x: Tensor) -> Tensor:
        batch, length, d = x.shape
        u, z = self.in_proj(x.reshape(batch * length, d, 1)).chunk(2, dim=-1)    # [B·T, D, E] each
        y = self.forward_scan(u)
        if self.backward_scan is not None:
            y = y + self.backward_scan(u.flip(1)).flip(1)
        return self.out_proj(y * F.silu(z)).view(batch, length, d)


@register_mixer("mambamixer", paper="MambaMixer: Efficient Selective State Space Models with Dual Token and "
                                    "Channel Selection", arxiv="2403.19888")
class MambaMixer(Mixer):
    """One MambaMixer block (Behrouz, Santacatterina, Zabih 2024, arXiv 2403.19888): a selective token mixer
    (Mamba over time, causal) then a selective channel mixer (a bidirectional selective SSM across the channels of
    each token), the channel mixer reading ``θ_0 x + θ_1 y_Token``; returns ``y_Token + y_Channel``.

    Options: ``d_state``, ``expand``, ``d_conv``, ``dt_rank`` of the token mixer (as for "mamba");
    ``channel_d_state``, ``channel_expand``, ``channel_d_conv``, ``bidirectional_channels`` of the channel mixer;
    ``impl`` (of the scan over time) in ``IMPLS`` or "auto", and its ``chunk_size``; ``channel_impl`` of the
    scan across channels (same choices; "auto" = "chunk" over the whole channel axis, which is several times
    faster than the step-by-step reference for these short scans); ``ssm_lr`` (own lr of every A_log, D, Δ bias);
    ``norm_eps`` of the channel mixer's RMSNorm. State: the token mixer's ``{"conv", "ssm"}``.
    The cross-layer weighted averaging is :class:`seqzoo.models.mambamixer_stack.MambaMixerLM`.
    """

    IMPLS: tuple[str, ...] = SCAN_IMPLS
    constant_state = True

    def __init__(self, d_model: int, d_state: int = 16, expand: int = 2, d_conv: int = 4,
                 dt_rank: int | str = "auto", channel_d_state: int = 16, channel_expand: int = 2,
                 channel_d_conv: int = 4, bidirectional_channels: bool = True, impl: str = "auto",
                 chunk_size: int = 128, channel_impl: str = "auto", ssm_lr: float | None = None,
                 norm_eps: float = 1e-5):
        super().__init__(d_model)
        resolve_scan_impl(impl, "mambamixer")
        resolve_scan_impl(channel_impl, "mambamixer channel mixer")
        self.token_mixer = Mamba(d_model, d_state=d_state, expand=expand, d_conv=d_conv, dt_rank=dt_rank,
                                 impl=impl, chunk_size=chunk_size, ssm_lr=ssm_lr)
        self.channel_norm = nn.RMSNorm(d_model, eps=norm_eps)
        self.channel_mixer = SelectiveChannelMixer(d_model, channel_d_state, channel_expand, channel_d_conv,
                                                   bidirectional_channels, channel_impl, ssm_lr=ssm_lr)
        self.theta = nn.Parameter(torch.ones(2))   # weights of (x, y_Token) in the channel mixer's input

    @property
    def impl(self) -> str:
        return self.token_mixer.impl

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> State:
        return self.token_mixer.init_state(batch_size, device=device, dtype=dtype)

    def state_size(self, seq_len: int) -> int:
        return self.token_mixer.state_size(seq_len)

    def _mix(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        y_token, state = self.token_mixer._mix(x, state)
        theta = self.theta.to(x.dtype)
        y_channel = self.channel_mixer(self.channel_norm(theta[0] * x + theta[1] * y_token))
        return y_token + y_channel, state

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, impl={self.impl!r}"


__all__ = ["MambaMixer", "SelectiveChannelMixer"]
