"""Auto-Correlation of Autoformer: period-based dependencies and time-delay aggregation.

Paper: "Autoformer: Decomposition Transformers with Auto-Correlation for Long-Term Series Forecasting", Wu, Xu,
Wang and Long, NeurIPS 2021, arXiv 2106.13008 (section 3.2).

For one series of length L (per head h and channel e, indices mod L):

    R_{Q,K}(τ) = Σ_t q_{(t+τ) mod L} · k_t                                            (paper eq. 5, circular)
               = irfft( rfft(q) ⊙ conj(rfft(k)) )(τ)                          (Wiener–Khinchin, O(L log L))
    r(τ)       = mean over channels (and heads, unless ``per_head``) of R(τ)
    τ_1 … τ_k  = argTopk_τ r(τ),   k = ⌊c · ln L⌋                                       (c = ``factor``)
    w_1 … w_k  = softmax(r(τ_1), …, r(τ_k))
    o_t        = Σ_i w_i · v_{(t+τ_i) mod L},   i.e.  Σ_i w_i · Roll(V, −τ_i)               (paper eq. 6)

Multi-head: Q, K, V are projected into H heads and the outputs concatenated and projected (paper eq. 7).
By default r averages the correlation over heads and channels, so one set of delays and weights serves every
head of a sequence (the reference code, thuml/Autoformer ``layers/AutoCorrelation.py``); ``per_head=True`` gives
each head its own delays and weights (the paper's per-head formula). The reference chooses delays per sequence
at inference but, in training, from the batch-mean correlation shared by every sequence of the batch (a speed
trick); ``batch_delays=True`` does that in training mode (weights are still each sequence's own r at those
delays). ``k`` is at least 1 and at most L (the reference gives k = 0 for L ≤ 2).

Cross-correlation with keys/values of another length S (Autoformer's decoder) follows the reference: with
S < L the keys and values are padded with zeros to L, with S > L the first L are used.

Auto-Correlation mixes every position with positions before and after it (roll wraps around), so the mixer is
non-causal (``causal = False``): each call treats its input as one whole series. Its state only counts the
tokens seen (``{"pos": int64 [B]}``); nothing carries over between calls.

``impl``: ``"direct"`` (the reference: the circular correlation sum written out, O(L²)) or ``"fft"`` (auto).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ...core.errors import SeqzooError
from ...core.mixer import Mixer
from ...core.registry import register_mixer
from ...core.state import State
from ...ops._common import acc_dtype, check_tensor, fail, resolve_impl
from .softmax import check_heads, check_impl

OP = "autocorrelation"
_IMPLS = ("direct", "fft")


def num_delays(length: int, factor: float) -> int:
    """``k = ⌊c · ln L⌋`` clamped to ``[1, L]``."""
    if length <= 0:
        return 0
    return max(1, min(length, int(factor * math.log(length))))


def circular_correlation(q: Tensor, k: Tensor, impl: str = "fft") -> Tensor:
    """``R(τ) = Σ_t q_{(t+τ) mod L} k_t`` along the LAST dimension (``q, k: [..., L]``), for τ = 0 … L−1.

    ``"fft"`` uses ``irfft(rfft(q) · conj(rfft(k)))``; ``"direct"`` builds the L×L matrix of shifted q explicitly.
    """
    length = q.shape[-1]
    if impl == "fft":
        return torch.fft.irfft(torch.fft.rfft(q, dim=-1) * torch.fft.rfft(k, dim=-1).conj(), n=length, dim=-1)
    shifts = (torch.arange(length, device=q.device)[:, None] + torch.arange(length, device=q.device)) % length
    return torch.einsum("...ut,...t->...u", q[..., shifts], k)          # q[..., shifts][τ, t] = q_{(t+τ) mod L}


def delay_aggregate(v: Tensor, delays: Tensor, weights: Tensor) -> Tensor:
    """``o_t = Σ_i w_i v_{(t+τ_i) mod L}`` for ``v: [B, H, L, Dv]`` with ``delays, weights: [B, H, k]``
    (the same as ``Σ_i w_i · torch.roll(v, −τ_i, dims=2)``, done with one gather per delay)."""
    length = v.shape[2]
    positions = torch.arange(length, device=v.device)
    out = torch.zeros_like(v)
    for i in range(delays.shape[-1]):
        index = (positions + delays[..., i, None]) % length                     # [B, H, L]
        out = out + weights[..., i, None, None] * v.gather(2, index[..., None].expand_as(v))
    return out


@dataclass
class AutoCorrelationInfo:
    """``correlation``: ``r`` ``[B, H, L]`` (the same for every head unless per-head); ``delays``, ``weights``:
    ``[B, H, k]`` the chosen delays τ_i (by decreasing r) and their softmax weights."""

    correlation: Tensor
    delays: Tensor
    weights: Tensor


def autocorrelation(q: Tensor, k: Tensor, v: Tensor, *, factor: float = 1.0, per_head: bool = False,
                    batch_delays: bool = False, impl: str = "auto") -> tuple[Tensor, AutoCorrelationInfo]:
    """Auto-Correlation with time-delay aggregation (see the module docstring).

    Args:
        q: ``[B, L, H, E]``; k: ``[B, S, H, E]``; v: ``[B, S, H, Dv]`` (S ≠ L: padded with zeros or cut to L).
        factor: c in ``k = ⌊c ln L⌋`` (1 in the reference).
        per_head: choose delays per head (paper) instead of per sequence (reference code).
        batch_delays: choose the delays from the batch-mean correlation (the reference's training mode).
        impl: ``"fft"`` (auto) or ``"direct"``.

    Returns:
        ``(o, info)``: o ``[B, L, H, Dv]`` in the dtype of v, and an :class:`AutoCorrelationInfo`.
    """
    check_tensor(OP, "q", q, "B, L, H, E")
    check_tensor(OP, "k", k, "B, S, H, E")
    check_tensor(OP, "v", v, "B, S, H, Dv")
    B, L, H, E = q.shape
    if k.shape[0] != B or k.shape[2:] != (H, E):
        raise fail(OP, f"k must have shape [B, S, H, E] with B, H, E = {B}, {H}, {E}, got {list(k.shape)}")
    if tuple(v.shape[:3]) != tuple(k.shape[:3]):
        raise fail(OP, f"v must have shape [B, S, H, Dv] with [B, S, H] = {list(k.shape[:3])}, got {list(v.shape)}")
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
        raise fail(OP, f"factor must be a positive number, got {factor!r}")
    impl = resolve_impl(OP, impl, _IMPLS, "fft")
    dtype = acc_dtype(q, k, v)
    S = k.shape[1]
    if S < L:
        pad = (0, 0, 0, 0, 0, L - S)
        k, v = nn.functional.pad(k, pad), nn.functional.pad(v, pad)
    elif S > L:
        k, v = k[:, :L], v[:, :L]
    if L == 0:
        empty = torch.zeros(B, H, 0, dtype=torch.int64, device=q.device)
        return v.new_zeros(B, 0, H, v.shape[3]), AutoCorrelationInfo(q.new_zeros(B, H, 0), empty, q.new_zeros(B, H, 0))

    qt, kt = (t.permute(0, 2, 3, 1).to(dtype) for t in (q, k))              # [B, H, E, L]
    corr = circular_correlation(qt, kt, impl).mean(2)                        # [B, H, L]
    if not per_head:
        corr = corr.mean(1, keepdim=True).expand(B, H, L)
    n = num_delays(L, factor)
    if batch_delays:
        delays = corr.mean(0).topk(n, dim=-1).indices.expand(B, H, n)        # shared by the batch
        scores = corr.gather(-1, delays)
    else:
        scores, delays = corr.topk(n, dim=-1)
    weights = torch.softmax(scores, dim=-1)
    out = delay_aggregate(v.transpose(1, 2).to(dtype), delays, weights)      # [B, H, L, Dv]
    info = AutoCorrelationInfo(correlation=corr.detach(), delays=delays, weights=weights.detach())
    return out.transpose(1, 2).to(v.dtype).contiguous(), info


@register_mixer("autocorrelation", paper="Autoformer: Decomposition Transformers with Auto-Correlation for "
                "Long-Term Series Forecasting", arxiv="2106.13008")
class AutoCorrelation(Mixer):
    """Autoformer's multi-head Auto-Correlation (Wu et al. 2021, arXiv 2106.13008): FFT autocorrelation of Q and
    K, the top ``⌊c ln L⌋`` delays, softmax weights and ``Σ_i w_i Roll(V, −τ_i)``; non-causal (``causal = False``).

    Options: ``n_heads``; ``factor`` (c; 1 in the reference); ``per_head`` delays; ``batch_delays`` (in training
    mode, delays shared by the batch as in the reference); ``bias`` on the value and output projections
    (query/key biases would change nothing); ``impl`` in ``IMPLS`` or ``"auto"``.
    """

    IMPLS: tuple[str, ...] = ("direct", "fft")
    constant_state = True  # only a token counter
    causal = False

    def __init__(self, d_model: int, n_heads: int = 4, factor: float = 1.0, per_head: bool = False,
                 batch_delays: bool = False, bias: bool = True, impl: str = "auto"):
        super().__init__(d_model)
        self.head_dim = check_heads(d_model, n_heads)
        self.n_heads = n_heads
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
            raise SeqzooError(f"factor must be a positive number (1 in the reference), got {factor!r}")
        for name, flag in (("per_head", per_head), ("batch_delays", batch_delays)):
            if not isinstance(flag, bool):
                raise SeqzooError(f"{name} must be True or False, got {flag!r}")
        self.factor = float(factor)
        self.per_head = per_head
        self.batch_delays = batch_delays
        self.impl = check_impl(impl, self.IMPLS, "autocorrelation")
        # no query/key biases: they add the same amount to R(τ) for every τ, which top-k and softmax ignore
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.o_proj = nn.Linear(d_model, d_model, bias=bias)
        self.last_info: AutoCorrelationInfo | None = None

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> State:
        return {"pos": torch.zeros(batch_size, dtype=torch.int64, device=device)}

    def state_size(self, seq_len: int) -> int:
        return 1

    def _mix(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        if "pos" not in state:
            raise SeqzooError("autocorrelation state lacks 'pos'; use init_state or a state returned by a call")
        batch, length, _ = x.shape
        q, k, v = self.project(x)
        o, self.last_info = autocorrelation(q, k, v, factor=self.factor, per_head=self.per_head,
                                            batch_delays=self.batch_delays and self.training, impl=self.impl)
        return self.o_proj(o.reshape(batch, length, self.d_model).to(x.dtype)), {"pos": state["pos"] + length}

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Heads ``q, k, v: [B, T, H, d]``."""
        shape = (*x.shape[:2], self.n_heads, self.head_dim)
        return self.q_proj(x).view(shape), self.k_proj(x).view(shape), self.v_proj(x).view(shape)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, n_heads={self.n_heads}, factor={self.factor:g}, "
                f"per_head={self.per_head}, batch_delays={self.batch_delays}, impl={self.impl!r}")


__all__ = ["AutoCorrelation", "AutoCorrelationInfo", "autocorrelation", "circular_correlation",
           "delay_aggregate", "num_delays"]
