"""LMUFormer: a convolutional patch embedding, LMU token mixers and MLP channel mixers, streamable step by step.

Paper: "LMUFormer: Low Complexity Yet Powerful Spiking Model With Legendre Memory Units", Liu, Datta, Leng,
Zhang, Jacob & Beerel, ICLR 2024, arXiv 2402.04882 (the LMU itself: :mod:`seqzoo.mixers.rnn.lmu`, Chilkuri &
Eliasmith, arXiv 2102.11417). Shapes are ``[B, T, C]``; "conv" is a 1-D convolution over T.

    patch embedding:  z = act(N(conv_k(x)))  repeated ``embed_layers`` times (first maps input_dim → D)
                      z = z + act(N(conv_k(z)))                       ("relative position" conv)
    block (× n_layers):
                      z = z + N(W_o LMU(z))                           token mixer (the LMU's h_t, projected)
                      z = z + act(N(W_2 act'(N(W_1 z))))              channel mixer, hidden = mlp_ratio · D
    head:             ℓ_t = W_c z_t,   logits after t steps = (1/t) Σ_{s ≤ t} ℓ_s

N is BatchNorm over channels (``norm="bn"``, the paper's; in eval mode a per-channel affine map, so it streams)
or LayerNorm (``"ln"``). ``act`` is ReLU and ``act'`` GELU, as in the reference code's non-spiking model.

Spiking variant (``spiking=True``; the reference's ``slmu_rnn_conv1d``): every activation is a LIF neuron layer
(:class:`seqzoo.models.spiking.LIF`, τ = 2, threshold 1, hard reset), and inside the token mixer
``u = LIF(N(W_u z))``, ``m = LIF(N(LegT-memory(u)))``, ``h = LIF(N(W_h [m; z]))``, output ``LIF(N(W_o h))``, with
memory order 2·D by default (the reference's setting).

Streaming: every convolution keeps its last k−1 inputs, every LIF its membrane, the LMU its memory and the head
its running sum, all in one flat ``dict[str, Tensor]`` (batch first), so ``forward(x[:, :t]) → state`` then
``forward(x[:, t:], state)`` equals ``forward(x)`` in eval mode (tested). Difference from the reference code: its
convolutions pad both sides (k = 3, padding 1: one future frame per layer, the delay its paper analyses); here
they are causal (left padding only), so the model is causal and streams exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.errors import SeqzooError
from ..core.state import state_dtype
from ..mixers.rnn.lmu import LMU
from .spiking import LIF

StateDict = dict[str, Tensor]


class CausalConv1d(nn.Module):
    """``y_t = Σ_{i<k} W_i x_{t−k+1+i}`` (zeros before the start); its state is the last k−1 inputs."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3):
        super().__init__()
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1:
            raise SeqzooError(f"kernel_size must be a positive int, got {kernel_size!r}")
        self.c_in, self.kernel_size = c_in, kernel_size
        self.conv = nn.Conv1d(c_in, c_out, kernel_size, bias=False)
        self.state_key = ""

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> StateDict:
        return {self.state_key: torch.zeros(batch_size, self.kernel_size - 1, self.c_in, device=device, dtype=dtype)}

    def forward(self, x: Tensor, state_in: StateDict, state_out: StateDict) -> Tensor:
        tail = state_in.get(self.state_key)
        if tail is None:
            tail = x.new_zeros(x.shape[0], self.kernel_size - 1, self.c_in)
        padded = torch.cat([tail.to(x.dtype), x], dim=1)
        state_out[self.state_key] = padded[:, padded.shape[1] - (self.kernel_size - 1):]
        return self.conv(padded.transpose(1, 2)).transpose(1, 2)


