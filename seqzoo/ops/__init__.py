"""Functional sequence-mixing ops (DESIGN.md, Contract 1).

Layout is sequence-first ``[B, T, H, D]``; every op returns ``(output, final_state)`` (the KV cache for
:func:`softmax_attention`), takes ``initial_state`` / ``cache``, ``scale`` and ``impl``, and keeps its recurrent
state in float32 (float64 for float64 inputs). ``impl="recurrent"`` (``"math"`` for attention) is the reference
every other form is tested against; ``impl="auto"`` picks the fastest pure-PyTorch form.

* :func:`linear_attention` — S_t = S_{t-1} + k_tᵀ v_t (arXiv 2006.16236)
* :func:`decay_linear_attention` — S_t = exp(g_t) S_{t-1} + k_tᵀ v_t (RetNet arXiv 2307.08621, GLA 2312.06635)
* :func:`delta_rule` — S_t = S_{t-1} + β_t k_tᵀ (v_t − k_t S_{t-1}) (DeltaNet arXiv 2102.11174, 2406.06484)
* :func:`selective_scan` — x_t = exp(Δ_t A) ⊙ x_{t-1} + Δ_t u_t B_t, y_t = x_t C_t + D u_t
  (Mamba arXiv 2312.00752)
* :func:`prefix_attention` — o_t = Σ_{s≤t} exp(q·k_s) v_s / Σ_{s≤t} exp(q·k_s) for a constant query q, by a
  parallel prefix scan (Aaren, arXiv 2405.13956)
* :func:`softmax_attention` — causal / sliding-window / grouped-query attention with a KV cache (arXiv 1706.03762)
"""

from .attention import softmax_attention
from .decay_linear_attention import decay_linear_attention
from .delta_rule import delta_rule
from .linear_attention import linear_attention
from .prefix_attention import prefix_attention
from .selective_scan import selective_scan

__all__ = ["linear_attention", "decay_linear_attention", "delta_rule", "selective_scan", "softmax_attention",
           "prefix_attention"]
