"""DeltaNet: linear attention whose matrix memory is written with the delta rule.

Paper: "Parallelizing Linear Transformers with the Delta Rule over Sequence Length", Yang, Wang, Zhang, Shen and
Kim, NeurIPS 2024, arXiv 2406.06484 (the layer of sec. 3.4 and the chunkwise WY/UT training algorithm of sec. 3).
The rule itself comes from "Linear Transformers Are Secretly Fast Weight Programmers", Schlag, Irie and
Schmidhuber 2021, arXiv 2102.11174.

Per head ``h`` (``H`` heads of width ``d = d_model / H``), row-vector convention, ``conv`` a causal depthwise
convolution of kernel ``K`` (default 4) over time with its own weights for each of the ``3·d_model`` channels:

    q̃_t, k̃_t, ṽ_t = SiLU(conv(x W_Q))_t, SiLU(conv(x W_K))_t, SiLU(conv(x W_V))_t     (use_short_conv=True)
    q̃_t, k̃_t, ṽ_t = SiLU(x_t W_Q), SiLU(x_t W_K), SiLU(x_t W_V)                        (use_short_conv=False)
    q_t = q̃_t / ‖q̃_t‖,   k_t = k̃_t / ‖k̃_t‖,   v_t = ṽ_t                                   (L2 norm per head)
    β_t = sigmoid(x_t W_β)                                                    (one writing strength per head)
    S_t = S_{t−1} + β_t k_tᵀ (v_t − k_t S_{t−1})  =  (I − β_t k_tᵀ k_t) S_{t−1} + β_t k_tᵀ v_t
    o_t = d^{-1/2} q_t S_t
    y_t = concat_h( RMSNorm(o_t^h) ⊙ w_norm ⊙ SiLU(x_t W_G^h) ) W_O                         (use_gate=True)
    y_t = concat_h( RMSNorm(o_t^h) ⊙ w_norm ) W_O                                             (use_gate=False)

``k_t S_{t−1}`` is what the memory currently returns for key ``k_t``; the update moves it a fraction β_t of the way
to ``v_t`` (one step of online least squares). With a unit key and β = 1 the old value stored under ``k_t`` is
replaced, where plain linear attention would add to it. ``w_norm`` (width d) is shared by the heads.

The recurrence is :func:`seqzoo.ops.delta_rule`: ``impl="recurrent"`` (one step per token, the reference) or
``"chunk"`` (default; the WY/UT chunkwise form, one unit-lower-triangular solve per chunk of ``chunk_size``
tokens in float32/float64, then matmuls). Both give the same outputs and gradients.

What was checked against the reference implementation (fla-org/flash-linear-attention, ``fla/layers/delta_net.py``):
q/k/v projections without bias; one short convolution per projection (kernel 4, no bias) followed by SiLU on q, k
and v; L2 normalisation of q and k; β = sigmoid of a bias-free projection to one value per head; a per-head
RMSNorm of the output with a weight shared across heads, optionally gated by SiLU of a projection
(``FusedRMSNormGated`` with its default swish activation); the output projection. fla leaves the gate off by
default (``use_gate=False``); here it is on by default, as the issue asks; set ``use_gate=False`` for fla's
default.

State (all float32, float64 for float64 inputs):

    {"S": [B, H, d, d]               (the matrix memory),
     "conv": [B, K − 1, 3·d_model]    (the last K − 1 projected q/k/v inputs; only with use_short_conv)}

so feeding a sequence in any split (one token at a time included) gives the same outputs as one call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...core.errors import SeqzooError
from ...core.mixer import Mixer
from ...core.registry import register_mixer
from ...core.state import State, state_dtype
from ...ops import delta_rule
from ..attention.softmax import check_heads, check_impl
from ..short_conv import ShortConv

L2_EPS = 1e-6


def _check_positive_int(name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise SeqzooError(f"{name} must be a positive int, got {value!r}")
    return value


def l2_normalize(x: Tensor) -> Tensor:
    """``x / ‖x‖`` over the last dimension (vectors shorter than 1e-6 are divided by 1e-6 instead)."""
    return F.normalize(x, p=2.0, dim=-1, eps=L2_EPS)


@register_mixer("deltanet", paper="Parallelizing Linear Transformers with the Delta Rule over Sequence Length",
                arxiv="2406.06484")
class DeltaNet(Mixer):
    """DeltaNet (Yang et al., NeurIPS 2024, arXiv 2406.06484): SiLU + L2-normalised q/k after a short causal
    convolution, β_t = sigmoid(W_β x_t), the delta rule ``S_t = S_{t−1} + β_t k_tᵀ (v_t − k_t S_{t−1})``, a
    per-head output RMSNorm with an optional SiLU gate.

    Options: ``n_heads``; ``use_short_conv`` and ``conv_size`` (kernel of the causal depthwise convolution on
    q/k/v); ``use_gate`` (SiLU output gate); ``chunk_size`` of the chunkwise form; ``impl`` in ``IMPLS`` or
    ``"auto"`` (= ``"chunk"``); ``norm_eps`` of the output RMSNorm.
    """

    IMPLS: tuple[str, ...] = ("recurrent", "chunk")
    constant_state = True

    def __init__(self, d_model: int, n_heads: int = 4, use_short_conv: bool = True, conv_size: int = 4,
                 use_gate: bool = True, chunk_size: int = 64, impl: str = "auto", norm_eps: float = 1e-5):
        super().__init__(d_model)
        self.head_dim = check_heads(d_model, n_heads)
        self.n_heads = n_heads
        for name, flag in (("use_short_conv", use_short_conv), ("use_gate", use_gate)):
            if not isinstance(flag, bool):
                raise SeqzooError(f"{name} must be true or false, got {flag!r}")
        self.chunk_size = _check_positive_int("chunk_size", chunk_size)
        self.conv_size = _check_positive_int("conv_size", conv_size)
        if isinstance(norm_eps, bool) or not isinstance(norm_eps, (int, float)) or norm_eps <= 0:
            raise SeqzooError(f"norm_eps must be a positive number, got {norm_eps!r}")
        self.impl = check_impl(impl, self.IMPLS, "deltanet")
        self.use_short_conv, self.use_gate, self.norm_eps = use_short_conv, use_gate, float(norm_eps)
        self.qkv_proj = nn.Linear(d_model, 3 * d_model, bias=False)
        self.b_proj = nn.Linear(d_model, n_heads, bias=False)
        # one depthwise filter per channel of [q, k, v]: the same as three separate short convolutions
        self.conv = ShortConv(3 * d_model, conv_size, bias=False, activation="silu") if use_short_conv else None
        self.g_proj = nn.Linear(d_model, d_model, bias=False) if use_gate else None
        self.norm_weight = nn.Parameter(torch.ones(self.head_dim))
        self.o_proj = nn.Linear(d_model, d_model, bias=False)

    # -- contract -----------------------------------------------------------------------------------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None) -> State:
        dtype = state_dtype(dtype if dtype is not None else torch.get_default_dtype())
        state = {"S": torch.zeros(batch_size, self.n_heads, self.head_dim, self.head_dim, device=device,
                                  dtype=dtype)}
        if self.conv is not None:
            state["conv"] = self.conv.init_state(batch_size, device=device, dtype=dtype)
        return state

    def state_size(self, seq_len: int) -> int:
        conv = (self.conv_size - 1) * 3 * self.d_model if self.conv is not None else 0
        return self.n_heads * self.head_dim * self.head_dim + conv

    def _mix(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        needed = ("S", "conv") if self.conv is not None else ("S",)
        missing = [key for key in needed if key not in state]
        if missing:
            raise SeqzooError(f"deltanet state lacks {missing[0]!r}; expected keys: {', '.join(needed)} "
                              f"(use init_state or the state returned by a previous call)")
        batch, length, _ = x.shape
        q, k, v, beta, conv_state = self.features(x, state.get("conv"))
        o, new_s = self.memory(q, k, v, beta, state["S"])
        y = self.o_proj(self.output_norm(o, x).reshape(batch, length, self.d_model))
        new_state = {"S": new_s}
        if conv_state is not None:
            new_state["conv"] = conv_state.to(state_dtype(x.dtype))  # bf16 inputs: the state stays float32
        return y, new_state

    # -- pieces (used by the property tests) ----------------------------------------------------------------------
    def features(self, x: Tensor, conv_state: Tensor | None = None):
        """``q, k`` (unit norm per head), ``v`` as ``[B, T, H, d]``, ``β`` as ``[B, T, H]`` and the new conv state.

        q and k are normalised in float32 (float64 for float64 inputs) and β computed there; all three are then
        handed to the delta rule in the dtype of v, so that 16-bit activations (autocast) reach its 16-bit kernels
        rather than being promoted to its slower float32 ones; its pure-PyTorch forms compute in
        float32 either way.
        """
        batch, length, _ = x.shape
        qkv = self.qkv_proj(x)
        if self.conv is not None:
            qkv, conv_state = self.conv(qkv, conv_state)           # causal depthwise conv, then SiLU
        else:
            qkv, conv_state = F.silu(qkv), None
        work = state_dtype(x.dtype)
        q, k, v = qkv.view(batch, length, 3, self.n_heads, self.head_dim).unbind(2)
        q, k = l2_normalize(q.to(work)).to(v.dtype), l2_normalize(k.to(work)).to(v.dtype)
        beta = torch.sigmoid(self.b_proj(x).to(work)).to(v.dtype)
        return q, k, v, beta, conv_state

    def memory(self, q: Tensor, k: Tensor, v: Tensor, beta: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """The delta rule over ``[B, T, H, d]`` inputs from state ``s``: outputs ``[B, T, H, d]`` and the new state.

        A call shorter than ``chunk_size`` uses its own length as the chunk (same result, since the chunk size does
        not change the outputs, and no solve over padding); a one-token call (decoding) takes the recurrent step,
        which is the chunk form with C = 1 without its triangular-solve call."""
        length = q.shape[1]
        impl = "recurrent" if length == 1 else self.impl
        return delta_rule(q, k, v, beta, initial_state=s, impl=impl, chunk_size=max(1, min(self.chunk_size, length)))

    def output_norm(self, o: Tensor, x: Tensor) -> Tensor:
        """Per-head RMSNorm of ``o [B, T, H, d]`` (in float32 for low-precision inputs), gated by SiLU(x W_G)."""
        work = state_dtype(o.dtype)
        out = F.rms_norm(o.to(work), (self.head_dim,), self.norm_weight.to(work), self.norm_eps)
        if self.g_proj is not None:
            gate = self.g_proj(x).view(o.shape)
            out = out * F.silu(gate.to(work))
        return out.to(x.dtype)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, n_heads={self.n_heads}, use_short_conv={self.use_short_conv}, "
                f"conv_size={self.conv_size}, use_gate={self.use_gate}, chunk_size={self.chunk_size}, "
                f"impl={self.impl!r}")


__all__ = ["DeltaNet", "l2_normalize"]
