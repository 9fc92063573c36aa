"""Byte-level text data: loading files and folders, the built-in corpus, deterministic batches."""

import os
import subprocess
import sys

import pytest
import torch

from seqzoo.core.errors import SeqzooError
from seqzoo.tasks.text import ByteCorpus, builtin_corpus_text, load_text


def test_load_file_and_folder(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b.txt").write_text("second")
    (tmp_path / "d" / "a.txt").write_text("first é")
    assert load_text(tmp_path / "d") == "first é\nsecond".encode()
    assert load_text(tmp_path / "d" / "b.txt") == b"second"


def test_bad_text_inputs(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"ok\xff\xfe")
    with pytest.raises(SeqzooError, match=r"not UTF-8 text \(invalid byte at offset 2\)"):
        load_text(tmp_path / "bad.txt")
    with pytest.raises(SeqzooError, match="does not exist"):
        load_text(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SeqzooError, match="holds no files"):
        load_text(tmp_path / "empty")
    with pytest.raises(SeqzooError, match="too few for seq_len"):
        ByteCorpus("short text", 64)


def test_builtin_corpus():
    text = builtin_corpus_text("kjv")
    assert len(text) > 4_000_000 and text.startswith("In the beginning God created")
    with pytest.raises(SeqzooError, match="valid: kjv"):
        builtin_corpus_text("shakespeare")


def test_batches_are_deterministic_shifted_and_split():
    text = "".join(chr(97 + i % 26) for i in range(5000))
    corpus = ByteCorpus(text, 32, val_fraction=0.1, seed=3)
    a, b = corpus.get_batch("train", 5, 4), corpus.get_batch("train", 5, 4)
    assert torch.equal(a["inputs"], b["inputs"]) and a["inputs"].shape == (4, 32)
    assert torch.equal(a["inputs"][:, 1:], a["targets"][:, :-1])
    assert not torch.equal(a["inputs"], corpus.get_batch("train", 6, 4)["inputs"])
    assert corpus.unigram_entropy() == pytest.approx(torch.log(torch.tensor(26.0)).item(), abs=0.01)
    with pytest.raises(SeqzooError, match="valid: train, val"):
        corpus.get_batch("test", 0, 1)


def test_batches_identical_across_processes():
    """No per-process hash randomisation: a resumed run or another rank sees the same batch."""
    code = ("from seqzoo.tasks.text import ByteCorpus; c = ByteCorpus('abcdefghij' * 300, 16, seed=1);"
            "print(c.get_batch('val', 7, 3)['inputs'].sum().item())")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": str(s)}).stdout for s in (1, 2)}
    assert len(outs) == 1