class TokenNorm(nn.Module):
    """BatchNorm over channels of ``[B, T, C]`` (``"bn"``) or LayerNorm per token (``"ln"``)."""

    def __init__(self, kind: str, channels: int):
        super().__init__()
        if kind not in ("bn", "ln"):
            raise SeqzooError(f"norm {kind!r} is not valid; valid: bn, ln")
        self.kind = kind
        self.norm = nn.BatchNorm1d(channels) if kind == "bn" else nn.LayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "ln":
            return self.norm(x)
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class Activation(nn.Module):
    """ReLU / GELU, or a LIF neuron layer (stateful over T) of ``channels`` neurons."""

    def __init__(self, kind: str, channels: int, lif: dict | None = None):
        super().__init__()
        if kind not in ("relu", "gelu", "lif"):
            raise SeqzooError(f"activation {kind!r} is not valid; valid: relu, gelu, lif")
        self.kind, self.channels = kind, channels
        self.lif = LIF(**(lif or {})) if kind == "lif" else None
        self.state_key = ""

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> StateDict:
        if self.lif is None:
            return {}
        return {self.state_key: torch.zeros(batch_size, self.channels, device=device, dtype=state_dtype(dtype))}

    def forward(self, x: Tensor, state_in: StateDict, state_out: StateDict) -> Tensor:
        if self.kind == "relu":
            return F.relu(x)
        if self.kind == "gelu":
            return F.gelu(x)
        v = state_in.get(self.state_key)
        work = state_dtype(x.dtype)
        spikes, v = self.lif(x.to(work), None if v is None else v.to(work))
        state_out[self.state_key] = v
        return spikes.to(x.dtype)


class ConvPatchEmbed(nn.Module):
    """``embed_layers`` × (causal conv → norm → act), then a residual "relative position" conv stage."""

    def __init__(self, input_dim: int, d_model: int, layers: int, kernel_size: int, norm: str, act: str, lif):
        super().__init__()
        if layers < 1:
            raise SeqzooError(f"embed_layers must be >= 1, got {layers}")
        dims = [input_dim] + [d_model] * layers
        self.convs = nn.ModuleList(CausalConv1d(dims[i], d_model, kernel_size) for i in range(layers))
        self.norms = nn.ModuleList(TokenNorm(norm, d_model) for _ in range(layers))
        self.acts = nn.ModuleList(Activation(act, d_model, lif) for _ in range(layers))
        self.rpe_conv = CausalConv1d(d_model, d_model, kernel_size)
        self.rpe_norm = TokenNorm(norm, d_model)
        self.rpe_act = Activation(act, d_model, lif)

    def forward(self, x: Tensor, s_in: StateDict, s_out: StateDict) -> Tensor:
        for conv, norm, act in zip(self.convs, self.norms, self.acts):
            x = act(norm(conv(x, s_in, s_out)), s_in, s_out)
        return x + self.rpe_act(self.rpe_norm(self.rpe_conv(x, s_in, s_out)), s_in, s_out)


class LMUTokenMixer(nn.Module):
    """The LMU block: ``N(W_o LMU(z))``, or its spiking form (see the module docstring)."""

    def __init__(self, d_model: int, order: int, theta: float, norm: str, spiking: bool, lif, impl: str):
        super().__init__()
        self.spiking = spiking
        self.lmu = LMU(d_model, order=order, theta=theta, memory_inputs=1, impl=impl)
        self.norm = TokenNorm(norm, d_model)
        if spiking:
            # LayerNorm over the single memory input would make it constant, so "ln" leaves u unnormalised
            self.u_norm = TokenNorm("bn", 1) if norm == "bn" else nn.Identity()
            self.u_act = Activation("lif", 1, lif)
            self.m_norm, self.m_act = TokenNorm(norm, order), Activation("lif", order, lif)
            self.h_norm, self.h_act = TokenNorm(norm, d_model), Activation("lif", d_model, lif)
            self.out_act = Activation("lif", d_model, lif)
        self.state_key = ""

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> StateDict:
        return {self.state_key: self.lmu.init_state(batch_size, device=device, dtype=dtype)["m"]}

    def forward(self, z: Tensor, s_in: StateDict, s_out: StateDict) -> Tensor:
        m0 = s_in.get(self.state_key)
        if m0 is None:
            m0 = self.lmu.init_state(z.shape[0], device=z.device, dtype=z.dtype)["m"]
        if not self.spiking:
            y, new = self.lmu(z, {"m": m0})
            s_out[self.state_key] = new["m"]
            return self.norm(y)
        lmu = self.lmu
        u = self.u_act(self.u_norm(lmu.u_proj(z)), s_in, s_out)
        m, m_last = lmu.memory(u.to(state_dtype(z.dtype)), m0.to(state_dtype(z.dtype)))
        s_out[self.state_key] = m_last
        m = self.m_act(self.m_norm(m.flatten(2).to(z.dtype)), s_in, s_out)
        h = self.h_act(self.h_norm(lmu.h_proj(torch.cat([m, z], dim=-1))), s_in, s_out)
        return self.out_act(self.norm(lmu.o_proj(h)), s_in, s_out)


