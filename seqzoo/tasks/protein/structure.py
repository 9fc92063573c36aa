"""Real secondary structure from offline files: PDB ``HELIX``/``SHEET`` records and Swiss-Prot ``FT HELIX/STRAND``
features, turned into per-residue ``H``/``E``/``C`` strings.

Used as the real-data part of the reproduction of "Generative Pretrained Autoregressive Transformer Graph Neural
Network applied to the Analysis and Discovery of Novel Proteins" (Buehler 2023, arXiv 2305.04934), whose own
labels come from DSSP on folded structures. Here the labels are the secondary-structure records the depositors (or
UniProt) wrote, reduced to three states: every ``HELIX`` record (α, 3₁₀, π …) is ``H``, every ``SHEET`` strand /
``STRAND`` feature is ``E``, everything else (``TURN``, unannotated) is ``C``.

PDB (fixed columns of the PDB format v3.3, 1-based, inclusive):

* ``SEQRES``: chain at column 12, residue names in columns 20–22, 24–26, … 68–70 → :func:`seqres_sequences`;
* ``ATOM``: residue name 18–20, chain 22, residue number 23–26, insertion code 27 → the residues that have
  coordinates, in file order (:func:`atom_residues`); ``HETATM`` ``MSE`` (selenomethionine) counts as ``M``;
* ``HELIX``: start residue chain 20, number 22–25, insertion code 26; end chain 32, number 34–37, code 38;
* ``SHEET``: start chain 22, number 23–26, code 27; end chain 33, number 34–37, code 38.

Labels are placed on the ATOM residues of a chain (the records refer to author residue numbers, which only the ATOM
records carry), so the labelled sequence of a chain is its observed sequence. A record whose start or end residue
is not among the chain's residues, or whose end precedes its start, is an error naming the line.

Swiss-Prot flat files: ``ID`` line, ``FT   HELIX|STRAND|TURN  start end`` (old layout) or ``start..end`` (new
layout), sequence lines after ``SQ``, ``//`` ends an entry. The features usually come from one PDB structure and
cover only its residues, so the labelled string is cropped to the span from the first to the last feature.

The offline source of both is Debian's ``emboss-test`` package (``/usr/share/EMBOSS/test``); :func:`emboss_test_dir`
finds it (or returns None) and :func:`load_real_secondary_structure` collects its labelled chains, merged into
homology families for a split that keeps families apart.
"""

from __future__ import annotations

import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

from ...core.errors import SeqzooError
from .physics import check_ss
from .sequences import AMINO_ACIDS

THREE_TO_ONE = {"ALA": "A", "ARG": "R", "ASN": "N", "ASP": "D", "CYS": "C", "GLN": "Q", "GLU": "E", "GLY": "G",
                "HIS": "H", "ILE": "I", "LEU": "L", "LYS": "K", "MET": "M", "PHE": "F", "PRO": "P", "SER": "S",
                "THR": "T", "TRP": "W", "TYR": "Y", "VAL": "V", "MSE": "M"}
EMBOSS_TEST_DIRS = ("/usr/share/EMBOSS/test",)
PDB_FILES = ("data/structure/2hhb.ent", "data/structure/1ii7.ent", "data/structure/pdb/1cs4.ent",
             "data/structure/pdb/1fx2.ent", "data/structure/pdb/4at1.ent")
SWISS_FILE = "swiss/seq.dat"
# homology families of the PDB entries (their chains are merged with Swiss-Prot entries sharing 3-mers below)
PDB_FAMILIES = {"2hhb": "globin", "1cs4:A": "adenylyl-cyclase", "1cs4:B": "adenylyl-cyclase", "1cs4:C": "g-alpha",
                "1fx2": "adenylyl-cyclase", "4at1:A": "atcase-catalytic", "4at1:C": "atcase-catalytic",
                "4at1:B": "atcase-regulatory", "4at1:D": "atcase-regulatory", "1ii7": "mre11"}
SWISS_FAMILIES = {"HBA": "globin", "HBB": "globin"}


@dataclass(frozen=True)
class Residue:
    chain: str
    number: int
    icode: str
    name: str

    @property
    def key(self) -> tuple[int, str]:
        return self.number, self.icode

    @property
    def letter(self) -> str:
        return THREE_TO_ONE.get(self.name, "X")


@dataclass(frozen=True)
class LabelledChain:
    """A protein (or fragment) with its per-residue ``H``/``E``/``C`` string."""

    name: str
    sequence: str
    ss: str
    source: str
    family: str = ""


