"""Causal softmax attention with a key/value cache, an optional sliding window and grouped-query heads.

Papers: "Attention Is All You Need", Vaswani et al., 2017, arXiv 1706.03762 (eq. 1, scaled dot-product
attention); "GQA: Training Generalized Multi-Query Transformer Models from Multi-Head Checkpoints", Ainslie et al.,
2023, arXiv 2305.13245 (query heads share key/value heads in groups); "Longformer: The Long-Document Transformer",
Beltagy, Peters and Cohan, 2020, arXiv 2004.05150 (sliding-window attention); the cache is the usual incremental
decoding state of autoregressive transformers.

Shapes: q ``[B, Tq, H, D]``; k ``[B, Tk, Hkv, D]``; v ``[B, Tk, Hkv, Dv]`` with ``Tk == Tq`` (the new keys belong to
the new queries) and H a multiple of Hkv; query head h uses key/value head ``h // (H // Hkv)``. The cache holds the
L most recent earlier keys/values ``{"k": [B, L, Hkv, D], "v": [B, L, Hkv, Dv]}``, oldest first.

Positions are counted from the first new token: cached key j sits at p_j = j − L, new key j at p_j = j, and query
i at i. With ``scale`` (None means D^-1/2):

    o_i = Σ_j softmax_j(scale · q_i · k_j + m_ij) v_j,  m_ij = 0 if p_j ≤ i (and i − p_j < w with a window w)
                                                         m_ij = −∞ otherwise

The returned cache holds the cached and new keys/values, trimmed to the last ``window`` of them when a window is
set (what the next call can still see), so feeding a sequence in any split gives the same outputs as one call.

Forms (``impl``): ``"sdpa"`` (default; :func:`torch.nn.functional.scaled_dot_product_attention`, with
``is_causal=True`` when there is no cache and no window, an explicit boolean mask otherwise) and ``"math"`` (the
equation above written out in float32 / float64, the reference).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._common import acc_dtype, check_same_device, check_tensor, fail, resolve_impl, resolve_scale

OP = "softmax_attention"
_IMPLS = ("sdpa", "math")


def _check_inputs(q, k, v, cache, window) -> tuple[Tensor | None, Tensor | None]:
    """Validate shapes; return the cached keys and values (None when there is no cache)."""
    check_tensor(OP, "q", q, "B, Tq, H, D")
    check_tensor(OP, "k", k, "B, Tk, Hkv, D")
    check_tensor(OP, "v", v, "B, Tk, Hkv, Dv")
    B, Tq, H, D = q.shape
    if k.shape[0] != B or k.shape[3] != D:
        raise fail(OP, f"k must have shape [B, Tk, Hkv, D] with B = {B}, D = {D} like q, got {list(k.shape)}")
    if k.shape[1] != Tq:
        raise fail(OP, f"k must hold one key per query (Tk == Tq = {Tq}), got Tk = {k.shape[1]}")
    Hkv = k.shape[2]
    if Hkv == 0 or H % Hkv != 0:
        raise fail(OP, f"the query heads H = {H} must be a multiple of the key/value heads Hkv = {Hkv}")
    if tuple(v.shape[:3]) != tuple(k.shape[:3]):
        raise fail(OP, f"v must have shape [B, Tk, Hkv, Dv] with [B, Tk, Hkv] = {list(k.shape[:3])}, "
                       f"got {list(v.shape)}")
    check_same_device(OP, q=q, k=k, v=v)
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
        raise fail(OP, f"window must be a positive int or None, got {window!r}")
    if cache is None:
        return None, None
    if not isinstance(cache, dict) or set(cache) != {"k", "v"}:
        got = sorted(cache) if isinstance(cache, dict) else type(cache).__name__
        raise fail(OP, f"cache must be None or a dict with keys 'k' and 'v', got {got}")
    ck, cv = cache["k"], cache["v"]
    check_tensor(OP, "cache['k']", ck, "B, L, Hkv, D")
    check_tensor(OP, "cache['v']", cv, "B, L, Hkv, Dv")
    if (ck.shape[0], ck.shape[2], ck.shape[3]) != (B, Hkv, D):
        raise fail(OP, f"cache['k'] must have shape [B, L, Hkv, D] = [{B}, L, {Hkv}, {D}], got {list(ck.shape)}")
    if tuple(cv.shape) != (*ck.shape[:3], v.shape[3]):
        raise fail(OP, f"cache['v'] must have shape [B, L, Hkv, Dv] = {[*ck.shape[:3], v.shape[3]]}, "
                       f"got {list(cv.shape)}")
    check_same_device(OP, q=q, cache_k=ck, cache_v=cv)
    return ck, cv


def _visible(Tq: int, L: int, window: int | None, device) -> Tensor:
    """Boolean ``[Tq, L + Tq]`` mask: True where query i may attend to key j (cached keys first)."""
    query_pos = torch.arange(Tq, device=device)[:, None]
    key_pos = torch.arange(-L, Tq, device=device)[None, :]
    visible = key_pos <= query_pos
    if window is not None:
        visible = visible & (query_pos - key_pos < window)
    return visible


def _expand_heads(x: Tensor, groups: int) -> Tensor:
    """``[B, Hkv, T, D] -> [B, Hkv * groups, T, D]``, head h reading kv head h // groups."""
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def _math(q: Tensor, k: Tensor, v: Tensor, visible: Tensor | None, scale: float) -> Tensor:
    """Reference: explicit float softmax. q, k, v heads-first ``[B, H, T, D]`` in the accumulation dtype."""
    scores = (q @ k.transpose(-1, -2)) * scale
    if visible is not None:
        scores = scores.masked_fill(~visible, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


# SDPA shares key/value heads itself (no copy of the cache per call) from torch 2.5 on
_SDPA_GQA = tuple(int(part) for part in torch.__version__.split(".")[:2]) >= (2, 5)


def _sdpa(q: Tensor, k: Tensor, v: Tensor, visible: Tensor | None, scale: float, causal: bool) -> Tensor:
    groups = q.shape[1] // k.shape[1]
    if groups > 1 and _SDPA_GQA:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=visible, is_causal=causal, scale=scale,
                                              enable_gqa=True)
    k, v = _expand_heads(k, groups), _expand_heads(v, groups)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=visible, is_causal=causal, scale=scale)


