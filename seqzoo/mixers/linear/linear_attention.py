"""Causal linear attention.

Paper: "Transformers are RNNs: Fast Autoregressive Transformers with Linear Attention", Katharopoulos, Vyas,
Pappas and Fleuret 2020, arXiv 2006.16236.

Softmax similarity ``exp(q·k)`` is replaced by a kernel ``φ(q)·φ(k)`` with a feature map ``φ``; causal attention
then becomes a recurrence with a matrix state (paper eqs. 4–6 and 16–20), per head:

    S_t = S_{t−1} + φ(k_t)ᵀ v_t,        z_t = z_{t−1} + φ(k_t)
    y_t = φ(q_t) S_t / (φ(q_t) · z_t + ε)                   (normalize=True, the paper; ε = 1e-6)
    y_t = d^{-1/2} φ(q_t) S_t                               (normalize=False)

The normaliser is carried by the same recurrence: the op runs on ``[v_t, 1]`` (values with a column of ones
appended), so the last column of its state is ``z_t`` and the last output column is ``φ(q_t)·z_t``. The state is
``{"S": [B, H, d, d + 1]}`` (``[B, H, d, d]`` without normalisation), float32 (float64 for float64 inputs).

Feature maps (``feature_map=``):

* ``"elu+1"``   φ(x) = elu(x) + 1 > 0, the paper's choice (section 3.2.1);
* ``"relu"``    φ(x) = max(x, 0) ≥ 0;
* ``"softplus"`` φ(x) = log(1 + eˣ) > 0;
* ``"identity"`` φ(x) = x (plain "linear attention" / a linear transformer without kernel);
* ``"silu"``    φ(x) = x·sigmoid(x).

``"identity"`` and ``"silu"`` can be negative, so ``φ(q)·z`` can be zero or change sign; they are allowed only
with ``normalize=False`` (a one-line error says so otherwise).

``impl``: ``"recurrent"`` (the reference, one step per token), ``"chunk"`` (chunkwise parallel, ``chunk_size``
tokens per block) or ``"parallel"`` (the masked ``O(T²)`` form), all from :func:`seqzoo.ops.linear_attention`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...core.errors import SeqzooError
from ...core.mixer import Mixer
from ...core.registry import register_mixer
from ...core.state import State, state_dtype
from ...ops import linear_attention
from ..attention.softmax import check_heads, check_impl

EPS = 1e-6


def _elu_plus_one(x: Tensor) -> Tensor:
    return F.elu(x) + 1.0


def _identity(x: Tensor) -> Tensor:
    return x


# name -> (φ, φ is non-negative)
FEATURE_MAPS = {
    "elu+1": (_elu_plus_one, True),
    "relu": (F.relu, True),
    "softplus": (F.softplus, True),
    "identity": (_identity, False),
    "silu": (F.silu, False),
}


@register_mixer("linear_attention", paper="Transformers are RNNs: Fast Autoregressive Transformers with "
                "Linear Attention", arxiv="2006.16236")
class LinearAttention(Mixer):
    """Causal linear attention (Katharopoulos et al. 2020, arXiv 2006.16236): ``y_t = φ(q_t) S_t / φ(q_t)·z_t``
    with ``S_t = S_{t−1} + φ(k_t)ᵀ v_t`` and ``z_t = z_{t−1} + φ(k_t)``; a fixed-size matrix state per head.

    Options: ``n_heads``; ``feature_map`` (one of ``FEATURE_MAPS``); ``normalize`` (the paper's denominator);
    ``impl`` in ``IMPLS`` or ``"auto"``; ``chunk_size`` for the chunked form.
    """

    IMPLS: tuple[str, ...] = ("recurrent", "chunk", "parallel")
    constant_state = True

    def __init__(self, d_model: int, n_heads: int = 4, feature_map: str = "elu+1", normalize: bool = True,
                 impl: str = "auto", chunk_size: int = 64):
        super().__init__(d_model)
        self.head_dim = check_heads(d_model, n_heads)
        self.n_heads = n_heads
        if feature_map not in FEATURE_MAPS:
            raise SeqzooError(f"unknown feature_map {feature_map!r}; valid: {', '.join(FEATURE_MAPS)}")
        self.phi, positive = FEATURE_MAPS[feature_map]
        if normalize and not positive:
            raise SeqzooError(f"feature_map {feature_map!r} can be negative, so the normaliser φ(q)·Σφ(k) can "
                              f"vanish; use normalize=False or one of: "
                              f"{', '.join(k for k, (_, pos) in FEATURE_MAPS.items() if pos)}")
        if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size <= 0:
            raise SeqzooError(f"chunk_size must be a positive int, got {chunk_size!r}")
        self.feature_map = feature_map
        self.normalize = bool(normalize)
        self.impl = check_impl(impl, self.IMPLS, "linear_attention")
        self.chunk_size = chunk_size
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)

    @property
    def value_width(self) -> int:
        """Columns of the state per head: ``d`` values plus the normaliser column when normalising."""
        return self.head_dim + (1 if self.normalize else 0)

    # -- contract -----------------------------------------------------------------------------------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None) -> State:
        dtype = state_dtype(dtype if dtype is not None else torch.get_default_dtype())
        return {"S": torch.zeros(batch_size, self.n_heads, self.head_dim, self.value_width,
                                 device=device, dtype=dtype)}

    def state_size(self, seq_len: int) -> int:
        return self.n_heads * self.head_dim * self.value_width

    def _mix(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        if "S" not in state:
            raise SeqzooError("linear_attention state lacks 'S'; use init_state or a state returned by a call")
        batch, length, _ = x.shape
        q, k, v = self.features(x)
        o, new_s = self.attend(q, k, v, state["S"])
        return self.o_proj(o.reshape(batch, length, self.d_model).to(x.dtype)), {"S": new_s}

    # -- pieces -------------------------------------------------------------------------------------------------
    def features(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``φ(q), φ(k), v`` as ``[B, T, H, d]``."""
        batch, length, _ = x.shape
        shape = (batch, length, self.n_heads, self.head_dim)
        q = self.phi(self.q_proj(x).view(shape))
        k = self.phi(self.k_proj(x).view(shape))
        return q, k, self.v_proj(x).view(shape)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """Heads' outputs ``[B, T, H, d]`` and the new state from feature-mapped ``q, k`` and values ``v``."""
        if not self.normalize:
            return linear_attention(q, k, v, initial_state=s, impl=self.impl, chunk_size=self.chunk_size)
        v1 = torch.cat((v, torch.ones_like(v[..., :1])), dim=-1)
        # the scale cancels between numerator and denominator, so use 1 (keeps ε on the paper's scale)
        o, new_s = linear_attention(q, k, v1, initial_state=s, scale=1.0, impl=self.impl,
                                    chunk_size=self.chunk_size)
        work = state_dtype(o.dtype)  # divide in float32 even for bf16/fp16 outputs
        y = o[..., :-1].to(work) / (o[..., -1:].to(work) + EPS)
        return y.to(o.dtype), new_s

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, n_heads={self.n_heads}, feature_map={self.feature_map!r}, "
                f"normalize={self.normalize}, impl={self.impl!r}, chunk_size={self.chunk_size}")


__all__ = ["LinearAttention", "FEATURE_MAPS"]
