"""The MSA-derived per-position amino-acid prior of Tranception's inference-time retrieval.

Paper: "Tranception: protein fitness prediction with autoregressive transformers and inference-time retrieval",
Notin et al., ICML 2022, arXiv 2205.13760 (sec. 4, "inference-time retrieval"); sequence weights as in Hopf et al.
2017 (EVmutation) and Morcos et al. 2011.

Sequence weights. With ``M`` aligned sequences over the wild-type columns and identity threshold ``θ`` (0.2 in
Tranception), sequence ``n`` gets

    w_n = 1 / |{ m : id(n, m) ≥ 1 − θ }|,     id(n, m) = (# columns where both have the same residue)
                                                       / (# columns where n has a residue)

(``m = n`` included, so ``w_n ≤ 1``); ``N_eff = Σ_n w_n``.

Per-position prior with pseudo-counts ``λ`` (per amino acid, in effective sequences), gaps not counted:

    f_i(a) = (Σ_n w_n 1[s_n,i = a] + λ) / (Σ_n w_n 1[s_n,i ≠ gap] + q λ)

Retrieval fusion (done by the model, :mod:`seqzoo.models.protein.tranception`) at a position aligned to column i:
``log p(x_i | x_<i) = (1 − α) log p_AR(x_i | x_<i) + α log f_i(x_i)``. The site-independent score of a mutant
alone (α = 1) is ``Σ_i [log f_i(mut_i) − log f_i(wt_i)]`` over mutated columns (:func:`site_independent_score`).

MSA columns: an alignment whose first sequence is the wild type (focus/query) keeps the columns where the query has
a residue. In A2M (any lower-case letter present) lower-case letters and ``.`` are insert states and are dropped;
otherwise (Stockholm, aligned FASTA) ``.`` and ``-`` are gaps. An unaligned set of sequences of the wild type's
length is used as is.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...core.errors import SeqzooError
from .sequences import AA_INDEX, AMINO_ACIDS, GAP_CHARS, validate_protein

GAP = len(AMINO_ACIDS)  # index of the gap symbol in encoded alignments


def encode_alignment(seqs: list[str], wild_type: str | None = None) -> Tensor:
    """Encode aligned sequences to ``[M, L]`` int64 (gap = 20), keeping the focus columns of the first row
    (where it has an upper-case residue) when the rows contain gaps or lower-case insert states."""
    if not seqs:
        raise SeqzooError("the MSA is empty; give at least one aligned sequence")
    for k, s in enumerate(seqs):
        if not isinstance(s, str) or not s.strip():
            raise SeqzooError(f"MSA row {k + 1} is empty or not a string")
    # A2M (some row has lower-case letters): lower-case letters and '.' are insert states, dropped; otherwise
    # (Stockholm, aligned FASTA) '.' and '-' are both gaps
    a2m = any(any(c.islower() for c in s) for s in seqs)
    rows = ["".join(c for c in s.strip() if not (c.islower() or c == ".")) if a2m else s.strip() for s in seqs]
    width = len(rows[0])
    for k, r in enumerate(rows):
        if len(r) != width:
            raise SeqzooError(f"MSA row {k + 1} has {len(r)} match columns, the first row {width}; "
                              "all rows of an alignment must have the same number of columns")
        validate_protein(r, f"MSA row {k + 1}", allow_gaps=True)
    focus = [i for i, c in enumerate(rows[0]) if c not in GAP_CHARS]
    if wild_type is not None:
        wt = validate_protein(wild_type, "wild-type sequence")
        query = "".join(rows[0][i] for i in focus)
        if query != wt:
            raise SeqzooError(f"the first MSA row (focus columns, {len(query)} residues) is not the wild type "
                              f"({len(wt)} residues); put the wild type first in the alignment")
    out = torch.empty(len(rows), len(focus), dtype=torch.long)
    for k, r in enumerate(rows):
        out[k] = torch.tensor([AA_INDEX.get(r[i], GAP) if r[i] not in GAP_CHARS else GAP for i in focus])
    return out


def read_stockholm(path) -> list[tuple[str, str]]:
    """``[(name, aligned row), ...]`` of a Stockholm alignment (``#`` annotation lines skipped, interleaved blocks
    joined, stops at ``//``); rows keep their gaps and case for :func:`encode_alignment`."""
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise SeqzooError(f"Stockholm file {str(p)!r} does not exist")
    lines = p.read_text(encoding="utf-8", errors="strict").splitlines()
    if not lines or not lines[0].startswith("# STOCKHOLM"):
        raise SeqzooError(f"{str(p)!r} is not a Stockholm alignment (its first line is not '# STOCKHOLM 1.0')")
    rows: dict[str, list[str]] = {}
    for lineno, line in enumerate(lines[1:], 2):
        if line.startswith("//"):
            break
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise SeqzooError(f"{str(p)!r} line {lineno}: expected 'name aligned-sequence', got {line[:60]!r}")
        rows.setdefault(parts[0], []).append(parts[1])
    if not rows:
        raise SeqzooError(f"{str(p)!r} has no aligned sequences")
    return [(name, "".join(parts)) for name, parts in rows.items()]


def sequence_weights(msa: Tensor, theta: float = 0.2, *, block: int = 1024) -> Tensor:
    """Weights ``w_n = 1 / #{m : id(n, m) ≥ 1 − θ}`` of an encoded MSA ``[M, L]`` (float64, see docstring)."""
    if msa.dim() != 2 or msa.shape[0] == 0:
        raise SeqzooError(f"the encoded MSA must be [M, L] with M ≥ 1, got {list(msa.shape)}")
    if not 0.0 <= theta < 1.0:
        raise SeqzooError(f"theta must lie in [0, 1), got {theta}")
    # float32 matmuls count matches exactly (integers < 2^24); rows in blocks so memory stays O(block · M)
    onehot = torch.nn.functional.one_hot(msa, GAP + 1)[..., :GAP].float().flatten(1)  # gaps dropped
    residues = onehot.sum(1).clamp_min(1.0).double()
    neighbours = torch.empty(msa.shape[0], dtype=torch.float64)
    for start in range(0, msa.shape[0], block):
        same = (onehot[start:start + block] @ onehot.T).double()  # [block, M] matched residues
        identity = same / residues[start:start + block, None]
        neighbours[start:start + block] = (identity >= 1.0 - theta - 1e-12).sum(1).double()
    return 1.0 / neighbours


def position_prior(msa: Tensor, weights: Tensor | None = None, *, pseudocount: float = 1.0) -> Tensor:
    """Per-position distributions ``f [L, 20]`` (float64, rows sum to 1) from an encoded MSA (see docstring)."""
    if msa.dim() != 2:
        raise SeqzooError(f"the encoded MSA must be [M, L], got {list(msa.shape)}")
    if pseudocount < 0 or (pseudocount == 0 and weights is None and msa.shape[0] == 0):
        raise SeqzooError(f"pseudocount must be ≥ 0, got {pseudocount}")
    w = torch.ones(msa.shape[0], dtype=torch.float64) if weights is None else weights.double()
    if w.shape != (msa.shape[0],):
        raise SeqzooError(f"weights must have one entry per MSA row ({msa.shape[0]}), got {list(w.shape)}")
    onehot = torch.nn.functional.one_hot(msa, GAP + 1)[..., :GAP].double()  # [M, L, 20]
    counts = torch.einsum("m,mla->la", w, onehot)
    total = counts.sum(-1, keepdim=True) + GAP * pseudocount
    if (total <= 0).any():
        raise SeqzooError("a column has no residues and pseudocount is 0; use pseudocount > 0")
    return (counts + pseudocount) / total


def msa_log_prior(msa: Tensor, *, theta: float = 0.2, pseudocount: float = 1.0) -> Tensor:
    """``log f [L, 20]`` with Hopf-et-al. sequence weights (threshold ``theta``)."""
    return position_prior(msa, sequence_weights(msa, theta), pseudocount=pseudocount).log()


def site_independent_score(log_prior: Tensor, wild_type: str, mutated: str,
                           columns: list[int | None] | None = None) -> float:
    """``Σ_i [log f_i(mut_i) − log f_i(wt_i)]``: the α = 1 retrieval score of a mutant (inserted residues, with
    no column, contribute 0; a deleted column contributes ``−log f_i(wt_i)``)."""
    wt = validate_protein(wild_type, "wild-type sequence")
    mut = validate_protein(mutated, "mutated sequence")
    if log_prior.shape[0] != len(wt):
        raise SeqzooError(f"the prior has {log_prior.shape[0]} columns but the wild type {len(wt)} residues")
    columns = list(range(len(mut))) if columns is None else columns
    if len(columns) != len(mut):
        raise SeqzooError(f"the column map has {len(columns)} entries for a mutant of {len(mut)} residues")
    total = 0.0
    for a, col in zip(mut, columns):
        if col is not None:
            total += float(log_prior[col, AA_INDEX[a]])
    total -= sum(float(log_prior[i, AA_INDEX[a]]) for i, a in enumerate(wt))
    return total


__all__ = ["GAP", "encode_alignment", "read_stockholm", "msa_log_prior", "position_prior", "sequence_weights",
           "site_independent_score"]