def _int_field(line: str, lo: int, hi: int, what: str, where: str) -> int:
    text = line[lo - 1:hi].strip()
    try:
        return int(text)
    except ValueError:
        raise SeqzooError(f"{where}: {what} in columns {lo}-{hi} is {text!r}, not an integer "
                          f"(malformed PDB line {line.rstrip()[:40]!r})") from None


def _lines(text: str, source: str) -> list[str]:
    if not isinstance(text, str):
        raise SeqzooError(f"{source}: PDB text must be a string, got {type(text).__name__}")
    lines = text.splitlines()
    if not any(line.startswith(("ATOM", "HETATM", "SEQRES")) for line in lines):
        raise SeqzooError(f"{source} is not a PDB file: no ATOM, HETATM or SEQRES records")
    return lines


def seqres_sequences(text: str, source: str = "PDB text") -> dict[str, str]:
    """``{chain: one-letter sequence}`` from ``SEQRES`` records (unknown residue names become ``X``)."""
    out: dict[str, list[str]] = {}
    for lineno, line in enumerate(_lines(text, source), 1):
        if not line.startswith("SEQRES"):
            continue
        if len(line) < 22:
            raise SeqzooError(f"{source}: line {lineno}: SEQRES record too short ({len(line)} columns, need >= 22)")
        names = line[19:70].split()
        out.setdefault(line[11], []).extend(THREE_TO_ONE.get(n, "X") for n in names)
    return {chain: "".join(seq) for chain, seq in out.items()}


def atom_residues(text: str, source: str = "PDB text") -> dict[str, list[Residue]]:
    """``{chain: [Residue, …]}``: residues with ``ATOM`` records (and ``HETATM MSE``), in file order, first
    model only."""
    out: dict[str, list[Residue]] = {}
    seen: set[tuple[str, int, str]] = set()
    for lineno, line in enumerate(_lines(text, source), 1):
        if line.startswith("ENDMDL"):
            break
        is_atom = line.startswith("ATOM  ") or (line.startswith("HETATM") and line[17:20] == "MSE")
        if not is_atom:
            continue
        if len(line) < 27:
            raise SeqzooError(f"{source}: line {lineno}: ATOM record too short ({len(line)} columns, need >= 27)")
        chain, name = line[21], line[17:20].strip()
        number = _int_field(line, 23, 26, "residue number", f"{source}: line {lineno}")
        key = (chain, number, line[26].strip())
        if key not in seen:
            seen.add(key)
            out.setdefault(chain, []).append(Residue(chain, number, key[2], name))
    if not out:
        raise SeqzooError(f"{source}: no ATOM records with residues; a PDB file needs ATOM lines for its chains")
    return out


def _ranges(text: str, source: str) -> list[tuple[str, str, int, str, str, int, str, int]]:
    """``(label, start chain, start number, start icode, end chain, end number, end icode, line number)``."""
    out = []
    for lineno, line in enumerate(_lines(text, source), 1):
        where = f"{source}: line {lineno}"
        if line.startswith("HELIX "):
            if len(line) < 38:
                raise SeqzooError(f"{where}: HELIX record too short ({len(line.rstrip())} columns, need >= 37)")
            out.append(("H", line[19], _int_field(line, 22, 25, "start residue number", where), line[25].strip(),
                        line[31], _int_field(line, 34, 37, "end residue number", where), line[37].strip(), lineno))
        elif line.startswith("SHEET "):
            if len(line) < 38:
                raise SeqzooError(f"{where}: SHEET record too short ({len(line.rstrip())} columns, need >= 37)")
            out.append(("E", line[21], _int_field(line, 23, 26, "start residue number", where), line[26].strip(),
                        line[32], _int_field(line, 34, 37, "end residue number", where), line[37].strip(), lineno))
    return out