def softmax_attention(q: Tensor, k: Tensor, v: Tensor, *, scale: float | None = None, cache: dict | None = None,
                      window: int | None = None, impl: str = "auto") -> tuple[Tensor, dict]:
    """Causal (optionally sliding-window, grouped-query) softmax attention continuing from a KV cache.

    Args:
        q: ``[B, Tq, H, D]``; k: ``[B, Tq, Hkv, D]``; v: ``[B, Tq, Hkv, Dv]`` (H a multiple of Hkv).
        scale: None means ``D ** -0.5``.
        cache: None or ``{"k": [B, L, Hkv, D], "v": [B, L, Hkv, Dv]}``, the L most recent earlier keys/values.
        window: None (full causal attention) or w ≥ 1: each query sees only the w most recent keys, itself
            included.
        impl: "auto" (= "sdpa"), "sdpa" or "math".

    Returns:
        ``(o, new_cache)``: o ``[B, Tq, H, Dv]`` in the dtype of v; new_cache with the cached and new keys/values
        (the last ``window`` of them when a window is set).
    """
    cached_k, cached_v = _check_inputs(q, k, v, cache, window)
    impl = resolve_impl(OP, impl, _IMPLS, "sdpa")
    scale = resolve_scale(OP, scale, q.shape[-1])
    if cached_k is not None:
        k, v = torch.cat([cached_k, k], dim=1), torch.cat([cached_v, v], dim=1)
    L, Tq = k.shape[1] - q.shape[1], q.shape[1]
    new_cache = {"k": k, "v": v}
    if window is not None and k.shape[1] > window:
        new_cache = {"k": k[:, -window:].contiguous(), "v": v[:, -window:].contiguous()}
    if Tq == 0:
        return v.new_empty(q.shape[0], 0, q.shape[2], v.shape[3]), new_cache

    # plain causal masking when every query sees all keys up to itself; an explicit mask otherwise
    causal = L == 0 and (window is None or window >= Tq)
    needs_mask = not causal and not (Tq == 1 and (window is None or window > L))
    visible = _visible(Tq, L, window, q.device) if needs_mask else None
    if impl == "math":
        dtype = acc_dtype(q, k, v)
        qh, kh, vh = (x.transpose(1, 2).to(dtype) for x in (q, k, v))
        groups = q.shape[2] // k.shape[2]
        visible = _visible(Tq, 0, None, q.device) if causal else visible
        o = _math(qh, _expand_heads(kh, groups), _expand_heads(vh, groups), visible, scale)
    else:
        qh, kh, vh = (x.transpose(1, 2).to(v.dtype) for x in (q, k, v))
        o = _sdpa(qh, kh, vh, visible, scale, causal)
    return o.transpose(1, 2).to(v.dtype).contiguous(), new_cache
