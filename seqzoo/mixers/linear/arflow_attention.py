"""ARFlow's hybrid linear attention: exact softmax attention inside a chunk, gated linear attention across chunks.

Paper: "ARFlow: Autoregressive Flow with Hybrid Linear Attention", Hui, Zhu, Yang, Zhang, Wang, Zhou, Eshraghian
and Xie 2025, arXiv 2501.16085. In ARFlow a chunk is one noisy image (its patches); the images of one denoising
trajectory form a causal sequence of chunks. The paper describes the layer in words ("full attention within
images, linear attention across images"); the equations below are those of its official code
(TheFllood/ARFlow, ``linearattention/gated_retnet_train.py`` and ``linearattention/kernel/gate_recurrent_train.py``),
read there and rewritten here.

Sequence split into chunks of ``C`` tokens; chunk ``c`` holds positions ``[cC, (c+1)C)``. Per head (``H`` heads
of width ``d``), with ``RMSNorm`` without weights over each head's ``d`` features:

    q_t = RMSNorm(x_t W_Q),  k_t = RMSNorm(x_t W_K),  v_t = RMSNorm(x_t W_V)
    α_t = logsigmoid(x_t W_α) / 16                    (log-decay ≤ 0, one per head; gated=False: α_t = 0)

    intra_t = Σ_{s ∈ c(t), s ≤ t} softmax_s(d^{-1/2} q_t·k_s) v_s     (within_chunk="causal", the default)
    intra_t = Σ_{s ∈ c(t)}        softmax_s(d^{-1/2} q_t·k_s) v_s     (within_chunk="full": all of the chunk)

    S_0 = 0,   S_{c+1} = γ_c S_c + Σ_{s ∈ c} d^{-1/2} φ(k_s)ᵀ v_s,   γ_c = exp( (1/C) Σ_{s ∈ c} α_s )
    G_t = Σ_{s ∈ c(t), s ≤ t} α_s                     (decay accumulated inside the current chunk)
    inter_t = exp(G_t) φ(q_t) S_{c(t)}                (only chunks before c(t); zero in the first chunk)

    o_t = intra_t + inter_t
    y_t = concat_h( SiLU(x_t W_G^h) ⊙ RMSNorm(o_t^h) ) W_O

How the two parts are combined is the point the paper's text leaves open; the code settles it: the two outputs
are simply ADDED (no shared normaliser: the softmax weights sum to one over the chunk, the linear part has no
denominator) and the sum is RMS-normalised per head before the SiLU gate. The same normalised q and k feed both
parts, and the code applies no feature map (φ = identity); ``feature_map`` offers the maps of
:mod:`seqzoo.mixers.linear.linear_attention` for the linear part only. Note the two different decays in the code,
kept here: between chunks the state decays by ``exp(mean α)`` of the finished chunk, while a query inside a chunk
sees the state decayed by ``exp(Σ α)`` of the chunk so far; the keys of a chunk enter the state undecayed.

Choices made here where the code differs or is silent:

* ``within_chunk="causal"`` (default): the softmax is causal inside the chunk, so the layer is causal token by
  token and obeys the mixer contract (any split of the input equals one call). ARFlow attends to the whole image
  (``within_chunk="full"``); that is block-causal only, so in that mode every call must hold whole chunks.
* RMSNorm of q, k, v per head (the code builds its RMSNorm with the head width but applies it to the full-width
  projections; its RMSNorm module is not in the snapshot read, so per-head vs full-width is not settled there);
  no class conditioning in the gate (the code adds the class/time embedding to x before ``W_α``; a mixer sees
  only x).

State, so that feeding any split equals one call (float32, float64 for float64 inputs):

    {"S": [B, H, d, d]        (linear-attention state of the completed chunks),
     "k": [B, P, H, d], "v": [B, P, H, d]   (keys/values of the current, unfinished chunk: P = tokens seen mod C),
     "g_sum": [B, H]          (Σ α over the unfinished chunk)}

Its size is bounded by the chunk (``constant_state = True``). Cost: O(T·C·d) for the softmax part, O(T·d²) for the
linear part. ``impl`` picks the softmax arithmetic of :func:`seqzoo.ops.softmax_attention` ("math": the explicit
reference; "sdpa": PyTorch's fused kernel).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...core.errors import SeqzooError
from ...core.mixer import Mixer
from ...core.registry import register_mixer
from ...core.state import State, state_dtype
from ...ops import softmax_attention
from ..attention.softmax import check_heads, check_impl
from .linear_attention import FEATURE_MAPS

WITHIN_CHUNK = ("causal", "full")


@register_mixer("arflow_attention", paper="ARFlow: Autoregressive Flow with Hybrid Linear Attention",
                arxiv="2501.16085")
class ARFlowAttention(Mixer):
    """ARFlow's hybrid attention (Hui et al. 2025, arXiv 2501.16085): softmax attention within each chunk of
    ``chunk_size`` tokens plus gated linear attention over the completed chunks, added and RMS-normalised per
    head, then SiLU-gated.

    Options: ``n_heads``; ``chunk_size`` (C); ``within_chunk`` ("causal": token-causal, the contract; "full":
    ARFlow's whole-chunk attention, calls must hold whole chunks); ``gated`` (data-dependent decay α; False: none);
    ``gate_normalizer`` (α = logsigmoid(·) / gate_normalizer, 16 in ARFlow); ``feature_map`` of the linear part
    (default "identity", as in ARFlow); ``impl`` of the softmax part; ``norm_eps`` of the RMSNorms.
    """

    IMPLS: tuple[str, ...] = ("math", "sdpa")
    constant_state = True  # the unfinished chunk's keys/values are bounded by chunk_size

    def __init__(self, d_model: int, n_heads: int = 4, chunk_size: int = 64, within_chunk: str = "causal",
                 gated: bool = True, gate_normalizer: float = 16.0, feature_map: str = "identity",
                 impl: str = "auto", norm_eps: float = 1e-6):
        super().__init__(d_model)
        self.head_dim = check_heads(d_model, n_heads)
        self.n_heads = n_heads
        if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size <= 0:
            raise SeqzooError(f"chunk_size must be a positive int, got {chunk_size!r}")
        if within_chunk not in WITHIN_CHUNK:
            raise SeqzooError(f"unknown within_chunk {within_chunk!r}; valid: {', '.join(WITHIN_CHUNK)}")
        if not isinstance(gated, bool):
            raise SeqzooError(f"gated must be true or false, got {gated!r}")
        for name, value in (("gate_normalizer", gate_normalizer), ("norm_eps", norm_eps)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise SeqzooError(f"{name} must be a positive number, got {value!r}")
        if feature_map not in FEATURE_MAPS:
            raise SeqzooError(f"unknown feature_map {feature_map!r}; valid: {', '.join(FEATURE_MAPS)}")
        self.chunk_size, self.within_chunk, self.gated = chunk_size, within_chunk, gated
        self.gate_normalizer, self.norm_eps = float(gate_normalizer), float(norm_eps)
        self.feature_map = feature_map
        self.phi = FEATURE_MAPS[feature_map][0]
        self.impl = check_impl(impl, self.IMPLS, "arflow_attention")
        self.qkv_proj = nn.Linear(d_model, 3 * d_model, bias=False)
        self.g_proj = nn.Linear(d_model, d_model, bias=False)
        self.a_proj = nn.Linear(d_model, n_heads, bias=False) if gated else None
        self.o_proj = nn.Linear(d_model, d_model, bias=False)

    # -- contract -----------------------------------------------------------------------------------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None) -> State:
        dtype = state_dtype(dtype if dtype is not None else torch.get_default_dtype())
        H, d = self.n_heads, self.head_dim
        empty = torch.zeros(batch_size, 0, H, d, device=device, dtype=dtype)
        return {"S": torch.zeros(batch_size, H, d, d, device=device, dtype=dtype), "k": empty, "v": empty.clone(),
                "g_sum": torch.zeros(batch_size, H, device=device, dtype=dtype)}

    def state_size(self, seq_len: int) -> int:
        H, d = self.n_heads, self.head_dim
        return H * d * d + 2 * (seq_len % self.chunk_size) * H * d + H

    def _mix(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        missing = [key for key in ("S", "k", "v", "g_sum") if key not in state]
        if missing:
            raise SeqzooError(f"arflow_attention state lacks {missing[0]!r}; expected keys: S, k, v, g_sum "
                              f"(use init_state or the state returned by a previous call)")
        batch, length, _ = x.shape
        q, k, v, alpha = self.features(x)
        o, new_state = self.hybrid(q, k, v, alpha, state)
        return self.o_proj(self.output(o, x).reshape(batch, length, self.d_model)), new_state

    # -- pieces (used by the property tests) ----------------------------------------------------------------------
    def features(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """RMS-normalised ``q, k, v [B, T, H, d]`` and log-decays ``α [B, T, H]`` (float32, float64 for float64)."""
        batch, length, _ = x.shape
        work = state_dtype(x.dtype)
        qkv = self.qkv_proj(x).view(batch, length, 3, self.n_heads, self.head_dim).to(work)
        q, k, v = F.rms_norm(qkv, (self.head_dim,), eps=self.norm_eps).unbind(2)
        if self.a_proj is None:
            alpha = q.new_zeros(batch, length, self.n_heads)
        else:
            alpha = F.logsigmoid(self.a_proj(x).to(work)) / self.gate_normalizer
        return q, k, v, alpha

    def hybrid(self, q: Tensor, k: Tensor, v: Tensor, alpha: Tensor, state: State) -> tuple[Tensor, State]:
        """The hybrid attention of every head from features (see the module docstring): ``o [B, T, H, d]`` and the
        new state. The unfinished chunk of ``state`` is put in front of the new tokens, so chunk boundaries stay
        where they were; those earlier tokens contribute keys and values only."""
        B, T, H, d = q.shape
        C, dtype = self.chunk_size, q.dtype
        s0 = state["S"].to(dtype)
        old_k, old_v = state["k"].to(dtype), state["v"].to(dtype)
        P = old_k.shape[1]
        if self.within_chunk == "full" and (P or T % C):
            raise SeqzooError(f"arflow_attention with within_chunk='full' attends to whole chunks, so every call "
                              f"must hold a multiple of chunk_size={C} tokens, got {T} (after {P} pending); "
                              f"use within_chunk='causal' to stream token by token")
        if T == 0:
            return q.new_zeros(B, 0, H, d), {key: t.clone() for key, t in state.items()}
        # the pending tokens' decays only matter through their sum: put it on the first of them
        old_alpha = alpha.new_zeros(B, P, H)
        if P:
            old_alpha[:, 0] = state["g_sum"].to(dtype)
        n_total = P + T
        n_chunks = -(-n_total // C)
        pad = n_chunks * C - n_total

        def chunked(new: Tensor, old: Tensor) -> Tensor:       # [B, P+T+pad, ...] -> [B, n, C, ...]
            full = torch.cat([old, new], dim=1)
            if pad:
                full = torch.cat([full, full.new_zeros(B, pad, *full.shape[2:])], dim=1)
            return full.unflatten(1, (n_chunks, C))

        qc = chunked(q, q.new_zeros(B, P, H, d))
        kc, vc, ac = chunked(k, old_k), chunked(v, old_v), chunked(alpha, old_alpha)
        scale = d ** -0.5

        # softmax attention inside each chunk (chunks folded into the batch)
        flat = [t.flatten(0, 1) for t in (qc, kc, vc)]                               # [B·n, C, H, d]
        if self.within_chunk == "causal":
            # the blocks are small (chunk_size²): on CPU the explicit product beats SDPA's dispatch (docs/benchmarks.md)
            impl = self.impl if self.impl != "auto" else ("sdpa" if q.is_cuda else "math")
            intra, _ = softmax_attention(*flat, scale=scale, impl=impl)
        else:
            qh, kh, vh = (t.transpose(1, 2) for t in flat)
            intra = (torch.softmax((qh @ kh.transpose(-1, -2)) * scale, dim=-1) @ vh).transpose(1, 2)
        intra = intra.unflatten(0, (B, n_chunks))                                     # [B, n, C, H, d]

        # linear attention over the completed chunks
        fq, fk = self.phi(qc), self.phi(kc)
        kv = torch.einsum("bnchk,bnchv->bnhkv", fk * scale, vc)                      # [B, n, H, d, d]
        chunk_decay = torch.exp(ac.sum(2) / C)                                       # γ_c  [B, n, H]
        states, s = [], s0
        for c in range(n_chunks):
            states.append(s)
            s = chunk_decay[:, c, :, None, None] * s + kv[:, c]
        entering = torch.stack(states, dim=1)                                        # S_c  [B, n, H, d, d]
        query_decay = torch.exp(ac.cumsum(2))[..., None]                             # exp(G_t)
        inter = torch.einsum("bnchk,bnhkv->bnchv", fq * query_decay, entering)

        o = (intra + inter).flatten(1, 2)[:, P:P + T]
        complete = n_total // C                                                      # chunks folded into S
        s_new = states[complete] if complete < n_chunks else s
        rest = slice(complete * C, n_total)
        new_state = {"S": s_new,
                     "k": kc.flatten(1, 2)[:, rest].contiguous(), "v": vc.flatten(1, 2)[:, rest].contiguous(),
                     "g_sum": ac.flatten(1, 2)[:, rest].sum(1)}
        return o, new_state

    def output(self, o: Tensor, x: Tensor) -> Tensor:
        """``SiLU(x W_G) ⊙ RMSNorm(o)`` per head, ``[B, T, H, d]`` in the dtype of ``x``."""
        work = o.dtype
        gate = F.silu(self.g_proj(x).view(o.shape).to(work))
        return (gate * F.rms_norm(o, (self.head_dim,), eps=self.norm_eps)).to(x.dtype)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, n_heads={self.n_heads}, chunk_size={self.chunk_size}, "
                f"within_chunk={self.within_chunk!r}, gated={self.gated}, feature_map={self.feature_map!r}, "
                f"impl={self.impl!r}")


__all__ = ["ARFlowAttention"]
