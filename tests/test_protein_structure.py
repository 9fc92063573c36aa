"""Real secondary structure from PDB HELIX/SHEET and Swiss-Prot FT records (seqzoo/tasks/protein/structure.py).

Built-in toy files check the column parsing (insertion codes, MSE, SEQRES, helix over strand, numeric ranges across
gaps) and every malformed-input error; the emboss-test files (skipped when the package is absent) check known
facts: haemoglobin is all-helix with the known α-chain sequence, ATCase has strands, the split keeps families apart.
"""

from __future__ import annotations

import pytest

from seqzoo import SeqzooError
from seqzoo.tasks.protein.structure import (atom_residues, emboss_test_dir, load_real_secondary_structure,
                                            pdb_secondary_structure, read_pdb, seqres_sequences, split_by_family,
                                            swissprot_secondary_structure)

RESIDUES_A = [(1, "", "GLY"), (2, "", "ALA"), (3, "", "GLU"), (4, "", "LEU"), (5, "", "LYS"), (5, "A", "ALA"),
              (6, "", "PRO"), (7, "", "GLY"), (8, "", "VAL"), (9, "", "ILE"), (10, "", "TYR"), (13, "", "THR")]
RESIDUES_B = [(1, "", "SER"), (2, "", "VAL"), (3, "", "MSE"), (4, "", "ILE"), (5, "", "ASN"), (6, "", "ASP")]


def atom(serial, chain, number, icode, name, record="ATOM  "):
    return (f"{record}{serial:5d}  CA  {name:3s} {chain}{number:4d}{icode:1s}   "
            f"{1.0:8.3f}{2.0:8.3f}{3.0:8.3f}{1.0:6.2f}{20.0:6.2f}           C")


def helix(serial, chain, n1, n2, ic1="", ic2=""):
    return f"HELIX  {serial:3d} {serial:3d} ALA {chain} {n1:4d}{ic1:1s} ALA {chain} {n2:4d}{ic2:1s} 1"


def sheet(strand, chain, n1, n2):
    return f"SHEET  {strand:3d}  S1 2 VAL {chain}{n1:4d}  ILE {chain}{n2:4d}  0"


def seqres(serial, chain, names):
    return f"SEQRES {serial:3d} {chain} {len(names):4d}  " + " ".join(names)


def toy_pdb(extra=()):
    lines = ["HEADER    TOY", seqres(1, "A", [r[2] for r in RESIDUES_A]), seqres(1, "B", [r[2] for r in RESIDUES_B]),
             helix(1, "A", 2, 5, "", "A"), sheet(1, "A", 8, 13), sheet(2, "B", 2, 4), helix(2, "A", 9, 9), *extra]
    serial = 1
    for chain, residues in (("A", RESIDUES_A), ("B", RESIDUES_B)):
        for number, icode, name in residues:
            lines.append(atom(serial, chain, number, icode, name, "HETATM" if name == "MSE" else "ATOM  "))
            serial += 1
    lines += [atom(serial, "A", 101, "", "HOH", "HETATM"), "END"]
    return "\n".join(lines) + "\n"


def test_toy_pdb_labels_and_sequences():
    chains = pdb_secondary_structure(toy_pdb())
    seq_a, ss_a = chains["A"]
    assert seq_a == "GAELKAPGVIYT"
    # helix 2..5A, strand 8..13 (residues 11 and 12 have no coordinates), helix 9..9 wins over the strand
    assert ss_a == "CHHHHHCCEHEE"
    assert chains["B"] == ("SVMIND", "CEEECC")
    assert seqres_sequences(toy_pdb()) == {"A": "GAELKAPGVIYT", "B": "SVMIND"}
    residues = atom_residues(toy_pdb())
    assert [r.key for r in residues["A"]][4:6] == [(5, ""), (5, "A")]


@pytest.mark.parametrize("bad, needle", [
    ("", "not a PDB file"),
    ("HEADER only\nREMARK nothing\n", "not a PDB file"),
    ("SEQRES   1 A    2  ALA GLY\n", "no ATOM records"),
])
def test_not_pdb(bad, needle):
    with pytest.raises(SeqzooError, match=needle):
        pdb_secondary_structure(bad)