class ChannelMLP(nn.Module):
    """``act(N(W_2 act'(N(W_1 z))))`` with pointwise (1×1) layers."""

    def __init__(self, d_model: int, hidden: int, norm: str, spiking: bool, lif):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d_model, hidden), nn.Linear(hidden, d_model)
        self.norm1, self.norm2 = TokenNorm(norm, hidden), TokenNorm(norm, d_model)
        self.act1 = Activation("lif" if spiking else "gelu", hidden, lif)
        self.act2 = Activation("lif" if spiking else "relu", d_model, lif)

    def forward(self, z: Tensor, s_in: StateDict, s_out: StateDict) -> Tensor:
        z = self.act1(self.norm1(self.fc1(z)), s_in, s_out)
        return self.act2(self.norm2(self.fc2(z)), s_in, s_out)


class LMUFormerBlock(nn.Module):
    def __init__(self, d_model: int, order: int, theta: float, mlp_ratio: float, norm: str, spiking: bool, lif,
                 impl: str):
        super().__init__()
        self.token_mixer = LMUTokenMixer(d_model, order, theta, norm, spiking, lif, impl)
        self.channel_mixer = ChannelMLP(d_model, max(1, int(round(mlp_ratio * d_model))), norm, spiking, lif)

    def forward(self, z: Tensor, s_in: StateDict, s_out: StateDict) -> Tensor:
        z = z + self.token_mixer(z, s_in, s_out)
        return z + self.channel_mixer(z, s_in, s_out)


