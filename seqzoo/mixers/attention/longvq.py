"""LongVQ: gated attention over vector-quantised keys, whose far past is a fixed-size codebook memory, behind a
damped-EMA state-space pre-mixer.

Paper: "LongVQ: Long Sequence Modeling with Vector Quantization on Structured Memory", Liu et al. 2024,
arXiv 2404.11163. What could be checked (abstract and summaries): keys are vector-quantised so that the global
abstraction is a length-fixed codebook and the attention matrix is computed in linear time, combined with an SSM
into one token mixer with gated attention, to keep dynamic global and local patterns. No official code was found
and the full text could not be read here, so the exact block composition below is a reconstruction: a MEGA-style
layer (the gated-attention-plus-EMA design LongVQ builds on) whose keys are quantised, with the linear-time algebra
of Transformer-VQ ("Transformer-VQ: Linear-Time Transformers via Vector Quantization", Lingle 2023,
arXiv 2309.16354: exact attention over a recent window, per-codeword sums and counts for the rest).

Layer, for input ``x_t ∈ R^D`` (H heads of width d = D / H, codebook of S codewords per head):

    h_t = (1 − α⊙δ) ⊙ h_{t−1} + (α⊙β) x_t,   e_t = Σ_n η_n h_t[:, n] + ω ⊙ x_t     damped multi-dim EMA (MEGA,
    x'_t = SiLU(e_t)                                                           arXiv 2209.10655), N = ``ema_dim``
    z_t = SiLU(W_z x'_t),  q_t = κ_q ⊙ z_t + μ_q,  k_t = κ_k ⊙ z_t + μ_k,  v_t = SiLU(W_v x_t)
    k̂_t = C_{c_t},  c_t = argmin_s ‖k_t − C_s‖²                                 (per head; straight-through)
    o_t = Σ_{s ≤ t} exp(a_ts) v_s / Σ_{s ≤ t} exp(a_ts),
          a_ts = q_t · k̂_s / √d + b_{t−s} [t − s < w]                           (b: relative bias in the window)
    r_t = SiLU(W_r x'_t),  φ_t = σ(W_φ x'_t),  ĥ_t = SiLU(W_h x'_t + U_h (r_t ⊙ o_t))
    y_t = φ_t ⊙ ĥ_t + (1 − φ_t) ⊙ x_t                                           (MEGA's reset / update gates)

Linear-time attention. Because ``k̂_s`` is one of S codewords, the terms of all positions older than the window
(``s ≤ t − w``) collapse per codeword:

    Σ_{s ≤ t−w} exp(q_t·k̂_s/√d) [v_s, 1] = Σ_c exp(q_t·C_c/√d) M_{t−w}[c],
    M_τ[c] = Σ_{s ≤ τ, c_s = c} [v_s, 1]                       (value sums and counts: the structured memory)

which is :func:`seqzoo.ops.linear_attention` with query features ``exp(q_t C^T/√d − m_t)``, one-hot keys
``onehot(c_s)`` and values ``[v_s, 1]``, shifted by ``w`` steps; its state is the ``[S, d + 1]`` table ``M``. The
last ``w`` positions are attended exactly (quantised keys, relative bias), blockwise, in O(T (w + chunk)). Both
parts share one normaliser (``m_t``, a stop-gradient maximum, cancels), so the output equals the quadratic causal
softmax attention over the quantised keys (tested in float64 to 1e-10). Memory and window are constant in T.

Straight-through estimator: ``k̂ = C_c + (k − sg(k))`` has the value of the codeword exactly, and passes the
gradient of ``k̂`` to the key (and to the codeword). As in Transformer-VQ, a key older than the window reaches the
attention only through its code, so it gets no gradient there (its codeword does). The VQ-VAE losses
(arXiv 1711.00937) of the last call are left on the module after every forward:

    mixer.vq_losses = {"codebook": mean ‖sg(k) − C_c‖², "commitment": mean ‖k − sg(C_c)‖²}
    mixer.aux_loss  = codebook + commitment_weight · commitment

A trainer adds them to the task loss, e.g. ``loss + sum(m.aux_loss for m in model.modules()
if getattr(m, "aux_loss", None) is not None)`` (CausalLM.loss does not do this by itself); without them the
codebook still learns through the attention scores, but keys are not pulled towards their codewords.

State (constant in T; float tensors float32, float64 for float64 inputs):

    {"ema": [B, D, N], "memory": [B, H, S, d + 1]   (value sums and counts of the positions older than w),
     "k_win": [B, w, H, d], "v_win": [B, w, H, d], "code_win": int64 [B, w, H]   (the last w positions),
     "pos": int64 [B]}

The codebook, the relative bias and the EMA parameters are declared free of weight decay
(:func:`seqzoo.core.set_optim`). ``impl`` ("recurrent" reference, or "chunk") selects the form of both scans (the EMA's selective scan and the
memory's linear attention); ``chunk_size`` is their chunk and the block length of the windowed part.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...core.errors import SeqzooError
from ...core.mixer import Mixer, set_optim
from ...core.registry import register_mixer
from ...core.state import State, state_dtype
from ...ops import linear_attention, selective_scan
from .softmax import check_heads, check_impl


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SeqzooError(f"longvq: {name} must be a positive int, got {value!r}")
    return value


class DampedEMA(nn.Module):
    """MEGA's multi-dimensional damped EMA ("Mega: Moving Average Equipped Gated Attention", Ma et al. 2022,
    arXiv 2209.10655, eq. 2–3), per channel c and EMA dimension n:

        h_t[c, n] = (1 − α[c, n] δ[c, n]) h_{t−1}[c, n] + α[c, n] β[c, n] x_t[c]
        y_t[c]    = Σ_n η[c, n] h_t[c, n] + ω[c] x_t[c]           α = σ(α_raw), δ = σ(δ_raw) ∈ (0, 1)

    computed by :func:`seqzoo.ops.selective_scan` with one scan channel per (c, n) pair (Δ = 1,
    A = log(1 − αδ), B = C = 1). State ``[B, channels, ema_dim]``.
    """

    def __init__(self, channels: int, ema_dim: int):
        super().__init__()
        self.channels, self.ema_dim = channels, ema_dim
        self.alpha = nn.Parameter(torch.randn(channels, ema_dim) * 0.2)
        self.delta = nn.Parameter(torch.randn(channels, ema_dim) * 0.2)
        signs = torch.tensor([(-1.0) ** n for n in range(ema_dim)])
        self.beta = nn.Parameter(signs + 0.02 * torch.randn(channels, ema_dim))
        self.eta = nn.Parameter(torch.randn(channels, ema_dim) * ema_dim ** -0.5)
        self.omega = nn.Parameter(torch.randn(channels))
        for p in (self.alpha, self.delta, self.beta, self.eta, self.omega):
            set_optim(p, weight_decay=0.0)

    def forward(self, x: Tensor, state: Tensor, *, impl: str, chunk_size: int) -> tuple[Tensor, Tensor]:
        """``x: [B, T, channels]`` → ``(y [B, T, channels] in float32/float64, new state)``."""
        batch, length, channels = x.shape
        work = state_dtype(x.dtype)
        alpha, delta = torch.sigmoid(self.alpha.to(work)), torch.sigmoid(self.delta.to(work))
        log_decay = torch.log1p(-alpha * delta).reshape(-1, 1)                     # [C·N, 1], < 0
        xw = x.to(work)
        u = (xw[..., None] * (alpha * self.beta.to(work))).flatten(2)               # [B, T, C·N]
        ones = xw.new_ones(batch, length, 1)
        h, new_state = selective_scan(u, torch.ones_like(u), log_decay, ones, ones,
                                      initial_state=state.reshape(batch, -1, 1), impl=impl, chunk_size=chunk_size)
        y = (h.view(batch, length, channels, self.ema_dim) * self.eta.to(work)).sum(-1) + self.omega.to(work) * xw
        return y, new_state.view(batch, channels, self.ema_dim)


@register_mixer("longvq", paper="LongVQ: Long Sequence Modeling with Vector Quantization on Structured Memory",
                arxiv="2404.11163")
class LongVQ(Mixer):
    """LongVQ (Liu et al. 2024, arXiv 2404.11163): damped-EMA pre-mixer, then gated attention over
    vector-quantised keys; positions older than ``window`` live in a fixed ``[codebook_size, d + 1]`` memory per
    head (value sums and counts per codeword), so the state is constant in T and the cost linear.

    Options: ``n_heads``; ``codebook_size`` (S codewords per head); ``window`` (w most recent positions attended
    exactly, with a learned relative bias); ``ema_dim`` (N, the EMA dimensions per channel);
    ``commitment_weight`` of the commitment loss in ``aux_loss``; ``impl`` in ``IMPLS`` or "auto";
    ``chunk_size`` of the scans and of the windowed blocks.
    """

    IMPLS: tuple[str, ...] = ("recurrent", "chunk")
    constant_state = True

    def __init__(self, d_model: int, n_heads: int = 2, codebook_size: int = 64, window: int = 16,
                 ema_dim: int = 4, commitment_weight: float = 0.25, impl: str = "auto", chunk_size: int = 64):
        super().__init__(d_model)
        self.head_dim = check_heads(d_model, n_heads)
        self.n_heads = n_heads
        self.codebook_size = _positive_int("codebook_size", codebook_size)
        self.window = _positive_int("window", window)
        self.ema_dim = _positive_int("ema_dim", ema_dim)
        self.chunk_size = _positive_int("chunk_size", chunk_size)
        if isinstance(commitment_weight, bool) or not isinstance(commitment_weight, (int, float)) \
                or commitment_weight < 0:
            raise SeqzooError(f"longvq: commitment_weight must be a number >= 0, got {commitment_weight!r}")
        self.commitment_weight = float(commitment_weight)
        impl = check_impl(impl, self.IMPLS, "longvq")
        self.impl = "chunk" if impl == "auto" else impl
        self.ema = DampedEMA(d_model, ema_dim)
        self.mx_proj = nn.Linear(d_model, 4 * d_model)              # [W_z; W_r; W_h; W_φ] applied to x'
        self.v_proj = nn.Linear(d_model, d_model)
        self.h_proj = nn.Linear(d_model, d_model, bias=False)       # U_h applied to r ⊙ o
        self.qk_scale = nn.Parameter(1.0 + 0.1 * torch.randn(2, d_model))
        self.qk_offset = nn.Parameter(torch.zeros(2, d_model))
        self.codebook = nn.Parameter(0.5 * torch.randn(n_heads, self.codebook_size, self.head_dim))
        self.rel_bias = nn.Parameter(torch.zeros(n_heads, self.window))
        for p in (self.codebook, self.rel_bias):   # decay would pull codewords to 0, away from the keys
            set_optim(p, weight_decay=0.0)
        self.aux_loss: Tensor | None = None
        self.vq_losses: dict[str, Tensor] = {}

    # -- contract -----------------------------------------------------------------------------------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None) -> State:
        work = state_dtype(dtype if dtype is not None else torch.get_default_dtype())
        H, d, w = self.n_heads, self.head_dim, self.window
        return {"ema": torch.zeros(batch_size, self.d_model, self.ema_dim, device=device, dtype=work),
                "memory": torch.zeros(batch_size, H, self.codebook_size, d + 1, device=device, dtype=work),
                "k_win": torch.zeros(batch_size, w, H, d, device=device, dtype=work),
                "v_win": torch.zeros(batch_size, w, H, d, device=device, dtype=work),
                "code_win": torch.zeros(batch_size, w, H, device=device, dtype=torch.int64),
                "pos": torch.zeros(batch_size, device=device, dtype=torch.int64)}

    def state_size(self, seq_len: int) -> int:
        H, d, w = self.n_heads, self.head_dim, self.window
        return self.d_model * self.ema_dim + H * self.codebook_size * (d + 1) + w * H * (2 * d + 1) + 1

    def _mix(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        expected = ("ema", "memory", "k_win", "v_win", "code_win", "pos")
        missing = [key for key in expected if key not in state]
        if missing:
            raise SeqzooError(f"longvq state lacks {missing[0]!r}; expected keys: {', '.join(expected)} "
                              f"(use init_state or the state returned by a previous call)")
        q, k, v, (r, h, update), ema_state = self.features(x, state["ema"])
        k_hat, codes, losses = self.quantize(k)
        self.vq_losses = losses
        self.aux_loss = losses["codebook"] + self.commitment_weight * losses["commitment"]
        o, attn_state = self.attend(q, k_hat, codes, v, state)
        o = o.reshape(x.shape).to(x.dtype)
        candidate = F.silu(h + self.h_proj(r * o))
        y = update * candidate + (1.0 - update) * x
        return y, {"ema": ema_state, **attn_state}

    # -- pieces (also used by the tests) ------------------------------------------------------------------------
    def features(self, x: Tensor, ema_state: Tensor):
        """EMA and projections: ``q, k, v`` ``[B, T, H, d]``, the gate inputs ``(r, W_h x', φ)`` ``[B, T, D]`` and
        the new EMA state."""
        batch, length, _ = x.shape
        e, ema_state = self.ema(x, ema_state, impl=self.impl, chunk_size=self.chunk_size)
        x_prime = F.silu(e).to(x.dtype)
        z, r, h, update = self.mx_proj(x_prime).chunk(4, dim=-1)
        z = F.silu(z)
        shape = (batch, length, self.n_heads, self.head_dim)
        q = (z * self.qk_scale[0] + self.qk_offset[0]).view(shape)
        k = (z * self.qk_scale[1] + self.qk_offset[1]).view(shape)
        v = F.silu(self.v_proj(x)).view(shape)
        return q, k, v, (F.silu(r), h, torch.sigmoid(update)), ema_state

    def quantize(self, k: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Nearest codeword of every key ``k`` ``[B, T, H, d]`` (per head): ``(k̂, codes [B, T, H], losses)``.

        ``k̂ = C_c + (k − sg(k))``: exactly the codeword in the forward pass, identity gradient to ``k``."""
        work = state_dtype(k.dtype)
        kw, book = k.to(work), self.codebook.to(work)
        distance = ((kw * kw).sum(-1, keepdim=True) - 2.0 * torch.einsum("bthd,hsd->bths", kw, book)
                    + (book * book).sum(-1))
        codes = distance.argmin(-1)                                                   # [B, T, H]
        flat = codes + torch.arange(self.n_heads, device=k.device) * self.codebook_size
        chosen = book.reshape(-1, self.head_dim)[flat]                               # C_c: [B, T, H, d]
        losses = {"codebook": F.mse_loss(chosen, kw.detach()), "commitment": F.mse_loss(kw, chosen.detach())}
        return chosen + (kw - kw.detach()), codes, losses

    def attend(self, q: Tensor, k_hat: Tensor, codes: Tensor, v: Tensor, state: State) -> tuple[Tensor, State]:
        """Causal softmax attention over the quantised keys, continuing from ``state`` (window + memory):
        ``o`` ``[B, T, H, d]`` (float32/float64) and the new window/memory state."""
        batch, length, H, d = q.shape
        w, S = self.window, self.codebook_size
        work = state_dtype(q.dtype)
        scale = d ** -0.5
        # the last w earlier positions followed by the new ones (index j ↔ position pos − w + j)
        k_all = torch.cat([state["k_win"].to(work), k_hat.to(work)], dim=1).transpose(1, 2)   # [B, H, w+T, d]
        v_all = torch.cat([state["v_win"].to(work), v.to(work)], dim=1).transpose(1, 2)
        code_all = torch.cat([state["code_win"], codes], dim=1)                              # [B, w+T, H]
        offsets = torch.arange(w + length, device=q.device) - w
        valid = (state["pos"][:, None] + offsets[None, :]) >= 0                              # [B, w+T]
        qh = q.to(work).transpose(1, 2)                                                      # [B, H, T, d]

        # window part, blockwise: query i (index w+i) sees indices i+1 … i+w, i.e. distances w−1 … 0
        block = min(self.chunk_size, length)
        n_blocks = -(-length // block)
        span = block + w - 1
        extra = n_blocks * block - length
        q_blocks = F.pad(qh, (0, 0, 0, extra)).unflatten(2, (n_blocks, block))              # [B, H, nb, b, d]

        def windows(t: Tensor) -> Tensor:                         # [B, H, w+T, e] -> [B, H, nb, span, e]
            return F.pad(t[:, :, 1:], (0, 0, 0, extra)).unfold(2, span, block).transpose(-1, -2)

        k_win, v_win = windows(k_all), windows(v_all)
        valid_win = F.pad(valid[:, 1:], (0, extra), value=True).unfold(1, span, block)       # [B, nb, span]
        row = torch.arange(block, device=q.device)[:, None]
        distance = row + w - 1 - torch.arange(span, device=q.device)[None, :]               # [b, span]
        band = (distance >= 0) & (distance < w)
        visible = band & valid_win[:, None, :, None, :]                                      # [B, 1, nb, b, span]
        bias = self.rel_bias.to(work)[:, distance.clamp(0, w - 1)]                            # [H, b, span]
        local = (q_blocks @ k_win.transpose(-1, -2)) * scale + bias[:, None]
        local = local.masked_fill(~visible, float("-inf"))                                  # [B, H, nb, b, span]

        # memory part: query features exp(q·C/√d − m), one-hot keys, values [v, 1]
        far = torch.einsum("bhtd,hsd->bhts", qh, self.codebook.to(work)) * scale             # [B, H, T, S]
        m_local = local.amax(-1).flatten(2)[:, :, :length]
        m = torch.maximum(m_local, far.amax(-1)).detach()                                    # [B, H, T]
        m_blocks = F.pad(m, (0, extra)).unflatten(2, (n_blocks, block))
        weights = torch.exp(local - m_blocks[..., None])
        num = (weights @ v_win).flatten(2, 3)[:, :, :length]                                 # [B, H, T, d]
        den = weights.sum(-1).flatten(2)[:, :, :length]
        gone = valid[:, :length, None].to(work)                                              # [B, T, 1]
        keys = F.one_hot(code_all[:, :length], S).to(work) * gone[..., None]                 # [B, T, H, S]
        values = torch.cat([v_all[:, :, :length].transpose(1, 2), torch.ones_like(keys[..., :1])], dim=-1)
        values = values * gone[..., None]                                                    # [B, T, H, d+1]
        psi = torch.exp(far - m[..., None]).transpose(1, 2)                                  # [B, T, H, S]
        out, memory = linear_attention(psi, keys, values, scale=1.0, initial_state=state["memory"],
                                       impl=self.impl, chunk_size=self.chunk_size)
        num = num + out[..., :d].transpose(1, 2)
        den = den + out[..., d].transpose(1, 2)
        o = (num / den[..., None]).transpose(1, 2)                                           # [B, T, H, d]
        new_state = {"memory": memory, "k_win": k_all[:, :, length:].transpose(1, 2),
                     "v_win": v_all[:, :, length:].transpose(1, 2), "code_win": code_all[:, length:],
                     "pos": state["pos"] + length}
        return o, new_state

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, n_heads={self.n_heads}, codebook_size={self.codebook_size}, "
                f"window={self.window}, ema_dim={self.ema_dim}, impl={self.impl!r}, chunk_size={self.chunk_size}")


__all__ = ["LongVQ", "DampedEMA"]
