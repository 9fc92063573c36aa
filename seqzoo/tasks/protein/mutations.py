"""Mutant strings: parse, validate against the wild type, apply; substitutions, multiple mutants and indels.

Used by the fitness scorers (Tranception, arXiv 2205.13760, and the ProteinGym format of its benchmark). Positions
are 1-based in wild-type coordinates. Grammar of one mutation (case-sensitive letters from
:data:`~seqzoo.tasks.protein.sequences.AMINO_ACIDS`):

    A12G        substitution: the wild type has A at position 12, the mutant has G
    A12del      deletion of the A at position 12 (``A12-`` is the same)
    A12insGS    insertion of GS right after the A at position 12

A multiple mutant joins mutations with ``:`` (ProteinGym), e.g. ``A12G:C30F``; an empty string or ``WT`` is the
wild type itself. Two mutations of the same kind at one position are an error (a substitution and an insertion at
the same position are allowed). Applying a mutant returns the mutated sequence and its *column map*: for every
residue of the mutant, the wild-type position (0-based) it descends from, or ``None`` for an inserted residue.
The MSA prior is defined on wild-type columns, so the map says where it applies.

For indel assays given only as full sequences, :func:`align_to_wild_type` recovers a column map by global
alignment (Needleman–Wunsch, match +1, mismatch −1, gap −2; ties prefer substitution, then deletion).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...core.errors import SeqzooError
from .sequences import AMINO_ACIDS, validate_protein

_PATTERN = re.compile(r"^([A-Z])(\d+)(?:([A-Z])|(del|-)|ins([A-Z]+))$")


@dataclass(frozen=True)
class Mutation:
    """One mutation: ``kind`` is ``"sub"``, ``"del"`` or ``"ins"``; ``position`` is 1-based."""

    wt: str
    position: int
    kind: str
    new: str = ""

    def __str__(self) -> str:
        if self.kind == "sub":
            return f"{self.wt}{self.position}{self.new}"
        if self.kind == "del":
            return f"{self.wt}{self.position}del"
        return f"{self.wt}{self.position}ins{self.new}"


def parse_mutation(text: str) -> Mutation:
    """Parse one mutation (see the module docstring); a malformed one is a one-line error showing the forms."""
    token = text.strip()
    m = _PATTERN.match(token)
    if not m:
        raise SeqzooError(f"malformed mutation {text!r}; valid forms: A12G (substitution), A12del (deletion), "
                          f"A12insGS (insertion after 12), joined by ':' for multiple mutants")
    wt, pos, new, is_del, ins = m.groups()
    for letter in (wt, new or "", ins or ""):
        for a in letter:
            if a not in AMINO_ACIDS:
                raise SeqzooError(f"mutation {text!r} has unknown amino acid {a!r}; valid: {AMINO_ACIDS}")
    position = int(pos)
    if position < 1:
        raise SeqzooError(f"mutation {text!r} has position {position}; positions start at 1")
    if new is not None:
        if new == wt:
            raise SeqzooError(f"mutation {text!r} substitutes {wt} by itself; give a different amino acid")
        return Mutation(wt, position, "sub", new)
    if is_del is not None:
        return Mutation(wt, position, "del")
    return Mutation(wt, position, "ins", ins)


def parse_mutant(text: str) -> list[Mutation]:
    """Parse a (multiple) mutant ``"A12G:C30F"``; ``""`` or ``"WT"`` is the wild type (no mutations)."""
    if not isinstance(text, str):
        raise SeqzooError(f"a mutant must be a string like 'A12G:C30F', got {type(text).__name__}")
    text = text.strip()
    if text in ("", "WT", "wt", "_wt"):
        return []
    muts = [parse_mutation(part) for part in text.split(":")]
    seen = set()
    for mut in muts:
        key = (mut.position, "ins" if mut.kind == "ins" else "site")
        if key in seen:
            raise SeqzooError(f"mutant {text!r} changes position {mut.position} twice; give each position once")
        seen.add(key)
    return sorted(muts, key=lambda m: (m.position, m.kind == "ins"))


def check_against_wild_type(muts: list[Mutation], wild_type: str, text: str = "") -> None:
    """Every mutation's position exists and its wild-type letter matches ``wild_type`` (one-line error if not)."""
    label = f"mutant {text!r}: " if text else ""
    for mut in muts:
        if mut.position > len(wild_type):
            raise SeqzooError(f"{label}{mut} is at position {mut.position} but the wild type has "
                              f"{len(wild_type)} residues; valid positions: 1-{len(wild_type)}")
        actual = wild_type[mut.position - 1]
        if actual != mut.wt:
            raise SeqzooError(f"{label}{mut} does not match the wild type: position {mut.position} is {actual}, "
                              f"not {mut.wt}")