def pdb_secondary_structure(text: str, source: str = "PDB text", *, strict: bool = True) -> dict[str, tuple[str, str]]:
    """``{chain: (observed sequence, H/E/C string)}`` from ATOM residues and HELIX/SHEET records.

    A record labels every ATOM residue of its chain numbered from its start to its end residue (residue number,
    then insertion code). ``strict`` also requires both end residues to have ATOM records (set it to False for
    files whose coordinates were cut, like emboss-test's ``1ii7.ent``). Chains without any standard amino acid are
    left out; helices win where a helix and a strand overlap."""
    residues = atom_residues(text, source)
    labels = {c: ["C"] * len(r) for c, r in residues.items()}
    keys = {c: {res.key for res in r} for c, r in residues.items()}
    ranges = _ranges(text, source)
    for label in ("E", "H"):  # strands first, so helices overwrite on overlap
        for kind, c0, n0, i0, c1, n1, i1, lineno in ranges:
            if kind != label:
                continue
            what = "HELIX" if kind == "H" else "SHEET"
            if c0 != c1:
                raise SeqzooError(f"{source}: line {lineno}: {what} spans chains {c0!r} and {c1!r}; "
                                  "a record must start and end in one chain")
            if (n1, i1) < (n0, i0):
                raise SeqzooError(f"{source}: line {lineno}: {what} ends ({n1}{i1}) before it starts ({n0}{i0})")
            if c0 not in keys:
                if not strict:
                    continue
                raise SeqzooError(f"{source}: line {lineno}: {what} names chain {c0!r}, which has no ATOM records; "
                                  f"chains: {', '.join(sorted(keys))}")
            if strict:
                for end in ((n0, i0), (n1, i1)):
                    if end not in keys[c0]:
                        raise SeqzooError(f"{source}: line {lineno}: {what} residue {end[0]}{end[1]} is not among the "
                                          f"ATOM residues of chain {c0!r}")
            for i, res in enumerate(residues[c0]):
                if (n0, i0) <= res.key <= (n1, i1):
                    labels[c0][i] = kind
    out = {}
    for chain, res in residues.items():
        seq = "".join(r.letter for r in res)
        if any(a in AMINO_ACIDS for a in seq):
            out[chain] = (seq, "".join(labels[chain]))
    return out


def read_pdb(path) -> str:
    p = Path(path)
    if not p.is_file():
        raise SeqzooError(f"PDB file {str(p)!r} does not exist")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SeqzooError(f"PDB file {str(p)!r} is not text (byte {e.start})") from None


_FT = re.compile(r"^FT   (HELIX|STRAND|TURN)\s+(\S+?)(?:\.\.|\s+)(\S+)")


def swissprot_secondary_structure(text: str, source: str = "Swiss-Prot text") -> list[LabelledChain]:
    """Entries of a Swiss-Prot flat file that carry ``FT HELIX``/``STRAND`` features, labelled and cropped to the
    span of their secondary-structure features (features with fuzzy ends such as ``<1`` or ``?`` are skipped)."""
    out = []
    name, seq_lines, feats, in_seq = None, [], [], False
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.startswith("ID   "):
            name, seq_lines, feats, in_seq = line.split()[1], [], [], False
        elif line.startswith("SQ   "):
            in_seq = True
        elif line.startswith("//"):
            if name is None:
                raise SeqzooError(f"{source}: line {lineno}: '//' without a preceding ID line")
            seq = "".join("".join(seq_lines).split()).upper()
            chain = _label_swiss(name, seq, feats, source)
            if chain is not None:
                out.append(chain)
            name, in_seq = None, False
        elif in_seq:
            seq_lines.append(line)
        else:
            m = _FT.match(line)
            if m and m.group(2).isdigit() and m.group(3).isdigit():
                feats.append((m.group(1), int(m.group(2)), int(m.group(3)), lineno))
    return out


def _label_swiss(name: str, seq: str, feats: list, source: str) -> LabelledChain | None:
    feats = [f for f in feats if f[0] in ("HELIX", "STRAND", "TURN")]
    structural = [f for f in feats if f[0] != "TURN"]
    if not structural:
        return None
    labels = ["C"] * len(seq)
    for kind, start, end, lineno in feats:
        if not 1 <= start <= end <= len(seq):
            raise SeqzooError(f"{source}: line {lineno}: {kind} {start}..{end} lies outside entry {name} "
                              f"(length {len(seq)})")
        if kind != "TURN":
            labels[start - 1:end] = ["H" if kind == "HELIX" else "E"] * (end - start + 1)
    lo, hi = min(f[1] for f in feats) - 1, max(f[2] for f in feats)
    return LabelledChain(name, seq[lo:hi], "".join(labels[lo:hi]), f"{source}:{name}")


def emboss_test_dir() -> Path | None:
    """The emboss-test data directory (``$SEQZOO_EMBOSS_TEST`` or ``/usr/share/EMBOSS/test``), or None."""
    candidates = [os.environ.get("SEQZOO_EMBOSS_TEST")] + list(EMBOSS_TEST_DIRS)
    for c in candidates:
        if c and (Path(c) / SWISS_FILE).is_file():
            return Path(c)
    return None


