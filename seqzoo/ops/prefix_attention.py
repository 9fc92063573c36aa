"""Prefix attention with one constant query: softmax attention over every prefix, as an RNN and as a parallel scan.

Paper: "Attention as an RNN", Feng, Tung, Hajimirsadeghi, Ahmed, Bengio and Mori, 2024, arXiv 2405.13956
(sec. 3.1: attention as a many-to-one RNN; sec. 3.2: its many-to-many outputs by a parallel prefix scan; sec. 3.3:
Aaren, whose query is a learned token that does not depend on the input). The scan itself is Hillis and Steele,
"Data Parallel Algorithms", 1986 (log₂ T rounds of "combine with the element 2^j places earlier").

Shapes: q ``[H, K]`` (one query per head, the same for every sequence and step); k ``[B, T, H, K]``;
v ``[B, T, H, V]``. With ``scale`` (None means K^-1/2, applied to q), per head and sequence:

    s_i = scale · q · k_i                                         (the score of token i)
    o_t = Σ_{i≤t} exp(s_i) v_i / Σ_{i≤t} exp(s_i)                 (softmax over the prefix 1 … t)

The RNN state after t tokens is the triple (m_t, u_t, w_t) with

    m_t = max_{i≤t} s_i,   u_t = Σ_{i≤t} exp(s_i − m_t),   w_t = Σ_{i≤t} exp(s_i − m_t) v_i,   o_t = w_t / u_t

(m keeps every exponent ≤ 0, so any score range is safe: ±1e3 is fine in float32 and float64). A token is the
leaf (s_i, 1, v_i); the empty prefix is the identity (−∞, 0, 0). Triples combine with the associative (and
commutative) operator

    (m_a, u_a, w_a) ⊕ (m_b, u_b, w_b) = (m, u_a e^{m_a − m} + u_b e^{m_b − m}, w_a e^{m_a − m} + w_b e^{m_b − m}),
    m = max(m_a, m_b)

so state_t = state_0 ⊕ leaf_1 ⊕ … ⊕ leaf_t, and every prefix can be computed by a parallel prefix scan.

Forms (``impl``):

* ``"recurrent"``: state ← state ⊕ leaf_t, one token at a time (the reference; O(1) memory per step).
* ``"parallel"`` (the default for "auto"): the initial state is folded into the first leaf, then a Hillis–Steele
  inclusive scan: in round j every position t ≥ 2^j combines with the partial result at t − 2^j. ⌈log₂ T⌉ rounds
  (log depth), O(T log T) work, O(T) memory per round. With ``chunk_size`` the sequence is scanned in blocks
  of that many steps, the state carried from block to block (memory bounded by the block).

Gradients: the triple stands for (u e^m, w e^m); o = w / u does not depend on which m is used as long as it is the
same for u and w. The running maximum is therefore a constant for autograd (it is detached), which makes the
gradients of every form exact and identical, and free of the ties of ``max``. A leaf keeps its own score as m,
so gradients reach the scores through e^{s − m}.

Returns ``(o [B, T, H, V] in the dtype of v, final_state)`` where the state is ``{"m": [B, H], "u": [B, H],
"w": [B, H, V]}`` in float32 (float64 for float64 inputs); ``initial_state`` takes the same dict (None: the empty
prefix, m = −∞, u = 0, w = 0).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._common import acc_dtype, check_chunk_size, check_same_device, check_shape, check_tensor, fail, \
    resolve_impl, resolve_scale

OP = "prefix_attention"
_IMPLS = ("recurrent", "parallel")
STATE_KEYS = ("m", "u", "w")


def combine(a: tuple[Tensor, Tensor, Tensor], b: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """``a ⊕ b`` for triples ``(m [...], u [...], w [..., V])`` (see the module docstring).

    At least one of ``m_a, m_b`` must be finite in every position (−∞ − (−∞) is undefined); the forms below
    only ever combine a partial result with at least one real token.
    """
    m_a, u_a, w_a = a
    m_b, u_b, w_b = b
    m = torch.maximum(m_a, m_b).detach()
    f_a, f_b = torch.exp(m_a - m), torch.exp(m_b - m)
    return m, u_a * f_a + u_b * f_b, w_a * f_a[..., None] + w_b * f_b[..., None]


def empty_state(batch: int, heads: int, value_dim: int, *, dtype=torch.float32, device=None) -> dict[str, Tensor]:
    """The state of the empty prefix: m = −∞, u = 0, w = 0 (the identity of ⊕)."""
    return {"m": torch.full((batch, heads), float("-inf"), dtype=dtype, device=device),
            "u": torch.zeros(batch, heads, dtype=dtype, device=device),
            "w": torch.zeros(batch, heads, value_dim, dtype=dtype, device=device)}


# ------------------------------------------------------------------------------------------------------ forms
def _recurrent(s: Tensor, v: Tensor, state: tuple, chunk_size) -> tuple[Tensor, tuple]:
    outputs = []
    for s_t, v_t in zip(s.unbind(1), v.unbind(1)):
        state = combine(state, (s_t, torch.ones_like(s_t), v_t))
        outputs.append(state[2] / state[1][..., None])
    return torch.stack(outputs, dim=1), state


def _scan(m: Tensor, u: Tensor, w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Inclusive Hillis–Steele scan of triples along dim 1 (``m, u [B, T, H]``, ``w [B, T, H, V]``)."""
    shift, T = 1, m.shape[1]
    while shift < T:
        head = (m[:, :shift], u[:, :shift], w[:, :shift])            # already complete prefixes
        m_n, u_n, w_n = combine((m[:, :-shift], u[:, :-shift], w[:, :-shift]), (m[:, shift:], u[:, shift:],
                                                                                 w[:, shift:]))
        m = torch.cat([head[0], m_n], dim=1)
        u = torch.cat([head[1], u_n], dim=1)
        w = torch.cat([head[2], w_n], dim=1)
        shift *= 2
    return m, u, w


