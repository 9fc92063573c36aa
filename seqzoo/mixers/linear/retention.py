"""Multi-scale retention (RetNet), as used by the Vision Retention Network.

Papers:

* "Retentive Network: A Successor to Transformer for Large Language Models", Sun et al. 2023, arXiv 2307.08621.
* "ViR: Vision Retention Networks" (title of v1; v2: "ViR: Towards Efficient Vision Retention Backbones"),
  Hatamizadeh, Ranzinger et al. 2023, arXiv 2310.19731 — the same retention over a raster sequence of patches with the class token placed LAST, so
  that under causal retention it aggregates every patch.

Per head ``h`` (``H`` heads of width ``d = d_model / H``), with positions ``n`` counted from the first token the
state has seen:

    q_n = R_n (x_n W_Q^h),  k_n = R_n (x_n W_K^h),  v_n = x_n W_V^h        (R_n: rotation by angle n θ, RoPE-style)
    recurrent:  S_n = γ_h S_{n−1} + k_nᵀ v_n,      o_n = d^{-1/2} q_n S_n
    parallel:   O = (d^{-1/2} Q Kᵀ ⊙ D) V,         D_nm = γ_h^{n−m} if n ≥ m else 0
    chunkwise:  inside a chunk the parallel form, plus the decayed state carried across chunks:
                O_[i] = (Q_[i] K_[i]ᵀ ⊙ D) V_[i] + (Q_[i] S_{i−1}) ⊙ ξ,   S_i = γ^B S_{i−1} + K_[i]ᵀ (V_[i] ⊙ ζ)
    γ_h = 1 − 2^{−5−h},  h = 0 … H − 1
    Y = W_O( swish(X W_G) ⊙ GroupNorm_H(o) )                               (GroupNorm: one group per head)

All three forms are :func:`seqzoo.ops.decay_linear_attention` with the constant log-decay ``g = log γ_h``
(``impl="recurrent"`` is the reference, ``"chunk"`` uses ``chunk_size``, ``"parallel"`` builds ``D``).

What was checked against the reference code (microsoft/torchscale, ``torchscale/architecture/retnet.py`` and
``torchscale/component/multiscale_retention.py``):

* decays: ``RetNetRelPos`` sets ``decay = log(1 − 2 ** (−5 − arange(num_heads)))``, i.e. γ_h = 1 − 2^{−5−h};
* rotation: ``theta_shift`` rotates q and k with angles ``n / 10000 ** linspace(0, 1, d/2)`` (no xPos length
  scaling in the current code; the paper's first version used xPos) — here ``Rotary(spacing="retnet")``;
* scale ``d^{-1/2}`` on the scores (the code scales k, here q: the same product); swish gate; a per-head norm of
  the output (the paper's GroupNorm; the code later switched to a parameter-free RMSNorm per head). Here the
  paper's GroupNorm with affine parameters is used.
* the reference code also divides the retention scores by running absolute sums for numerical range; GroupNorm
  is (up to its ε) invariant to that per-row scale, so it is omitted here and the three forms agree exactly.

Values have width ``d`` per head (RetNet's language models widen values 2×; ViR does not need it).
The state is ``{"S": [B, H, d, d] (float32, float64 for float64 inputs), "pos": int64 [B]}``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...core.errors import SeqzooError
from ...core.mixer import Mixer
from ...core.registry import register_mixer
from ...core.state import State, state_dtype
from ...ops import decay_linear_attention
from ..attention.rope import Rotary
from ..attention.softmax import check_heads, check_impl

GROUP_NORM_EPS = 1e-5
LOG_ZERO = -1e4


def retnet_gammas(n_heads: int) -> tuple[float, ...]:
    """RetNet's per-head decays ``γ_h = 1 − 2^{−5−h}`` for ``h = 0 … n_heads − 1``."""
    return tuple(1.0 - 2.0 ** (-5 - h) for h in range(n_heads))


@register_mixer("retention", paper="Retentive Network: A Successor to Transformer for Large Language Models",
                arxiv="2307.08621")
