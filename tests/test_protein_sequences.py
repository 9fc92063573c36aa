"""The shared protein alphabet and FASTA reader (seqzoo/tasks/protein/sequences.py)."""

import pytest

from seqzoo.core.errors import SeqzooError
from seqzoo.tasks.protein.sequences import AMINO_ACIDS, encode_protein, parse_fasta, read_fasta, validate_protein


def test_parse_fasta_joins_lines_and_keeps_order(tmp_path):
    text = ">first desc\nACDE\nfg\n\n>second\nW\n"
    assert parse_fasta(text) == [("first desc", "ACDEFG"), ("second", "W")]
    path = tmp_path / "x.fa"
    path.write_text(text)
    assert read_fasta(path) == parse_fasta(text)


@pytest.mark.parametrize("text, message", [
    ("ACDE\n>a\nAC", "before the first '>' header"),
    (">a\n>b\nAC", "record 'a' has no residues"),
    (">a\nACXD", "unknown amino acid 'X' at position 3"),
    ("", "no FASTA records"),
    (">\nAC", "header without a name"),
    (">a\nAC-D", "unknown amino acid '-'"),
])
def test_malformed_fasta_gives_one_line_errors(text, message):
    with pytest.raises(SeqzooError, match=message) as info:
        parse_fasta(text)
    assert "\n" not in str(info.value)


def test_gaps_only_in_alignments_and_encoding():
    assert parse_fasta(">a\nAC-D.", allow_gaps=True) == [("a", "AC-D.")]
    assert encode_protein("acy") == [0, 1, AMINO_ACIDS.index("Y")]
    with pytest.raises(SeqzooError, match="is empty"):
        validate_protein("  ")


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(SeqzooError, match="does not exist"):
        read_fasta(tmp_path / "nope.fa")
    bad = tmp_path / "bad.fa"
    bad.write_bytes(b">a\n\xff\xfe")
    with pytest.raises(SeqzooError, match="not UTF-8"):
        read_fasta(bad)