@pytest.mark.parametrize("extra, needle", [
    ([helix(3, "A", 2, 11)], "residue 11 is not among the ATOM residues"),
    ([helix(3, "A", 6, 3)], "ends .* before it starts"),
    ([helix(3, "C", 1, 2)], "chain 'C'"),
    (["HELIX    4   4 ALA A   X2  ALA A    4  1"], "start residue number"),
    (["SHEET    1"], "too short"),
])
def test_malformed_records(extra, needle):
    with pytest.raises(SeqzooError, match=needle) as info:
        pdb_secondary_structure(toy_pdb(extra), "toy.pdb")
    assert "\n" not in str(info.value) and "toy.pdb" in str(info.value)


def test_lenient_mode_labels_numeric_ranges():
    seq, ss = pdb_secondary_structure(toy_pdb([helix(3, "A", 12, 20)]), strict=False)["A"]
    assert ss.endswith("H")  # residue 13 lies inside 12..20 although 12 and 20 have no coordinates


def test_bad_atom_residue_number_and_missing_file(tmp_path):
    good = atom(1, "A", 1, "", "GLY")
    bad = toy_pdb().replace(good, good[:22] + "  x1" + good[26:])
    with pytest.raises(SeqzooError, match="residue number"):
        atom_residues(bad)
    with pytest.raises(SeqzooError, match="does not exist"):
        read_pdb(tmp_path / "missing.pdb")


SWISS = """ID   TOY1_HUMAN              Reviewed;          20 AA.
FT   HELIX         3      8
FT   TURN          9     10
FT   STRAND       12..15
FT   DOMAIN        1     20       Something.
SQ   SEQUENCE   20 AA;  2000 MW;  0 CRC64;
     MKAELLKKGG SVIVVDEKPQ
//
ID   NOSS_HUMAN              Reviewed;          5 AA.
FT   TURN          1      2
SQ   SEQUENCE   5 AA;
     MKAEL
//
"""


def test_swissprot_features():
    (entry,) = swissprot_secondary_structure(SWISS)
    assert entry.name == "TOY1_HUMAN"
    assert entry.sequence == "AELLKKGGSVIVV" and entry.ss == "HHHHHHCCCEEEE"  # cropped to features 3..15
    with pytest.raises(SeqzooError, match="outside entry"):
        swissprot_secondary_structure(SWISS.replace("12..15", "12..25"))


needs_emboss = pytest.mark.skipif(emboss_test_dir() is None, reason="emboss-test (Debian) is not installed")


@needs_emboss
def test_haemoglobin_is_helical():
    text = read_pdb(emboss_test_dir() / "data/structure/2hhb.ent")
    assert {k: len(v) for k, v in seqres_sequences(text).items()} == {"A": 141, "B": 146, "C": 141, "D": 146}
    seq, ss = pdb_secondary_structure(text)["A"]
    assert seq.startswith("VLSPADKTNVKAAWGKVGAHAGEYGAEALERMF")
    assert "E" not in ss and ss.count("H") / len(ss) > 0.7


@needs_emboss
def test_real_corpus_and_family_split():
    text = read_pdb(emboss_test_dir() / "data/structure/pdb/4at1.ent")
    assert "E" in pdb_secondary_structure(text)["A"][1]
    chains = load_real_secondary_structure()
    assert len(chains) >= 30 and len({c.sequence for c in chains}) == len(chains)
    assert all(len(c.sequence) == len(c.ss) >= 20 for c in chains)
    train, held = split_by_family(chains)
    assert {c.family for c in train}.isdisjoint({c.family for c in held})
    held_residues = sum(len(c.sequence) for c in held)
    assert 0.25 <= held_residues / sum(len(c.sequence) for c in chains) < 0.5
    families = {c.name: c.family for c in chains}
    assert families["2hhb:A/1-141"] == families["HBA_HUMAN/1-136"]  # same protein, same family


def test_missing_emboss_is_a_one_line_error(tmp_path):
    with pytest.raises(SeqzooError, match="emboss-test"):
        load_real_secondary_structure(tmp_path)
