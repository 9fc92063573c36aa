"""Outlier-free attention: clipped softmax and gated attention.

Paper: "Quantizable Transformers: Removing Outliers by Helping Attention Heads Do Nothing", Bondarenko, Nagel and
Blankevoort, NeurIPS 2023, arXiv 2306.12929.

Heads that want to leave the residual stream unchanged ("no-op" heads) can only do so with softmax by pushing their
logits apart without bound, which grows outliers in the residual stream and the FFN outputs and ruins per-tensor
INT8 activation quantisation. The paper gives heads two ways to do nothing with bounded activations:

* **Clipped softmax**, with a stretch ``ζ ≥ 1`` and an offset ``γ ≤ 0``:

      clipped_softmax(s)_j = clip((ζ − γ) · softmax(s)_j + γ, 0, 1)

  Probabilities below ``−γ / (ζ − γ)`` become exact zeros (above ``(1 − γ) / (ζ − γ)`` exact ones) with
  finite logits, and no gradient flows through the clipped entries, so nothing keeps pushing the logits. The
  paper sets ``ζ = 1`` and ``γ = −α / T`` with a stretch factor ``α`` and ``T`` the training sequence length
  (OPT: α = 12, T = 512, so γ ≈ −0.023; BERT at T = 128: γ = −0.025); here ``gamma=None`` means
  ``γ = −alpha / max_seq_len``. ``γ`` is a constant of the layer (not of the call), so splitting a sequence into
  chunks does not change the outputs.

* **Gated attention**, a per-token, per-head sigmoid gate computed from the head's slice
  ``x_t^h`` of the attention input (the paper's "conditional per token" gate with a linear ``G_h``)::

      o_t^h = sigmoid(x_t^h · w_h + b_h) · Σ_s softmax_s(q_t^h · k_s^h / √d) v_s^h

  ``b_h`` starts at ``logit(gate_init)`` (the paper's CLM scripts use ``gate_init = 0.25``), so a head can
  switch itself off by driving its gate to zero instead of growing its logits.

Everything else (projections, RoPE, grouped-query heads, sliding window, the KV-cache state) is inherited from
:class:`~seqzoo.mixers.attention.softmax.SoftmaxAttention`; with ``softmax="vanilla"`` and ``gate=False`` this
mixer computes exactly what the plain ``"attention"`` mixer computes. The clipped softmax needs the explicit
(``"math"``) attention path because fused SDPA kernels cannot clip; the vanilla softmax may use either.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ...core.errors import SeqzooError
from ...core.registry import register_mixer
from ...core.state import State
from ...ops import softmax_attention
from ...ops._common import acc_dtype, resolve_scale
from ...ops.attention import _expand_heads, _visible
from .softmax import SoftmaxAttention

SOFTMAXES = ("vanilla", "clipped")


def clipped_softmax(scores: Tensor, zeta: float = 1.0, gamma: float = 0.0, dim: int = -1) -> Tensor:
    """``clip((ζ − γ) · softmax(scores) + γ, 0, 1)`` along ``dim`` (ζ = 1, γ = 0 gives softmax)."""
    return ((zeta - gamma) * torch.softmax(scores, dim=dim) + gamma).clamp(0.0, 1.0)


def clipped_softmax_attention(q: Tensor, k: Tensor, v: Tensor, *, zeta: float, gamma: float,
                              cache: dict | None = None, window: int | None = None,
                              scale: float | None = None) -> tuple[Tensor, dict]:
    """Causal attention whose weights are ``clipped_softmax(q·k/√d + mask)``, continuing from a KV cache.

    Shapes and cache follow :func:`seqzoo.ops.softmax_attention` (q ``[B, T, H, D]``, k/v ``[B, T, Hkv, D]``,
    cache ``{"k", "v"}`` with the earlier keys/values). Masked (future or out-of-window) keys have softmax weight
    0, which the stretch maps to ``γ ≤ 0`` and the clip back to 0, so they stay invisible.
    """
    scale = resolve_scale("clipped_softmax_attention", scale, q.shape[-1])
    if cache is not None:
        k, v = torch.cat([cache["k"], k], dim=1), torch.cat([cache["v"], v], dim=1)
    new_cache = {"k": k, "v": v}
    if window is not None and k.shape[1] > window:
        new_cache = {"k": k[:, -window:].contiguous(), "v": v[:, -window:].contiguous()}
    length, past = q.shape[1], k.shape[1] - q.shape[1]
    if length == 0:
        return v.new_empty(q.shape[0], 0, q.shape[2], v.shape[3]), new_cache
    dtype = acc_dtype(q, k, v)
    groups = q.shape[2] // k.shape[2]
    qh, kh, vh = (t.transpose(1, 2).to(dtype) for t in (q, k, v))
    scores = (qh @ _expand_heads(kh, groups).transpose(-1, -2)) * scale
    scores = scores.masked_fill(~_visible(length, past, window, q.device), float("-inf"))
    o = clipped_softmax(scores, zeta, gamma) @ _expand_heads(vh, groups)
    return o.transpose(1, 2).to(v.dtype).contiguous(), new_cache


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SeqzooError(f"{name} must be a positive int, got {value!r}")
    return value


def _finite(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SeqzooError(f"{name} must be a finite number, got {value!r}")
    return float(value)


@register_mixer("quantizable_attention",
                paper="Quantizable Transformers: Removing Outliers by Helping Attention Heads Do Nothing",
                arxiv="2306.12929")
class QuantizableAttention(SoftmaxAttention):
    """Attention with the clipped softmax and/or per-head output gates of Bondarenko et al. 2023 (arXiv
    2306.12929), which let heads do nothing without growing activation outliers.

    Options (besides those of the ``"attention"`` mixer): ``softmax`` ``"clipped"`` (default) or ``"vanilla"``;
    ``zeta`` (ζ ≥ 1) and ``gamma`` (γ ≤ 0; None = ``−alpha / max_seq_len``, the paper's parameterisation with
    stretch factor ``alpha`` and training length ``max_seq_len``); ``gate`` (default True) with ``gate_init``,
    the initial gate value in (0, 1). The defaults switch both fixes on; the paper evaluates each alone
    (``gate=False`` or ``softmax="vanilla"``). ``impl``: ``"math"`` (explicit; required by the clipped softmax),
    ``"sdpa"`` (vanilla softmax only) or ``"auto"``.
    """

    IMPLS: tuple[str, ...] = ("math",)  # the clipped softmax has one form: the explicit one
    constant_state = False  # a KV cache, as in plain attention

    def __init__(self, d_model: int, n_heads: int = 4, n_kv_heads: int | None = None, rope: bool = True,
                 rope_base: float = 10000.0, window: int | None = None, bias: bool = False, impl: str = "auto",
                 softmax: str = "clipped", zeta: float = 1.0, gamma: float | None = None, alpha: float = 12.0,
                 max_seq_len: int = 512, gate: bool = True, gate_init: float = 0.25):
        super().__init__(d_model, n_heads=n_heads, n_kv_heads=n_kv_heads, rope=rope, rope_base=rope_base,
                         window=window, bias=bias, impl="auto")
        if softmax not in SOFTMAXES:
            raise SeqzooError(f"unknown softmax {softmax!r} for quantizable_attention; valid: {', '.join(SOFTMAXES)}")
        valid_impls = ("auto", "math", "sdpa")
        if impl not in valid_impls:
            raise SeqzooError(f"unknown impl {impl!r} for quantizable_attention; valid: {', '.join(valid_impls)}")
        if softmax == "clipped" and impl == "sdpa":
            raise SeqzooError("impl 'sdpa' cannot clip the softmax; with softmax='clipped' use impl='math' or "
                              "'auto', or use softmax='vanilla'")
        zeta = _finite("zeta", zeta)
        alpha = _finite("alpha", alpha)
        max_seq_len = _positive_int("max_seq_len", max_seq_len)
        if alpha < 0:
            raise SeqzooError(f"alpha must be >= 0 (gamma = -alpha / max_seq_len), got {alpha}")
        gamma = -alpha / max_seq_len if gamma is None else _finite("gamma", gamma)
        if zeta < 1.0 or gamma > 0.0:
            raise SeqzooError(f"clipped softmax needs zeta >= 1 and gamma <= 0, got zeta={zeta}, gamma={gamma}")
        if not isinstance(gate, bool):
            raise SeqzooError(f"gate must be true or false, got {gate!r}")
        gate_init = _finite("gate_init", gate_init)
        if not 0.0 < gate_init < 1.0:
            raise SeqzooError(f"gate_init must be in (0, 1) (the initial sigmoid gate value), got {gate_init}")
        self.impl = impl if softmax == "vanilla" else "math"
        self.softmax, self.zeta, self.gamma = softmax, zeta, gamma
        self.gate = gate
        if gate:
            # G_h(x) = x^h · w_h + b_h on the head's slice of the input (nn.Linear(d/H, 1) per head, stacked)
            bound = self.head_dim ** -0.5
            self.gate_weight = nn.Parameter(torch.empty(n_heads, self.head_dim).uniform_(-bound, bound))
            self.gate_bias = nn.Parameter(torch.full((n_heads,), math.log(gate_init / (1.0 - gate_init))))

    def gate_values(self, x: Tensor) -> Tensor:
        """``sigmoid(G_h(x_t^h))`` for every token and query head: ``[B, T, H]``."""
        heads = x.view(*x.shape[:-1], self.n_heads, self.head_dim)
        return torch.sigmoid(torch.einsum("bthd,hd->bth", heads, self.gate_weight) + self.gate_bias)

    def _mix(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        batch, length, _ = x.shape
        q, k, v, cache = self.prepare(x, state)
        if self.softmax == "vanilla":
            o, new_cache = softmax_attention(q, k, v, cache=cache, window=self.window, impl=self.impl)
        else:
            o, new_cache = clipped_softmax_attention(q, k, v, zeta=self.zeta, gamma=self.gamma, cache=cache,
                                                     window=self.window)
        if self.gate:
            o = o * self.gate_values(x).unsqueeze(-1).to(o.dtype)
        y = self.o_proj(o.reshape(batch, length, self.d_model).to(x.dtype))
        return y, {"k": new_cache["k"], "v": new_cache["v"], "pos": state["pos"] + length}

    def extra_repr(self) -> str:
        soft = "vanilla" if self.softmax == "vanilla" else f"clipped(gamma={self.gamma:.4g}, zeta={self.zeta:.4g})"
        return f"{super().extra_repr()}, softmax={soft}, gate={self.gate}"


__all__ = ["QuantizableAttention", "clipped_softmax", "clipped_softmax_attention"]