def apply_mutant(wild_type: str, mutant: str | list[Mutation]) -> tuple[str, list[int | None]]:
    """``(mutated_sequence, column_map)`` of a mutant of ``wild_type`` (see the module docstring)."""
    wild_type = validate_protein(wild_type, "wild-type sequence")
    text = mutant if isinstance(mutant, str) else ":".join(map(str, mutant))
    muts = parse_mutant(mutant) if isinstance(mutant, str) else list(mutant)
    check_against_wild_type(muts, wild_type, text)
    residues: list[str | None] = list(wild_type)
    inserts: dict[int, str] = {}
    for mut in muts:
        i = mut.position - 1
        if mut.kind == "sub":
            residues[i] = mut.new
        elif mut.kind == "del":
            residues[i] = None
        else:
            inserts[i] = mut.new
    seq, columns = [], []
    for i, res in enumerate(residues):
        if res is not None:
            seq.append(res)
            columns.append(i)
        for a in inserts.get(i, ""):
            seq.append(a)
            columns.append(None)
    if not seq:
        raise SeqzooError(f"mutant {text!r} deletes every residue of the wild type")
    return "".join(seq), columns


def mutant_from_sequences(wild_type: str, mutated: str) -> str:
    """The substitution string (``A12G:C30F``) turning ``wild_type`` into ``mutated`` of the same length."""
    if len(wild_type) != len(mutated):
        raise SeqzooError(f"cannot describe a sequence of length {len(mutated)} by substitutions of a wild type "
                          f"of length {len(wild_type)}; give indels as a mutant string (A12del, A12insGS)")
    return ":".join(f"{a}{i + 1}{b}" for i, (a, b) in enumerate(zip(wild_type, mutated)) if a != b)


def count_mutations(mutant: str) -> int:
    """Number of mutations in a mutant string (0 for the wild type)."""
    return len(parse_mutant(mutant))


def align_to_wild_type(mutated: str, wild_type: str) -> list[int | None]:
    """Column map of ``mutated`` onto ``wild_type`` by global alignment (module docstring); equal lengths map
    position to position."""
    if len(mutated) == len(wild_type):
        return list(range(len(mutated)))
    n, m = len(mutated), len(wild_type)
    gap = -2
    score = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        score[i][0] = i * gap
    for j in range(1, m + 1):
        score[0][j] = j * gap
    for i in range(1, n + 1):
        a = mutated[i - 1]
        row, prev = score[i], score[i - 1]
        for j in range(1, m + 1):
            diag = prev[j - 1] + (1 if a == wild_type[j - 1] else -1)
            row[j] = max(diag, prev[j] + gap, row[j - 1] + gap)
    columns: list[int | None] = [None] * n
    i, j = n, m
    while i > 0 and j > 0:
        if score[i][j] == score[i - 1][j - 1] + (1 if mutated[i - 1] == wild_type[j - 1] else -1):
            columns[i - 1] = j - 1
            i, j = i - 1, j - 1
        elif score[i][j] == score[i][j - 1] + gap:  # wild-type residue j deleted
            j -= 1
        else:  # residue i inserted
            i -= 1
    return columns


__all__ = ["Mutation", "align_to_wild_type", "apply_mutant", "check_against_wild_type", "count_mutations",
           "mutant_from_sequences", "parse_mutant", "parse_mutation"]
