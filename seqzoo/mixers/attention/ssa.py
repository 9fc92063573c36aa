"""Stochastically subsampled self-attention (SSA): each training step attends to a random subset of the keys.

Paper: "The Information Pathways Hypothesis: Transformers are Dynamic Self-Ensembles", Hussain, Zaki and
Subramanian, KDD 2023, arXiv 2306.01705.

The paper argues that dense attention holds many sparse "information pathways" that can be trained independently,
and that the distribution of the useful ones is predictable (for text, biased towards nearby tokens). Training with
a random sub-sample of the attention connections at every step therefore cuts the attention memory and compute
(4–8× in the paper's abstract) and regularises; a short dense fine-tune at the end consolidates the pathways; at
inference the full (dense) attention is used, or several sub-sampled passes are averaged as a self-ensemble.

What this module does. The sub-sampling is by random partition: with the sub-sampling factor ``r = 1 / fraction``,
the positions of a call are split into ``r`` equal groups, independently for every sample and head, and attention
runs inside each group only, under the causal mask of the original positions. The paper's exact sampler for
causal language models could not be checked here; this is the reading implemented, stated so that it can be
compared:

* ``sampling="uniform"`` (unbiased): a random permutation of the positions is cut into ``r`` equal groups, so every
  earlier key is kept with probability ``≈ 1/r``.
* ``sampling="local"`` (locally biased, default): the positions are first cut into segments of ``segment``
  consecutive positions, the segments are permuted, and the resulting order is cut into ``r`` equal groups. A
  query keeps the earlier keys of its own segment for sure and every other key with probability ``≈ 1/r``, so the
  keep probability falls from 1 at distance 0 to ``1/r`` at distance ``segment`` and stays there.
* With a KV cache of ``L`` earlier keys (prefill, streaming, sub-sampled ensembles at inference), the cached and
  the new positions are partitioned separately and group ``c`` of each are paired, so query ``t`` (absolute
  position ``L + t``) of group ``c`` attends to::

      S(t) = {s ∈ group c : s ≤ L + t},   o_t = Σ_{s ∈ S(t)} softmax_s(q_t · k_s / √d) v_s

  Each query attends to about ``1/r`` of its visible keys (itself always included; never a future key).
* The queries, keys and values of each group are gathered once (no key is copied twice) into
  ``[B, H, r, ⌈T/r⌉, D]`` and ``[B, H, r, ⌈L/r⌉ + ⌈T/r⌉, D]`` tensors, so the score matrices hold
  ``T · (L + T) / r`` entries instead of ``T · (L + T)``: attention memory and compute shrink by ``r``.
* In eval mode the mixer is exactly the ``"attention"`` mixer (dense causal attention over the KV cache), unless
  ``ensemble = k > 0``: then the attention output is the mean of ``k`` independently sub-sampled passes.
  :func:`self_ensemble_log_probs` is the paper's model-level self-ensemble: it averages the predicted
  distributions of ``k`` whole-model passes, each with fresh sub-sampling in every SSA layer.
  :func:`dense_attention` switches a model's SSA layers to dense attention in training (the dense fine-tune).

The KV cache (the state) always holds every key, so sub-sampled calls can be continued by dense ones and back.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...core.errors import SeqzooError
from ...core.registry import register_mixer
from ...core.state import State
from ...ops._common import acc_dtype, resolve_scale
from ...ops.attention import _expand_heads
from .softmax import SoftmaxAttention

SAMPLINGS = ("local", "uniform")


def subsampling_factor(fraction) -> int:
    """``r = 1 / fraction`` for a fraction of the form ``1 / r`` (r a positive integer)."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction <= 1.0:
        raise SeqzooError(f"fraction must be 1/r for an integer r >= 1 (1.0, 0.5, 0.25, ...), got {fraction!r}")
    factor = round(1.0 / fraction)
    if abs(factor * fraction - 1.0) > 1e-9:
        raise SeqzooError(f"fraction must be 1/r for an integer r >= 1 (1.0, 0.5, 0.25, ...), got {fraction!r}")
    return factor