class LMUFormer(nn.Module):
    """The LMUFormer backbone: ``forward(x [B, T, input_dim], state) -> (features [B, T, D], state)``.

    Options: ``d_model``; ``n_layers``; ``order`` (LMU memory order; None = D, or 2·D when spiking);
    ``theta`` (LMU window in steps); ``mlp_ratio``; ``embed_layers`` and ``kernel_size`` of the causal patch
    embedding; ``norm`` ("bn" or "ln"); ``spiking`` with the LIF settings ``tau``, ``threshold``,
    ``surrogate``; ``impl`` of the LMU ("auto" = fft, or "recurrent").
    """

    def __init__(self, input_dim: int, d_model: int = 64, n_layers: int = 1, order: int | None = None,
                 theta: float = 128.0, mlp_ratio: float = 4.0, embed_layers: int = 4, kernel_size: int = 3,
                 norm: str = "bn", spiking: bool = False, tau: float = 2.0, threshold: float = 1.0,
                 surrogate: str = "sigmoid", impl: str = "auto"):
        super().__init__()
        for key, value in (("input_dim", input_dim), ("d_model", d_model), ("n_layers", n_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SeqzooError(f"LMUFormer {key} must be a positive int, got {value!r}")
        lif = {"tau": tau, "threshold": threshold, "surrogate": surrogate}
        order = order if order is not None else (2 * d_model if spiking else d_model)
        self.input_dim, self.d_model, self.spiking = input_dim, d_model, bool(spiking)
        self.embed = ConvPatchEmbed(input_dim, d_model, embed_layers, kernel_size, norm,
                                    "lif" if spiking else "relu", lif)
        self.blocks = nn.ModuleList(LMUFormerBlock(d_model, order, theta, mlp_ratio, norm, self.spiking, lif, impl)
                                    for _ in range(n_layers))
        for name, module in self.named_modules():  # every stateful piece reads/writes its own key
            if hasattr(module, "state_key"):
                module.state_key = name

    def stateful_modules(self):
        return [m for m in self.modules() if hasattr(m, "state_key") and hasattr(m, "init_state")]

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> StateDict:
        dtype = dtype if dtype is not None else torch.get_default_dtype()
        state: StateDict = {}
        for module in self.stateful_modules():
            state.update(module.init_state(batch_size, device=device, dtype=dtype))
        return state

    def forward(self, x: Tensor, state: StateDict | None = None) -> tuple[Tensor, StateDict]:
        if x.dim() != 3 or x.shape[-1] != self.input_dim:
            raise SeqzooError(f"LMUFormer expects x of shape [B, T, {self.input_dim}], got {list(x.shape)}")
        s_in = state if state is not None else {}
        s_out: StateDict = {}
        z = self.embed(x, s_in, s_out)
        for block in self.blocks:
            z = block(z, s_in, s_out)
        return z, s_out


class LMUFormerClassifier(nn.Module):
    """Sequence classifier: the backbone, a per-token linear head, and the running mean of the token logits.

    ``forward(x, state) -> (logits [B, T, n_classes], state)`` where ``logits[:, t]`` is the prediction after
    seeing ``x[:, :t+1]`` (the paper's streaming evaluation); :meth:`classify` returns the last one (the mean over
    all tokens, the paper's classifier). Keyword options go to :class:`LMUFormer`.
    """

    def __init__(self, input_dim: int, n_classes: int, **options):
        super().__init__()
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
            raise SeqzooError(f"n_classes must be an int >= 2, got {n_classes!r}")
        self.backbone = LMUFormer(input_dim, **options)
        self.head = nn.Linear(self.backbone.d_model, n_classes)
        self.n_classes = n_classes

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> StateDict:
        dtype = dtype if dtype is not None else torch.get_default_dtype()
        state = self.backbone.init_state(batch_size, device=device, dtype=dtype)
        state["head.sum"] = torch.zeros(batch_size, self.n_classes, device=device, dtype=state_dtype(dtype))
        state["head.count"] = torch.zeros(batch_size, dtype=torch.int64, device=device)
        return state

    def forward(self, x: Tensor, state: StateDict | None = None) -> tuple[Tensor, StateDict]:
        z, new_state = self.backbone(x, state)
        token_logits = self.head(z).to(state_dtype(x.dtype))
        start_sum = state.get("head.sum") if state else None
        start_count = state.get("head.count") if state else None
        if start_sum is None:
            start_sum = token_logits.new_zeros(x.shape[0], self.n_classes)
            start_count = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        sums = start_sum[:, None].to(token_logits.dtype) + token_logits.cumsum(dim=1)
        counts = start_count[:, None] + torch.arange(1, x.shape[1] + 1, device=x.device)
        new_state["head.sum"] = sums[:, -1]
        new_state["head.count"] = counts[:, -1]
        return (sums / counts[..., None].to(sums.dtype)).to(x.dtype), new_state

    def classify(self, x: Tensor) -> Tensor:
        """Class logits ``[B, n_classes]`` from the whole sequence (mean of the per-token logits)."""
        return self(x)[0][:, -1]

    def loss(self, x: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(self.classify(x).float(), labels)


__all__ = ["LMUFormer", "LMUFormerClassifier", "LMUFormerBlock", "LMUTokenMixer", "ChannelMLP", "ConvPatchEmbed",
           "CausalConv1d", "TokenNorm", "Activation"]