def _parallel(s: Tensor, v: Tensor, state: tuple, chunk_size) -> tuple[Tensor, tuple]:
    T = s.shape[1]
    block = T if chunk_size is None else chunk_size
    outputs = []
    for start in range(0, T, block):
        s_b, v_b = s[:, start:start + block], v[:, start:start + block]
        # fold the incoming state into the first leaf: leaf_1 ← state ⊕ leaf_1
        first = combine(state, (s_b[:, 0], torch.ones_like(s_b[:, 0]), v_b[:, 0]))
        m = torch.cat([first[0][:, None], s_b[:, 1:]], dim=1)
        u = torch.cat([first[1][:, None], torch.ones_like(s_b[:, 1:])], dim=1)
        w = torch.cat([first[2][:, None], v_b[:, 1:]], dim=1)
        m, u, w = _scan(m, u, w)
        outputs.append(w / u[..., None])
        state = (m[:, -1], u[:, -1], w[:, -1])
    return torch.cat(outputs, dim=1), state


_FORMS = {"recurrent": _recurrent, "parallel": _parallel}


# ---------------------------------------------------------------------------------------------------- public
def _start_state(initial_state, batch: int, heads: int, value_dim: int, dtype, device) -> tuple:
    if initial_state is None:
        state = empty_state(batch, heads, value_dim, dtype=dtype, device=device)
        return tuple(state[key] for key in STATE_KEYS)
    if not isinstance(initial_state, dict) or set(initial_state) != set(STATE_KEYS):
        got = sorted(initial_state) if isinstance(initial_state, dict) else type(initial_state).__name__
        raise fail(OP, f"initial_state must be a dict with keys m, u, w (or None), got {got}")
    check_shape(OP, "initial_state['m']", initial_state["m"], (batch, heads), "B, H")
    check_shape(OP, "initial_state['u']", initial_state["u"], (batch, heads), "B, H")
    check_shape(OP, "initial_state['w']", initial_state["w"], (batch, heads, value_dim), "B, H, V")
    for key in STATE_KEYS:
        if initial_state[key].device != torch.device(device):
            raise fail(OP, f"initial_state['{key}'] is on {initial_state[key].device} but the inputs are on "
                           f"{device}")
    return tuple(initial_state[key].to(dtype) for key in STATE_KEYS)


def prefix_attention(q: Tensor, k: Tensor, v: Tensor, *, initial_state: dict | None = None, scale=None,
                     impl: str = "auto", chunk_size: int | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """Softmax attention of one constant query per head over every prefix (Aaren, arXiv 2405.13956).

    Args:
        q: ``[H, K]`` one query per head, shared by all sequences and steps.
        k: ``[B, T, H, K]``; v: ``[B, T, H, V]``.
        initial_state: ``{"m": [B, H], "u": [B, H], "w": [B, H, V]}`` or None (the empty prefix).
        scale: applied to q; None means ``K ** -0.5``.
        impl: "auto" (= "parallel"), "recurrent" or "parallel".
        chunk_size: None (one scan over the whole sequence) or the block length of the parallel scan.

    Returns ``(o [B, T, H, V], final_state)`` (see the module docstring).
    """
    check_tensor(OP, "q", q, "H, K")
    check_tensor(OP, "k", k, "B, T, H, K")
    batch, T, heads, K = k.shape
    check_shape(OP, "q", q, (heads, K), "H, K")
    check_tensor(OP, "v", v, "B, T, H, V")
    if tuple(v.shape[:3]) != (batch, T, heads):
        raise fail(OP, f"v must have shape [B, T, H, V] with [B, T, H] = {[batch, T, heads]} like k, "
                       f"got {list(v.shape)}")
    device = check_same_device(OP, q=q, k=k, v=v)
    impl = resolve_impl(OP, impl, _IMPLS, "parallel")
    if chunk_size is not None:
        chunk_size = check_chunk_size(OP, chunk_size)
    scale = resolve_scale(OP, scale, K)
    dtype = acc_dtype(q, k, v)
    state = _start_state(initial_state, batch, heads, v.shape[3], dtype, device)
    if T == 0:
        return v.new_empty(batch, 0, heads, v.shape[3]), dict(zip(STATE_KEYS, state))
    s = torch.einsum("bthk,hk->bth", k.to(dtype), q.to(dtype) * scale)
    o, state = _FORMS[impl](s, v.to(dtype), state, chunk_size)
    return o.to(v.dtype), dict(zip(STATE_KEYS, state))


__all__ = ["prefix_attention", "combine", "empty_state"]