def standard_segments(chain: LabelledChain, min_length: int) -> list[LabelledChain]:
    """Cut a chain at non-standard residues (``X``); keep pieces of at least ``min_length`` residues."""
    out, start = [], 0
    for i in range(len(chain.sequence) + 1):
        if i == len(chain.sequence) or chain.sequence[i] not in AMINO_ACIDS:
            if i - start >= min_length:
                out.append(LabelledChain(f"{chain.name}/{start + 1}-{i}", chain.sequence[start:i],
                                         chain.ss[start:i], chain.source, chain.family))
            start = i + 1
    return out


def _kmers(seq: str, k: int = 3) -> set[str]:
    return {seq[i:i + k] for i in range(len(seq) - k + 1)}


def assign_families(chains: list[LabelledChain], shared: float = 0.3) -> list[LabelledChain]:
    """Merge families (single linkage) of chains sharing at least ``shared`` of the smaller one's 3-mers, so a
    split by family keeps identical or near-identical sequences together."""
    parent = list(range(len(chains)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    kmers = [_kmers(c.sequence) for c in chains]
    for i in range(len(chains)):
        for j in range(i):
            same_family = chains[i].family and chains[i].family == chains[j].family
            small = min(len(kmers[i]), len(kmers[j])) or 1
            if same_family or len(kmers[i] & kmers[j]) / small >= shared:
                parent[find(i)] = find(j)
    names: dict[int, str] = {}
    for i, c in enumerate(chains):
        root = find(i)
        names.setdefault(root, c.family or c.name)
    return [LabelledChain(c.name, c.sequence, c.ss, c.source, names[find(i)]) for i, c in enumerate(chains)]


def load_real_secondary_structure(root=None, *, min_length: int = 20) -> list[LabelledChain]:
    """Labelled chains of the emboss-test PDB files and Swiss-Prot entries, duplicates (same sequence) removed,
    cut at non-standard residues, with homology families assigned. Raises when the data is absent."""
    root = Path(root) if root is not None else emboss_test_dir()
    if root is None or not (root / SWISS_FILE).is_file():
        raise SeqzooError("real secondary-structure data not found: install Debian's emboss-test "
                          "(apt-get install emboss-test) or set SEQZOO_EMBOSS_TEST to its test directory")
    chains: list[LabelledChain] = []
    for rel in PDB_FILES:
        path = root / rel
        if not path.is_file():
            continue
        code = path.stem
        for chain_id, (seq, ss) in pdb_secondary_structure(read_pdb(path), str(path), strict=False).items():
            if "H" not in ss and "E" not in ss:
                continue
            family = PDB_FAMILIES.get(f"{code}:{chain_id}", PDB_FAMILIES.get(code, ""))
            chains.append(LabelledChain(f"{code}:{chain_id}", seq, ss, str(path), family))
    swiss = swissprot_secondary_structure((root / SWISS_FILE).read_text(encoding="utf-8", errors="replace"),
                                          str(root / SWISS_FILE))
    for c in swiss:
        prefix = re.sub(r"\d+$", "", c.name.split("_")[0])
        chains.append(LabelledChain(c.name, c.sequence, c.ss, c.source, SWISS_FAMILIES.get(prefix, prefix.lower())))
    unique, seen = [], set()
    for c in chains:
        for piece in standard_segments(c, min_length):
            if piece.sequence not in seen:
                seen.add(piece.sequence)
                check_ss(piece.ss, f"labels of {piece.name}")
                unique.append(piece)
    return assign_families(unique)


def split_by_family(chains: list[LabelledChain], held_out_fraction: float = 0.25
                    ) -> tuple[list[LabelledChain], list[LabelledChain]]:
    """``(train, held_out)``: whole families go to the held-out side, taken in the order of the CRC-32 of their
    names until they hold at least ``held_out_fraction`` of all residues (a fixed rule that ignores the labels)."""
    if not 0.0 < held_out_fraction < 1.0:
        raise SeqzooError(f"held_out_fraction must lie in (0, 1), got {held_out_fraction!r}")
    sizes: dict[str, int] = {}
    for c in chains:
        sizes[c.family] = sizes.get(c.family, 0) + len(c.sequence)
    total, held, chosen = sum(sizes.values()), 0, set()
    for family in sorted(sizes, key=lambda f: (zlib.crc32(f.encode()), f)):
        if held >= held_out_fraction * total:
            break
        chosen.add(family)
        held += sizes[family]
    return [c for c in chains if c.family not in chosen], [c for c in chains if c.family in chosen]


__all__ = ["LabelledChain", "assign_families", "atom_residues", "emboss_test_dir", "load_real_secondary_structure",
           "pdb_secondary_structure", "read_pdb", "seqres_sequences", "split_by_family",
           "swissprot_secondary_structure"]