def partition(batch: int, heads: int, n: int, groups: int, *, segment: int = 1, offset: int = 0, device=None,
              generator: torch.Generator | None = None) -> Tensor:
    """Random partition of positions ``offset … offset + n − 1`` into ``groups`` groups of ``⌈n / groups⌉``, for
    every sample and head: the segments of ``segment`` consecutive positions are permuted and the order is cut
    into ``groups`` parts whose sizes differ by at most one. Returns int64 ``[B, H, groups, ⌈n / groups⌉]``;
    padding slots hold ``offset + n``."""
    size = -(-n // groups)
    if n == 0:
        return torch.full((batch, heads, groups, size), offset, dtype=torch.int64, device=device)
    n_seg = -(-n // segment)
    order = torch.rand(batch, heads, n_seg, device=device, generator=generator).argsort(dim=-1)
    pos = (order[..., None] * segment + torch.arange(segment, device=device)).flatten(-2)  # [B, H, n_seg·segment]
    if n_seg * segment > n:  # drop the missing tail of the last segment, keeping the order of the rest
        ranks = torch.arange(pos.shape[-1], device=device)
        pos = pos.gather(-1, torch.where(pos < n, ranks, ranks + pos.shape[-1]).argsort(dim=-1)[..., :n])
    # balanced cut: group c takes order entries [⌊c·n/r⌋, ⌊(c+1)·n/r⌋) (sizes differ by at most one) + padding
    bounds = [c * n // groups for c in range(groups + 1)]
    table = [[bounds[c] + j if bounds[c] + j < bounds[c + 1] else n for j in range(size)] for c in range(groups)]
    table = torch.tensor(table, dtype=torch.int64, device=device).flatten()
    pos = F.pad(pos, (0, 1), value=n).gather(-1, table.expand(batch, heads, -1))
    return (pos + offset).view(batch, heads, groups, size)


def subsampled_attention(q: Tensor, k: Tensor, v: Tensor, *, fraction: float, sampling: str = "local",
                         segment: int = 8, cache: dict | None = None, scale: float | None = None,
                         generator: torch.Generator | None = None, return_pattern: bool = False):
    """Causal attention inside random groups of positions (see the module docstring), continuing from a KV cache.

    Shapes follow :func:`seqzoo.ops.softmax_attention`: q ``[B, T, H, D]``, k/v ``[B, T, Hkv, D]``, cache
    ``{"k", "v"}`` of earlier keys/values. Returns ``(o, new_cache, info)`` where ``new_cache`` holds every key
    (the cache is never sub-sampled) and ``info`` has ``groups`` (r), ``keys_per_query`` (the score entries per
    query: ``⌈L/r⌉ + ⌈T/r⌉``), ``visible_keys`` (``L + T``) and, with ``return_pattern``, ``pattern``: bool
    ``[B, H, T, L + T]``, True where a query attended to a key.
    """
    groups = subsampling_factor(fraction)
    if sampling not in SAMPLINGS:
        raise SeqzooError(f"unknown sampling {sampling!r}; valid: {', '.join(SAMPLINGS)}")
    scale = resolve_scale("subsampled_attention", scale, q.shape[-1])
    if cache is not None:
        k, v = torch.cat([cache["k"], k], dim=1), torch.cat([cache["v"], v], dim=1)
    new_cache = {"k": k, "v": v}
    batch, length, heads, _ = q.shape
    total = k.shape[1]
    past = total - length
    info = {"groups": groups, "keys_per_query": 0, "visible_keys": total}
    if length == 0:
        return v.new_empty(batch, 0, heads, v.shape[3]), new_cache, info
    seg = segment if sampling == "local" else 1
    kw = dict(segment=seg, device=q.device, generator=generator)
    new_pos = partition(batch, heads, length, groups, offset=past, **kw)  # [B, H, r, Gq], padding = total
    old_pos = partition(batch, heads, past, groups, **kw)  # [B, H, r, Gc], padding = past
    old_pos = old_pos.masked_fill(old_pos >= past, total)  # one padding value for both
    key_pos = torch.cat([old_pos, new_pos], dim=-1)  # [B, H, r, Gc + Gq]

    dtype = acc_dtype(q, k, v)
    hkv = k.shape[2]
    qh = q.transpose(1, 2).to(dtype)
    kh = _expand_heads(k.transpose(1, 2).to(dtype), heads // hkv)  # [B, H, L + T, D]
    vh = _expand_heads(v.transpose(1, 2).to(dtype), heads // hkv)

    def take(x: Tensor, pos: Tensor, first: int) -> Tensor:  # rows pos − first of x, per group
        index = (pos - first).clamp(0, x.shape[2] - 1).flatten(2)
        rows = x.gather(2, index[..., None].expand(-1, -1, -1, x.shape[-1]))
        return rows.view(*pos.shape, x.shape[-1])

    scores = take(qh, new_pos, past) @ take(kh, key_pos, 0).transpose(-1, -2) * scale  # [B, H, r, Gq, Gc + Gq]
    visible = key_pos[..., None, :] <= new_pos[..., :, None]  # causal in original positions; padding keys never
    scores = scores.masked_fill(~visible, float("-inf"))  # (padding query rows see every key: no NaN; dropped)
    o = (torch.softmax(scores, dim=-1) @ take(vh, key_pos, 0)).flatten(2, 3)  # [B, H, r·Gq, Dv]
    slots = new_pos.flatten(2).argsort(dim=-1)[..., :length]  # the slot of each query, in position order
    o = o.gather(2, slots[..., None].expand(-1, -1, -1, o.shape[-1]))
    info["keys_per_query"] = key_pos.shape[-1]
    if return_pattern:
        same = torch.zeros(batch, heads, groups, total + 1, dtype=torch.bool, device=q.device)
        same.scatter_(-1, key_pos, True)  # [B, H, r, L + T (+ padding column)]
        group_of = torch.zeros(batch, heads, total + 1, dtype=torch.int64, device=q.device)
        group_of.scatter_(-1, new_pos.flatten(2), torch.arange(groups, device=q.device).repeat_interleave(
            new_pos.shape[-1]).expand(batch, heads, -1))
        member = same.gather(2, group_of[:, :, past:total, None].expand(-1, -1, -1, total + 1))[..., :total]
        causal = (torch.arange(total, device=q.device)[None, :]
                  <= past + torch.arange(length, device=q.device)[:, None])
        info["pattern"] = member & causal
    return o.transpose(1, 2).to(v.dtype).contiguous(), new_cache, info


@register_mixer("ssa_attention",
                paper="The Information Pathways Hypothesis: Transformers are Dynamic Self-Ensembles",
                arxiv="2306.01705")
class SSAAttention(SoftmaxAttention):
    """Stochastically subsampled causal attention (Hussain, Zaki and Subramanian, KDD 2023, arXiv 2306.01705): in
    training, each sample and head splits the positions into ``1 / fraction`` random groups and attends only
    within its group (gathered, so attention memory and compute shrink by that factor); in eval mode it is dense
    attention.

    Options (besides ``n_heads``, ``n_kv_heads``, ``rope``, ``rope_base``, ``bias``, ``impl`` of the
    ``"attention"`` mixer; ``impl`` applies to the dense path): ``fraction`` = 1/r with r the paper's
    sub-sampling factor (1.0 keeps every key); ``sampling`` ``"local"`` (locally biased, default) or
    ``"uniform"``; ``segment`` (length of the runs kept together by ``"local"``); ``ensemble`` (0: dense attention
    in eval mode; k > 0: the mean of k sub-sampled attention passes in eval mode).
    """

    IMPLS: tuple[str, ...] = ("math", "sdpa")  # the dense (eval-mode) path; the sub-sampled path is explicit
    constant_state = False  # the KV cache keeps every key

    def __init__(self, d_model: int, n_heads: int = 4, n_kv_heads: int | None = None, rope: bool = True,
                 rope_base: float = 10000.0, bias: bool = False, impl: str = "auto", fraction: float = 0.25,
                 sampling: str = "local", segment: int = 8, ensemble: int = 0):
        super().__init__(d_model, n_heads=n_heads, n_kv_heads=n_kv_heads, rope=rope, rope_base=rope_base,
                         window=None, bias=bias, impl=impl)
        subsampling_factor(fraction)
        if sampling not in SAMPLINGS:
            raise SeqzooError(f"unknown sampling {sampling!r} for ssa_attention; valid: {', '.join(SAMPLINGS)}")
        for name, value, low in (("segment", segment, 1), ("ensemble", ensemble, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise SeqzooError(f"{name} must be an int >= {low}, got {value!r}")
        self.fraction, self.sampling, self.segment, self.ensemble = float(fraction), sampling, segment, ensemble
        self.override: str | None = None  # "subsample" / "dense": set by `subsampling(model)` / `dense_attention`
        self.last_gather: dict | None = None  # sizes of the last sub-sampled call (for memory accounting)

    def _mix(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        passes = 1 if (self.training or self.override == "subsample") else self.ensemble
        if passes == 0 or self.override == "dense":
            return super()._mix(x, state)  # dense attention, exactly the "attention" mixer
        batch, length, _ = x.shape
        q, k, v, cache = self.prepare(x, state)
        o = None
        for _ in range(passes):
            o_pass, new_cache, info = subsampled_attention(q, k, v, fraction=self.fraction, sampling=self.sampling,
                                                           segment=self.segment, cache=cache)
            o = o_pass if o is None else o + o_pass
        o = o / passes
        self.last_gather = info
        y = self.o_proj(o.reshape(batch, length, self.d_model).to(x.dtype))
        return y, {"k": new_cache["k"], "v": new_cache["v"], "pos": state["pos"] + length}

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, fraction={self.fraction}, sampling={self.sampling!r}, "
                f"segment={self.segment}, ensemble={self.ensemble}")


@contextlib.contextmanager
def _override(model: nn.Module, mode: str):
    mixers = [m for m in model.modules() if isinstance(m, SSAAttention)]
    if not mixers:
        raise SeqzooError(f"{type(model).__name__} has no ssa_attention layer")
    previous = [m.override for m in mixers]
    try:
        for m in mixers:
            m.override = mode
        yield model
    finally:
        for m, p in zip(mixers, previous):
            m.override = p


def subsampling(model: nn.Module):
    """Context manager: every :class:`SSAAttention` in ``model`` sub-samples (one pass) even in eval mode."""
    return _override(model, "subsample")


def dense_attention(model: nn.Module):
    """Context manager: every :class:`SSAAttention` in ``model`` uses dense attention even in training mode (the
    paper's short dense fine-tune that consolidates the pathways at the end of SSA training)."""
    return _override(model, "dense")


@torch.no_grad()
def self_ensemble_log_probs(model: nn.Module, inputs: Tensor, passes: int) -> Tensor:
    """The paper's self-ensemble: log of the mean predicted distribution of ``passes`` forward passes of
    ``model(inputs) -> (logits, state)``, each with fresh sub-sampling in every SSA layer (eval mode)."""
    if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
        raise SeqzooError(f"passes must be a positive int, got {passes!r}")
    was_training = model.training
    model.eval()
    try:
        with subsampling(model):
            total = None
            for _ in range(passes):
                logits = model(inputs)[0]
                log_probs = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
                total = log_probs if total is None else torch.logaddexp(total, log_probs)
    finally:
        model.train(was_training)
    return total - math.log(passes)


__all__ = ["SSAAttention", "subsampling_factor", "partition", "subsampled_attention", "subsampling",
           "dense_attention", "self_ensemble_log_probs"]
