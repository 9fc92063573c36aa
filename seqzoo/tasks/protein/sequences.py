"""Protein sequences: the amino-acid alphabet, FASTA reading and validation, shared by every protein model.

The 20 canonical amino acids in one-letter code are the alphabet. Reading is strict: a FASTA file whose first
non-blank line is not a ``>`` header, a record without residues, or a residue outside the alphabet is an error
that names the record, the position and the valid letters. Gaps (``-``, ``.``) are allowed only when reading
alignments (``allow_gaps=True``); lower-case letters are upper-cased (A2M insert states are the caller's business).
"""

from __future__ import annotations

from pathlib import Path

from ...core.errors import SeqzooError

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
GAP_CHARS = "-."
AA_INDEX = {a: i for i, a in enumerate(AMINO_ACIDS)}


def validate_protein(seq: str, what: str = "sequence", *, allow_gaps: bool = False) -> str:
    """Return ``seq`` upper-cased, or raise a one-line error naming the first invalid residue and its position."""
    if not isinstance(seq, str):
        raise SeqzooError(f"{what} must be a string of amino-acid letters, got {type(seq).__name__}")
    seq = seq.strip().upper()
    if not seq:
        raise SeqzooError(f"{what} is empty; give at least one amino acid ({AMINO_ACIDS})")
    valid = AMINO_ACIDS + (GAP_CHARS if allow_gaps else "")
    for i, a in enumerate(seq):
        if a not in valid:
            raise SeqzooError(f"{what} has unknown amino acid {a!r} at position {i + 1}; valid: {valid}")
    return seq


def parse_fasta(text: str, *, source: str = "FASTA text", allow_gaps: bool = False) -> list[tuple[str, str]]:
    """Parse FASTA text into ``[(name, sequence), ...]`` in file order, validating every residue."""
    records: list[tuple[str, list[str]]] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith(">"):
            name = line[1:].strip()
            if not name:
                raise SeqzooError(f"{source}: line {lineno} is a '>' header without a name")
            records.append((name, []))
        elif not records:
            raise SeqzooError(f"{source}: line {lineno} has residues before the first '>' header; "
                              "a FASTA file starts with '>name'")
        else:
            records[-1][1].append(line)
    if not records:
        raise SeqzooError(f"{source} has no FASTA records; expected lines '>name' followed by residues")
    out = []
    for name, parts in records:
        seq = "".join(parts)
        if not seq:
            raise SeqzooError(f"{source}: record {name!r} has no residues")
        out.append((name, validate_protein(seq, f"{source}: record {name!r}", allow_gaps=allow_gaps)))
    return out


def read_fasta(path, *, allow_gaps: bool = False) -> list[tuple[str, str]]:
    """Read a FASTA file (see :func:`parse_fasta`); a missing or non-UTF-8 file is a one-line error."""
    p = Path(path)
    if not p.is_file():
        raise SeqzooError(f"FASTA file {str(p)!r} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SeqzooError(f"FASTA file {str(p)!r} is not UTF-8 text (byte {e.start})") from None
    return parse_fasta(text, source=str(p), allow_gaps=allow_gaps)


def encode_protein(seq: str) -> list[int]:
    """Indices into :data:`AMINO_ACIDS` (after validation)."""
    return [AA_INDEX[a] for a in validate_protein(seq)]