class MultiScaleRetention(Mixer):
    """Multi-scale retention of RetNet (Sun et al. 2023, arXiv 2307.08621) as used by ViR (arXiv 2310.19731):
    ``S_n = γ_h S_{n−1} + k_nᵀ v_n``, ``o_n = q_n S_n`` with γ_h = 1 − 2^{−5−h}, rotated q/k, GroupNorm per head and a
    swish gate; parallel, chunkwise and recurrent forms agree.

    Options: ``n_heads``; ``gammas`` (per-head decays in [0, 1]; None = RetNet's); ``rope_base`` of the rotation;
    ``impl`` in ``IMPLS`` or ``"auto"``; ``chunk_size`` of the chunkwise form.
    """

    IMPLS: tuple[str, ...] = ("recurrent", "chunk", "parallel")
    constant_state = True

    def __init__(self, d_model: int, n_heads: int = 4, gammas: list[float] | None = None,
                 rope_base: float = 10000.0, impl: str = "auto", chunk_size: int = 64):
        super().__init__(d_model)
        self.head_dim = check_heads(d_model, n_heads)
        self.n_heads = n_heads
        if self.head_dim % 2:
            raise SeqzooError(f"retention rotates q and k in planes, so d_model/n_heads must be even, "
                              f"got {self.head_dim}")
        if gammas is None:
            gammas = retnet_gammas(n_heads)
        gammas = tuple(float(g) for g in gammas)
        if len(gammas) != n_heads or not all(0.0 <= g <= 1.0 for g in gammas):
            raise SeqzooError(f"gammas must be {n_heads} decays in [0, 1] (one per head), got {list(gammas)}")
        if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size <= 0:
            raise SeqzooError(f"chunk_size must be a positive int, got {chunk_size!r}")
        self.gammas = gammas
        self.impl = check_impl(impl, self.IMPLS, "retention")
        self.chunk_size = chunk_size
        self.rotary = Rotary(self.head_dim, rope_base, spacing="retnet")
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.g_proj = nn.Linear(d_model, d_model, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)
        self.norm_weight = nn.Parameter(torch.ones(d_model))
        self.norm_bias = nn.Parameter(torch.zeros(d_model))

    @property
    def decays(self) -> Tensor:
        """The per-head decays γ_h (float64 ``[H]``)."""
        return torch.tensor(self.gammas, dtype=torch.float64)

    def log_decays(self, dtype: torch.dtype, device=None) -> Tensor:
        """``log γ_h`` as ``[H]``, computed in float64 and then cast. γ = 0 gives ``LOG_ZERO`` = −1e4 instead of
        −inf (``exp`` of it is exactly 0 in every dtype, and sums of it stay finite, where −inf − (−inf) would
        put NaNs into the chunked form)."""
        return torch.log(self.decays).clamp(min=LOG_ZERO).to(device=device, dtype=dtype)

    # -- contract -----------------------------------------------------------------------------------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None) -> State:
        dtype = state_dtype(dtype if dtype is not None else torch.get_default_dtype())
        return {"S": torch.zeros(batch_size, self.n_heads, self.head_dim, self.head_dim, device=device,
                                 dtype=dtype),
                "pos": torch.zeros(batch_size, dtype=torch.int64, device=device)}

    def state_size(self, seq_len: int) -> int:
        return self.n_heads * self.head_dim * self.head_dim + 1

    def _mix(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        missing = [key for key in ("S", "pos") if key not in state]
        if missing:
            raise SeqzooError(f"retention state lacks {missing[0]!r}; expected keys: S, pos "
                              f"(use init_state or the state returned by a previous call)")
        batch, length, _ = x.shape
        q, k, v = self.project(x, state["pos"])
        o, new_s = self.retain(q, k, v, state["S"])
        y = F.silu(self.g_proj(x)) * self.group_norm(o).to(x.dtype)
        return self.o_proj(y), {"S": new_s, "pos": state["pos"] + length}

    # -- pieces (used by the property tests) ----------------------------------------------------------------------
    def project(self, x: Tensor, pos: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Rotated ``q, k`` and ``v`` as ``[B, T, H, d]`` for tokens at positions ``pos[b] + t``."""
        batch, length, _ = x.shape
        shape = (batch, length, self.n_heads, self.head_dim)
        q = self.rotary(self.q_proj(x).view(shape), pos)
        k = self.rotary(self.k_proj(x).view(shape), pos)
        return q, k, self.v_proj(x).view(shape)

    def retain(self, q: Tensor, k: Tensor, v: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """Retention of every head (before norm and gate): ``o [B, T, H, d]`` and the new state."""
        batch, length, heads, _ = q.shape
        g = self.log_decays(state_dtype(q.dtype), q.device).expand(batch, length, heads)
        return decay_linear_attention(q, k, v, g, initial_state=s, impl=self.impl, chunk_size=self.chunk_size)

    def group_norm(self, o: Tensor) -> Tensor:
        """GroupNorm with one group per head over ``o [B, T, H, d]`` → ``[B, T, H·d]`` (float32 for bf16/fp16)."""
        batch, length = o.shape[:2]
        work = state_dtype(o.dtype)
        flat = o.reshape(batch * length, self.d_model).to(work)
        out = F.group_norm(flat, self.n_heads, self.norm_weight.to(work), self.norm_bias.to(work),
                           GROUP_NORM_EPS)
        return out.view(batch, length, self.d_model).to(o.dtype)

    def extra_repr(self) -> str:
        gammas = ", ".join(f"{g:.6g}" for g in self.gammas)
        return (f"d_model={self.d_model}, n_heads={self.n_heads}, gammas=({gammas}), impl={self.impl!r}, "
                f"chunk_size={self.chunk_size}")


__all__ = ["MultiScaleRetention", "retnet_gammas"]
