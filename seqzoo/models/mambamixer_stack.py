"""MambaMixerLM: a stack of MambaMixer blocks with the paper's weighted averaging of earlier features across layers.

Paper: "MambaMixer: Efficient Selective State Space Models with Dual Token and Channel Selection", Behrouz,
Santacatterina and Zabih, 2024, arXiv 2403.19888 (sec. 3.2, "Weighted Averaging of Earlier Features", after
DenseNet and DenseFormer, arXiv 2402.02622).

The paper connects every selective token mixer and channel mixer to the outputs of all earlier ones. With
y^(0)_Token = y^(0)_Channel = x (the embedded input) and layers ℓ = 1 … L:

    x_Token^(ℓ)   = Σ_{i=0}^{ℓ−1} α_{ℓ,i} y_Token^(i) + Σ_{i=0}^{ℓ−1} β_{ℓ,i} y_Channel^(i)
    x_Channel^(ℓ) = Σ_{i=0}^{ℓ}   θ_{ℓ,i} y_Token^(i) + Σ_{i=0}^{ℓ−1} γ_{ℓ,i} y_Channel^(i)
    y_Token^(ℓ)   = TokenMixer_ℓ(RMSNorm(x_Token^(ℓ))),   y_Channel^(ℓ) = ChannelMixer_ℓ(RMSNorm(x_Channel^(ℓ)))

with learnable scalars α, β, θ, γ. Written over the list of features f_0 = x, f_{2i−1} = y_Token^(i),
f_{2i} = y_Channel^(i), sub-block k = 1 … 2L (odd: token mixer, even: channel mixer) reads
``Σ_{j<k} w_{k,j} f_j`` — one weight vector ``w_k ∈ R^k`` per sub-block. Since y^(0)_Token and y^(0)_Channel
are both x, the paper's α_{ℓ,0} and β_{ℓ,0} (and θ_{ℓ,0}, γ_{ℓ,0}) multiply the same tensor and are merged into one
weight w_{k,0}. The head reads one more average, ``Σ_{j≤2L} w_{2L+1,j} f_j`` (the paper does not say what
follows the last block; this is DenseFormer's final average), then RMSNorm and the (tied) output projection.

Choices the paper leaves open, documented here:

* **Initialisation: all weights 1.** Then every sub-block reads ``x + Σ_{j<k} f_j``, which is exactly the
  residual stream of a plain pre-norm stack ``h ← h + SubBlock(RMSNorm(h))``, so the model starts as the ordinary
  residual network and learns to reweight. (In DenseFormer's parametrisation the averaged features are the
  residual-stream states rather than the sub-blocks' raw outputs; there "one-hot on the latest feature" is the
  plain residual network. Here, with the paper's raw outputs, one-hot on the latest feature gives plain stacking
  *without* skip connections, and all-ones gives the residual network. Both reductions are tested.)
* Pre-norm: an RMSNorm before every mixer (the paper's equations name no normalisation); no FFN (the channel
  mixer takes its place, as in the paper's MLP-free models).

The token mixer is :class:`~seqzoo.mixers.ssm.mamba.Mamba` (causal over time) and the channel mixer
:class:`~seqzoo.mixers.ssm.mambamixer.SelectiveChannelMixer` (per token), so the model is causal and its state is
the list of the token mixers' states: ``forward(x[:, :t]) → state`` then ``forward(x[:, t:], state)`` equals
``forward(x)``, and it has :class:`~seqzoo.models.CausalLM`'s calling convention (``model(tokens, state) →
(logits, state)``, ``loss(batch)``), so the trainer and the generation engine take it as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..core.errors import SeqzooError
from ..mixers.ssm.mamba import Mamba
from ..mixers.ssm.mambamixer import SelectiveChannelMixer
from .causal_lm import masked_token_loss

TOKEN_OPTIONS = ("d_state", "expand", "d_conv", "dt_rank", "impl", "chunk_size", "ssm_lr")
CHANNEL_OPTIONS = ("d_state", "expand", "d_conv", "bidirectional", "impl", "chunk_size", "ssm_lr")


@dataclass
class MambaMixerLMConfig:
    """Shape of a :class:`MambaMixerLM`. ``token_options`` go to each :class:`Mamba` token mixer (keys
    ``TOKEN_OPTIONS``), ``channel_options`` to each :class:`SelectiveChannelMixer` (keys ``CHANNEL_OPTIONS``)."""

    vocab_size: int = 256
    d_model: int = 128
    n_layers: int = 4
    token_options: dict = field(default_factory=dict)
    channel_options: dict = field(default_factory=dict)
    tie_embeddings: bool = True
    norm_eps: float = 1e-5
    init_std: float = 0.02

    def validate(self) -> None:
        for key in ("vocab_size", "d_model", "n_layers"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise SeqzooError(f"mambamixer model.{key} must be a positive int, got {value!r}")
        for name, options, valid in (("token_options", self.token_options, TOKEN_OPTIONS),
                                     ("channel_options", self.channel_options, CHANNEL_OPTIONS)):
            unknown = [k for k in options if k not in valid]
            if unknown:
                raise SeqzooError(f"unknown option {unknown[0]!r} in mambamixer model.{name}; "
                                  f"valid: {', '.join(valid)}")


class MambaMixerLM(nn.Module):
    """Token-id language model of MambaMixer blocks joined by learnable weighted averages of all earlier features
    (arXiv 2403.19888); see the module docstring for the equations."""

    def __init__(self, cfg: MambaMixerLMConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        d = cfg.d_model
        self.embed = nn.Embedding(cfg.vocab_size, d)
        self.token_mixers = nn.ModuleList(Mamba(d, **cfg.token_options) for _ in range(cfg.n_layers))
        self.channel_mixers = nn.ModuleList(SelectiveChannelMixer(d, **cfg.channel_options)
                                            for _ in range(cfg.n_layers))
        self.norms = nn.ModuleList(nn.RMSNorm(d, eps=cfg.norm_eps) for _ in range(2 * cfg.n_layers))
        # averaging weights: w_k ∈ R^k for sub-block k = 1 … 2L, and the head's w_{2L+1}; all ones at init
        self.average_weights = nn.ParameterList(nn.Parameter(torch.ones(k)) for k in range(1, 2 * cfg.n_layers + 2))
        self.norm = nn.RMSNorm(d, eps=cfg.norm_eps)
        self.head = nn.Linear(d, cfg.vocab_size, bias=False)
        nn.init.normal_(self.embed.weight, std=cfg.init_std)
        nn.init.normal_(self.head.weight, std=cfg.init_std)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight

    @staticmethod
    def average(weights: Tensor, features: list[Tensor]) -> Tensor:
        """``Σ_j weights[j] · features[j]``."""
        w = weights.to(features[0].dtype)
        out = w[0] * features[0]
        for j in range(1, len(features)):
            out = out + w[j] * features[j]
        return out

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> list:
        return [m.init_state(batch_size, device=device, dtype=dtype) for m in self.token_mixers]

    def forward(self, inputs: Tensor, state: list | None = None) -> tuple[Tensor, list]:
        """``inputs``: token ids ``[B, T]``. Returns ``(logits [B, T, vocab], new_state)``."""
        if inputs.dim() != 2 or inputs.dtype not in (torch.int64, torch.int32):
            raise SeqzooError(f"inputs must be [B, T] integer token ids, got {list(inputs.shape)} {inputs.dtype}")
        if state is None:
            state = [None] * self.cfg.n_layers
        elif len(state) != self.cfg.n_layers:
            raise SeqzooError(f"state has {len(state)} layer states; this model has {self.cfg.n_layers} layers")
        features = [self.embed(inputs)]
        new_state = []
        for layer in range(self.cfg.n_layers):
            k = 2 * layer + 1                                          # the token mixer's sub-block index
            x_token = self.average(self.average_weights[k - 1], features)
            y_token, layer_state = self.token_mixers[layer](self.norms[k - 1](x_token), state[layer])
            features.append(y_token)
            new_state.append(layer_state)
            x_channel = self.average(self.average_weights[k], features)
            features.append(self.channel_mixers[layer](self.norms[k](x_channel)))
        h = self.average(self.average_weights[-1], features)
        return self.head(self.norm(h)), new_state

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        """Mean next-token cross-entropy over the positions where ``loss_mask`` is set (all when absent)."""
        logits, _ = self(batch["inputs"])
        return masked_token_loss(logits, batch["targets"], batch.get("loss_mask"))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())

    def state_size(self, seq_len: int) -> int:
        return sum(m.state_size(seq_len) for m in self.token_mixers)


__all__ = ["MambaMixerLM", "MambaMixerLMConfig"]
