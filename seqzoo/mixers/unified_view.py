"""The unified token-mixing view of every registered mixer, as data, plus a numerical probe of mixing matrices.

Paper: "A Unified View of Long-Sequence Models towards Modeling Million-Scale Dependencies", Hongyu Hè and Marko
Kabic (ETH Zurich), 2023, arXiv 2302.06218. Its template writes every long-sequence model as a token-mixing
process: per head or channel, with values ``v = x W_v``,

    y = M(x) v,        y_t = Σ_s M_ts(x) v_s,        M(x) ∈ R^{T×T}

and the models differ in what ``M`` is (a softmax kernel, a low-rank kernel, a sparse pattern, a Toeplitz
convolution, a semiseparable state-space matrix, ...), how it is computed without materialising it, what state a
decoder keeps, and the time and memory this costs. A causal mixer is exactly one whose ``M`` is lower-triangular.

:data:`UNIFIED_VIEW` holds that description for every mixer name (also for mixers still being written), and
:func:`unified_view_table` renders the entries of the *registered* mixers as a markdown table (written to
``docs/unified_view.md`` by ``python -m seqzoo.mixers.unified_view docs/unified_view.md``). A new mixer adds its
entry here; ``tests/test_unified_view.py`` fails for any registered mixer without one.

:func:`mixing_matrix` computes ``M(x)`` of a built mixer numerically for the mixers that expose their mixing
step (``MATRIX_PROBES``): the mixing is linear in ``v`` once ``q, k`` (and gates) are fixed, so feeding the unit
vectors ``v_s = e_s`` (values of width T, an identity matrix) returns the rows of ``M`` — the Jacobian of the
mixing with respect to ``v``.

Notation in the table: T tokens, D model width, H heads of width d, N state size per channel, k chosen delays or
kept rows, c a paper constant; ``[s ≤ t]`` is 1 when s ≤ t, else 0.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.errors import SeqzooError
from ..core.registry import list_mixers, mixer_entry


@dataclass(frozen=True)
class MixingView:
    """One mixer in the template ``y = M(x) v``."""

    family: str     # the kind of M (softmax kernel, low rank, Toeplitz, semiseparable, sparse, ...)
    matrix: str     # M_ts in terms of the inputs
    computed: str   # how y is computed without (or with) materialising M
    state: str      # what decoding / streaming keeps
    time: str       # training (parallel) cost; per-token decoding cost where it applies
    memory: str     # activation memory of the parallel form


UNIFIED_VIEW: dict[str, MixingView] = {
    # -- softmax attention and its variants ---------------------------------------------------------------------
    "attention": MixingView(
        "softmax kernel, dense lower-triangular",
        "M_ts = softmax_s(q_t·k_s/√d) over s ≤ t (t − w < s ≤ t with a window w)",
        "masked softmax of Q Kᵀ (reference) or PyTorch's fused SDPA",
        "KV cache, 2·T·H_kv·d (2·w·H_kv·d with a window)",
        "O(T² d); O(T d) per decoded token",
        "O(T²) materialised, O(T) fused"),
    "probsparse": MixingView(
        "row-sparse softmax plus uniform rows (not causal)",
        "M_t· = softmax_s(q_t·k_s/√d) for the top u = c⌈ln T⌉ queries by sampled max − mean; "
        "lazy rows uniform, 1/T (or 1/(t+1) for s ≤ t when masked)",
        "scores only for c⌈ln T⌉ sampled keys per query and for the u active rows; lazy rows are mean(V)",
        "KV cache (decode mode: one token per call is exact causal attention)",
        "O(T log T · d)",
        "O(T log T)"),
    "urpe": MixingView(
        "softmax kernel times a Toeplitz matrix",
        "M_ts = softmax_s(q_t·k_s/√d + b_{t−s}) · c_{t−s}, s ≤ t (c learned per head and relative distance)",
        "materialised masked softmax, multiplied elementwise by the Toeplitz C after normalisation",
        "KV cache",
        "O(T² d); O(T d) per decoded token",
        "O(T²)"),
    "quantizable_attention": MixingView(
        "clipped softmax kernel with a gate",
        "M_ts = g_t · clip((ζ − γ)·softmax_s(q_t·k_s/√d) + γ, 0, 1), s ≤ t; g_t = sigmoid(G(x_t)) per head "
        "(rows can be exactly 0: a head that does nothing)",
        "materialised masked softmax, clipped, then gated",
        "KV cache",
        "O(T² d); O(T d) per decoded token",
        "O(T²)"),
    "tranception": MixingView(
        "softmax kernel with grouped ALiBi over locally convolved q, k, v",
        "M_ts = softmax_s(q̃_t·k̃_s/√d − m_h·(t − s)), s ≤ t, with q̃ = causal depthwise conv of q (kernel 1, 3, 5 "
        "or 7 by head group) and likewise k̃, ṽ; ALiBi slopes m_h per head group",
        "causal convolutions of the projections, then masked softmax (or SDPA with the ALiBi bias)",
        "KV cache plus the last 6 projections (the convolutions' receptive field)",
        "O(T² d); O(T d) per decoded token",
        "O(T²) materialised, O(T) fused"),
    "gpt_gnn_attention": MixingView(
        "softmax kernel reused as a graph: attention plus a GCN on the attention adjacency",
        "y = A v + GCN_L(Â, v) with A_ts = softmax_s(q_t·k_s/√d), s ≤ t, and Â the thresholded, row-normalised A; "
        "each GCN layer h ← GELU(Â (h W + b) + h); still lower-triangular (L = 0 is plain attention)",
        "materialised masked softmax, then L propagation steps Â h",
        "KV cache plus the cached GCN messages of earlier tokens",
        "O(T² d (1 + L)); O(T d L) per decoded token",
        "O(T²)"),
    "ssa_attention": MixingView(
        "randomly sparsified softmax kernel",
        "M_ts = softmax over S(t): the own query block plus a random, locally biased fraction f of the keys "
        "s ≤ t (training); dense causal softmax at inference (or a mean of sub-sampled passes)",
        "gather the kept keys per query block, then attention on them only",
        "KV cache",
        "O(f T² d) in training; O(T² d) dense",
        "O(f T²)"),
    "combiner": MixingView(
        "local softmax plus low-rank segment abstractions",
        "M_ts = p(s | t) for s in t's own segment; p(Ω_r | t)·q(s | Ω_r) for s in an earlier segment r "
        "(one joint softmax over local logits and segment summaries)",
        "per segment a summary key and a summary value (attention within the segment), then one softmax per query",
        "the current segment's keys/values plus one summary per finished segment",
        "O(T √T d) with segment length √T",
        "O(T √T)"),
    "longvq": MixingView(
        "vector-quantised keys (codebook low rank) plus a local relative bias",
        "M_ts ∝ exp(q_t·k̂_s/√d + b_{t−s}[t − s < w]), s ≤ t, with k̂_s the codeword of k_s; one normaliser "
        "per row (behind a damped-EMA pre-mixer and output gates)",
        "per-code running sums of values and counts (an S × d memory) for the far past, explicit scores in the "
        "window",
        "codebook memory S × d, the last w tokens and the EMA state",
        "O(T (S + w) d) with S codes and window w",
        "O(T (S + w))"),
    "autocorrelation": MixingView(
        "mixture of cyclic shifts (circulant; not causal)",
        "M = Σ_i w_i P^{τ_i}: M_ts = Σ_i w_i [s ≡ t + τ_i mod T]; τ_i the top ⌊c ln T⌋ delays of the "
        "autocorrelation of q and k, w = softmax of their correlations",
        "R(τ) by FFT (Wiener–Khinchin), top-k delays, then k rolls of V",
        "none (each call is one whole series)",
        "O(T log T · d)",
        "O(T d)"),
    "arflow_attention": MixingView(
        "chunked hybrid: softmax within a chunk plus decayed low rank across chunks",
        "M_ts = softmax_s(q_t·k_s/√d) over s ≤ t in t's chunk (the whole chunk with within_chunk=\"full\") "
        "+ exp(G_t) γ-decayed q_t·k_s/√d for s in earlier chunks (the two parts added, then RMS-normalised)",
        "exact attention inside each chunk plus a chunk-level gated linear-attention recurrence",
        "linear-attention state H × d × d plus the keys/values of the unfinished chunk",
        "O(T C d + T d²) with chunk length C",
        "O(T C + H d²)"),
    # -- linear attention and its relatives --------------------------------------------------------------------------
    "linear_attention": MixingView(
        "low-rank kernel (rank ≤ d)",
        "M_ts = φ(q_t)·φ(k_s) / Σ_{r≤t} φ(q_t)·φ(k_r), s ≤ t (φ = elu + 1)",
        "recurrence S_t = S_{t−1} + φ(k_t)ᵀ v_t, chunkwise or masked parallel form",
        "matrix state H × d × (d + 1)",
        "O(T d²) (chunked O(T C d + T d²)); O(d²) per token",
        "O(H d²) recurrent, O(T C) chunked"),
    "retention": MixingView(
        "decayed low-rank kernel (semiseparable)",
        "M_ts = γ_h^{t−s} q_t·k_s / √d, s ≤ t (before the per-head GroupNorm and the swish gate)",
        "recurrent, chunkwise or parallel with the decay mask D_ts = γ^{t−s}",
        "matrix state H × d × d",
        "O(T d²) chunked; O(d²) per token",
        "O(H d²) recurrent, O(T C) chunked"),
    "deltanet": MixingView(
        "semiseparable with generalised Householder transitions",
        "M_ts = d^{-1/2} β_s q_t (I − β_t k_tᵀk_t) ⋯ (I − β_{s+1} k_{s+1}ᵀk_{s+1}) k_sᵀ, s ≤ t (row vectors)",
        "delta rule S_t = (I − β_t k_tᵀk_t) S_{t−1} + β_t k_tᵀ v_t; chunkwise with the WY/UT transform",
        "matrix state H × d × d (plus short-conv tails)",
        "O(T C d + T d²); O(d²) per token",
        "O(H d²) recurrent, O(T C) chunked"),
    "aaren": MixingView(
        "prefix-normalised softmax of one learned query (every row re-normalises the same weights)",
        "M_ts = exp(q_h·k_s/√d) / Σ_{r≤t} exp(q_h·k_r/√d), s ≤ t; q_h a learned vector per head that does not "
        "depend on the input (then an output projection)",
        "Hillis–Steele parallel prefix scan of (running max, sum of exp, weighted sum of values) triples; the same "
        "⊕ one token at a time to decode",
        "(m, u, w) per head: H·(d + 2), constant in T",
        "O(T log T · D) scan work in ⌈log₂ T⌉ rounds, plus O(T D²) projections; O(D²) per token",
        "O(T D) per scan round (O(T D log T) kept for the backward pass)"),
    # -- state space models ------------------------------------------------------------------------------------------
    "s4": MixingView(
        "Toeplitz (LTI state-space convolution)",
        "M_ts = K_{t−s} = C Ā^{t−s} B̄ per channel (+ D on the diagonal), A HiPPO-LegS in NPLR form",
        "kernel from a Cauchy/Woodbury evaluation at roots of unity, then FFT convolution; recurrence to decode",
        "complex state D × N",
        "O(T log T · D) (+ kernel O((N + T) D)); O(D N) per token",
        "O(T D)"),
    "s4d": MixingView(
        "Toeplitz (diagonal state space)",
        "M_ts = K_{t−s} = Σ_n C_n exp((t − s) Δ A_n) B̄_n per channel (+ D)",
        "Vandermonde kernel, FFT convolution; recurrence to decode",
        "complex state D × N",
        "O(T log T · D + T N D); O(D N) per token",
        "O(T D)"),
    "lssl": MixingView(
        "Toeplitz (HiPPO state space, bilinear)",
        "M_ts = K_{t−s} = C_c Ā_c^{t−s} B̄_c per SSM channel (+ D_c), Ā_c = (I − Δ_c A/2)⁻¹(I + Δ_c A/2), "
        "A HiPPO-LegS; copies with different Δ mixed linearly",
        "Krylov kernel by repeated squaring of Ā (log₂ T matrix products), FFT convolution; recurrence to decode",
        "state (D · copies) × N",
        "O(T log T · D + N³ log T · D) kernel; O(D N²) per token",
        "O(T D · copies)"),
    "lmu": MixingView(
        "Toeplitz (Legendre delay memory)",
        "memory m_t = Σ_{s≤t} Ā^{t−s} B̄ u_s with the fixed LegT (A, B) of order N: M_ts = Ā^{t−s} B̄ on "
        "u = f(W_u x), then the read-out h_t = f(W_h [m_t; x_t])",
        "impulse response Ā^τ B̄, FFT convolution (parallel) or the recurrence (streaming)",
        "memory of order N per memory input",
        "O(T log T · N); O(N²) per token",
        "O(T N)"),
    "spacetime": MixingView(
        "Toeplitz (companion-matrix state space)",
        "M_ts = K_{t−s} = cᵀ A^{t−s} b with A = shift + a e_Nᵀ (represents AR(p) exactly)",
        "kernel from the companion structure (AR recursion in the last column a), FFT convolution; closed-loop rollout",
        "an N-state per channel (D·N per sequence)",
        "O(T log T + N T)",
        "O(T + N)"),
    "convs5": MixingView(
        "Toeplitz in time (LTI) with local convolutions in space; a diagonal state space at every pixel",
        "Y_t = GELU(Σ_{s≤t} C̃ ∗ (Λ̄^{t−s} ⊙ (B̄ ∗ U_s)) + D ∗ U_t): M_ts = C̃ ∗ Λ̄^{t−s} B̄ ∗ (an operator on frames; "
        "the state kernel A is 1×1, so the spatial reach is r_B + r_C at every lag t − s)",
        "the convolutions on all frames at once; Hillis–Steele scan over time of the pointwise recurrence "
        "(or frame-by-frame steps to decode)",
        "complex state P × H × W (2·P·H·W reals; P = N/2)",
        "O(T·HW·C·P·k²) convolutions + O(T log T · HW·P) scan; O(HW·C·P·k²) per frame",
        "O(T·HW·P)"),
    "mamba": MixingView(
        "input-dependent semiseparable (selective state space)",
        "M_ts = C_t (Π_{r=s+1}^{t} exp(Δ_r A)) Δ_s B_s per channel, s ≤ t (+ D u_t)",
        "selective scan (recurrent reference, chunked log-space cumulative decays)",
        "SSM state D_in × N plus a short-conv tail",
        "O(T D N); O(D N) per token",
        "O(T D) chunked"),
    "mambamixer": MixingView(
        "input-dependent semiseparable over tokens, plus a per-token mixer over channels",
        "token mixer as in Mamba (M_ts = C_t Π_{r=s+1}^{t} exp(Δ_r A) Δ_s B_s, s ≤ t); channel mixer: a "
        "bidirectional selective SSM along the channel axis of each token (M over channels, not time)",
        "a selective scan over time, and per token forward + backward selective scans over channels",
        "token SSM state D_in × N plus a short-conv tail",
        "O(T D N)",
        "O(T D)"),
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def unified_view_table(names: list[str] | None = None) -> str:
    """Markdown: the template, then one row per registered mixer (or per name in ``names``) from
    :data:`UNIFIED_VIEW` and the registry (paper, arXiv id, causality). A name without an entry is an error."""
    names = list_mixers() if names is None else list(names)
    missing = [n for n in names if n not in UNIFIED_VIEW]
    if missing:
        raise SeqzooError(f"no unified-view entry for mixer(s) {', '.join(missing)}; "
                          f"add one to UNIFIED_VIEW in seqzoo/mixers/unified_view.py")
    lines = [
        "# Unified view of the mixers",
        "",
        "Every mixer in the template of Hè and Kabic, \"A Unified View of Long-Sequence Models towards Modeling",
        "Million-Scale Dependencies\" (arXiv 2302.06218): per head or channel, with values v = x W_v,",
        "",
        "    y = M(x) v,    y_t = Σ_s M_ts(x) v_s",
        "",
        "Causal mixers have a lower-triangular M. T tokens, D model width, H heads of width d, N state size per",
        "channel, C chunk length, c a paper constant. Generated from the registry by",
        "`python -m seqzoo.mixers.unified_view docs/unified_view.md`; the entries live in",
        "`seqzoo/mixers/unified_view.py`.",
        "",
        "| mixer | paper (arXiv) | causal | M(x) | M_ts | computed by | state | time | memory |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        entry, view = mixer_entry(name), UNIFIED_VIEW[name]
        paper = f"{entry.paper} ({entry.arxiv})" if entry.arxiv else entry.paper
        causal = "yes" if entry.cls.causal else "no"
        cells = [f"`{name}`", paper, causal, view.family, view.matrix, view.computed, view.state, view.time,
                 view.memory]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    waiting = sorted(set(UNIFIED_VIEW) - set(list_mixers()))
    if waiting and names == list_mixers():
        lines += ["", f"Entries written for mixers not registered yet: {', '.join(waiting)}."]
    return "\n".join(lines) + "\n"


# -- numerical mixing matrices ----------------------------------------------------------------------------------------
def _identity_values(batch: int, length: int, heads: int, dtype, device) -> Tensor:
    """``[B, T, heads, T]``: value s is the unit vector e_s (the same in every head)."""
    eye = torch.eye(length, dtype=dtype, device=device)
    return eye[None, :, None, :].expand(batch, length, heads, length).contiguous()


def _probe_attention(mixer, x):
    from ..ops import softmax_attention
    q, k, v = mixer.project(x, torch.zeros(x.shape[0], dtype=torch.int64, device=x.device))
    mix = lambda values: softmax_attention(q, k, values, window=mixer.window, impl="math")[0]  # noqa: E731
    return mix, v, mixer.n_kv_heads


def _probe_linear_attention(mixer, x):
    q, k, v = mixer.features(x)

    def mix(values):
        width = values.shape[-1] + (1 if mixer.normalize else 0)
        zero = torch.zeros(x.shape[0], mixer.n_heads, mixer.head_dim, width, dtype=q.dtype, device=x.device)
        return mixer.attend(q, k, values, zero)[0]
    return mix, v, mixer.n_heads


def _probe_retention(mixer, x):
    q, k, v = mixer.project(x, torch.zeros(x.shape[0], dtype=torch.int64, device=x.device))

    def mix(values):
        zero = torch.zeros(x.shape[0], mixer.n_heads, mixer.head_dim, values.shape[-1], dtype=q.dtype,
                           device=x.device)
        return mixer.retain(q, k, values, zero)[0]
    return mix, v, mixer.n_heads


def _probe_probsparse(mixer, x):
    from .attention.probsparse import probsparse_attention
    q, k, v = mixer.project(x)
    index = mixer.sample_index(x.shape[1], x.shape[1], x.device)
    mix = lambda values: probsparse_attention(q, k, values, factor=mixer.factor, masked=mixer.masked,  # noqa: E731
                                              sample_index=index, impl=mixer.impl)[0]
    return mix, v, mixer.n_heads


def _probe_autocorrelation(mixer, x):
    from .attention.autocorrelation import autocorrelation
    q, k, v = mixer.project(x)
    mix = lambda values: autocorrelation(q, k, values, factor=mixer.factor, per_head=mixer.per_head,  # noqa: E731
                                         batch_delays=mixer.batch_delays and mixer.training, impl=mixer.impl)[0]
    return mix, v, mixer.n_heads


# name -> probe(mixer, x) -> (mix(values [B,T,Hv,Dv]) -> [B,T,H,Dv], the real values [B,T,Hv,d], Hv)
MATRIX_PROBES = {
    "attention": _probe_attention,
    "linear_attention": _probe_linear_attention,
    "retention": _probe_retention,
    "probsparse": _probe_probsparse,
    "autocorrelation": _probe_autocorrelation,
}


def mixing_matrix(mixer, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``M(x)`` of a built mixer on one call from an empty state (no positions or cache before ``x``).

    Returns ``(M, v, mixed)``: ``M [B, H, T, T]`` (query head h reads value head ``h // (H / Hv)``),
    the real values ``v [B, T, Hv, d]`` and the mixer's own mixing of them ``mixed [B, T, H, d]`` (before any
    normalisation, gate or output projection), so that ``mixed[:, t, h] == Σ_s M[:, h, t, s] v[:, s, h_v]``.
    """
    name = getattr(mixer, "registry_name", "")
    if name not in MATRIX_PROBES:
        raise SeqzooError(f"no mixing-matrix probe for mixer {name or type(mixer).__name__!r}; "
                          f"valid: {', '.join(sorted(MATRIX_PROBES))}")
    mix, v, value_heads = MATRIX_PROBES[name](mixer, x)
    rows = mix(_identity_values(x.shape[0], x.shape[1], value_heads, v.dtype, x.device))   # [B, T, H, T]
    return rows.permute(0, 2, 1, 3).contiguous(), v, mix(v)


def main(argv: list[str]) -> int:
    text = unified_view_table()
    if argv:
        with open(argv[0], "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


__all__ = ["MixingView", "UNIFIED_VIEW", "unified_view_table", "mixing_matrix", "MATRIX_PROBES"]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

