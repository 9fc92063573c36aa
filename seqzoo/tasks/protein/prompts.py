"""Byte-level multi-task prompts for protein analysis and design, with a loss only after the task delimiter.

Reproduces the prompt scheme of "Generative Pretrained Autoregressive Transformer Graph Neural Network applied to the
Analysis and Discovery of Novel Proteins" (Buehler 2023, arXiv 2305.04934): every task is free text encoded as
UTF-8 bytes (vocabulary 256), a task tag and its input, then a task delimiter, then the answer; the model is a plain
next-byte predictor. Tasks (our tags; the paper's text differs):

    SS  <sequence>|<H/E/C per residue>;        per-residue secondary structure under the synthetic physics
    SSR <sequence>|<H/E/C per residue>;        per-residue secondary structure from real PDB / Swiss-Prot records
    CON <sequence>|<f_H> <f_E> <f_C>;          overall content, two decimals
    SOL <sequence>|<1 or 0>;                   solubility class (physics: GRAVY below the median)
    GEN H<f_H> E<f_E> L<length>|<sequence>;    inverse design: a sequence with the requested content and length

Loss mask (the official code's ``task_end_token``): for a byte sequence x_0 … x_n the model predicts x_{t+1} from
x_≤t, and the loss counts only targets x_{t+1} that come strictly after the first delimiter, i.e. the answer and its
end byte ``;`` (the official code also counts the delimiter itself as a target; we do not, since where a prompt ends
is the user's choice). Padding (byte 0) after ``;`` is never counted. Input augmentation (official code,
``mask_token_prob``): in training batches each input byte but the first is replaced by ``_`` (byte 95, the README's
``mask_token``) with probability ``mask_prob``; targets stay clean.
"""

from __future__ import annotations

import random
import zlib

import torch

from ...core.errors import SeqzooError
from .physics import (MAX_LENGTH, MIN_LENGTH, check_ss, random_protein, secondary_structure, sequence_content,
                      solubility_class)
from .sequences import validate_protein
from .structure import LabelledChain

DELIMITER = "|"
END = ";"
MASK_BYTE = 95  # "_"
PAD_BYTE = 0
TAGS = {"ss": "SS", "ss_real": "SSR", "content": "CON", "solubility": "SOL", "design": "GEN"}
TASKS = tuple(TAGS)
DEFAULT_WEIGHTS = {"ss": 0.25, "ss_real": 0.2, "content": 0.15, "solubility": 0.1, "design": 0.3}


def check_task(task: str) -> str:
    if task not in TAGS:
        raise SeqzooError(f"unknown protein task {task!r}; valid: {', '.join(TASKS)}")
    return task


def format_content(h: float, e: float) -> str:
    """``H0.42 E0.21``, the design request (C is what remains)."""
    for name, value in (("helix", h), ("sheet", e)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise SeqzooError(f"{name} fraction must be a number in [0, 1], got {value!r}")
    if h + e > 1.0 + 1e-9:
        raise SeqzooError(f"helix + sheet fractions must not exceed 1, got {h} + {e} = {h + e:.3f}")
    return f"H{h:.2f} E{e:.2f}"


def round_content(helix: float, sheet: float) -> tuple[float, float]:
    """Fractions rounded to two decimals as the prompts print them, the sheet fraction capped so the two still sum
    to at most 1 (0.225 and 0.775 would both round up)."""
    h = round(helix, 2)
    return h, min(round(sheet, 2), round(1.0 - h, 2))


def make_prompt(task: str, *, sequence: str | None = None, helix: float | None = None, sheet: float | None = None,
                length: int | None = None) -> str:
    """The prompt of ``task`` up to and including the delimiter (validated; bad input is a one-line error)."""
    check_task(task)
    if task == "design":
        if helix is None or sheet is None or length is None:
            raise SeqzooError("the design task needs helix, sheet and length")
        if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= 999:
            raise SeqzooError(f"design length must be an int in 1 … 999, got {length!r}")
        return f"{TAGS[task]} {format_content(helix, sheet)} L{length}{DELIMITER}"
    if sequence is None:
        raise SeqzooError(f"the {task} task needs a sequence")
    return f"{TAGS[task]} {validate_protein(sequence, f'{task} sequence')}{DELIMITER}"


def make_answer(task: str, *, sequence: str | None = None, ss: str | None = None) -> str:
    """The answer (with the end byte): from the physics for synthetic tasks, ``ss`` for ``ss_real``, ``sequence``
    for ``design``."""
    check_task(task)
    if task == "ss_real":
        return check_ss(ss, "real secondary structure") + END
    seq = validate_protein(sequence, f"{task} sequence")
    if task == "ss":
        return secondary_structure(seq) + END
    if task == "content":
        h, e, c = sequence_content(seq)
        return f"{h:.2f} {e:.2f} {c:.2f}{END}"
    if task == "solubility":
        return f"{solubility_class(seq)}{END}"
    return seq + END


def encode(text: str) -> list[int]:
    """UTF-8 bytes of ``text``."""
    return list(text.encode("utf-8"))


def decode(ids) -> str:
    return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


def loss_mask(tokens: list[int]) -> list[bool]:
    """For inputs ``tokens[:-1]`` and targets ``tokens[1:]``: True where the target lies strictly after the first
    delimiter and is not padding. A token list without the delimiter is an error."""
    delim = ord(DELIMITER)
    if delim not in tokens:
        raise SeqzooError(f"prompt has no task delimiter {DELIMITER!r}; write '<TAG> <input>{DELIMITER}<answer>{END}'")
    first = tokens.index(delim)
    return [t + 1 > first and tokens[t + 1] != PAD_BYTE for t in range(len(tokens) - 1)]


def parse_prompt(text: str) -> tuple[str, str]:
    """Split a user's prompt ``'<TAG> <input>|'`` into ``(task, prompt)``; checks the tag, the delimiter and the
    input (unknown amino acids, malformed content requests)."""
    if not isinstance(text, str) or DELIMITER not in text:
        raise SeqzooError(f"prompt {str(text)[:40]!r} has no task delimiter {DELIMITER!r}; "
                          f"write e.g. 'SS MKVLA{DELIMITER}'")
    head, _, rest = text.partition(DELIMITER)
    if rest.strip():
        raise SeqzooError(f"prompt must end at the delimiter {DELIMITER!r}; got {rest[:20]!r} after it")
    tag, _, payload = head.strip().partition(" ")
    tasks = {v: k for k, v in TAGS.items()}
    if tag not in tasks:
        raise SeqzooError(f"unknown task tag {tag!r}; valid: {', '.join(TAGS.values())}")
    task = tasks[tag]
    if task != "design":
        return task, make_prompt(task, sequence=payload)
    fields = payload.split()
    try:
        values = {f[0]: f[1:] for f in fields}
        if sorted(values) != ["E", "H", "L"] or len(fields) != 3:
            raise ValueError
        return task, make_prompt(task, helix=float(values["H"]), sheet=float(values["E"]), length=int(values["L"]))
    except ValueError:
        raise SeqzooError(f"design prompt {text!r} is malformed; write 'GEN H0.40 E0.20 L40{DELIMITER}'") from None


def parse_answer(task: str, text: str):
    """The answer of ``task`` in generated ``text`` (up to the end byte), or None when it is malformed:
    ``ss``/``ss_real`` → H/E/C string; ``content`` → (f_H, f_E, f_C); ``solubility`` → 0/1; ``design`` → sequence."""
    check_task(task)
    body = text.split(END, 1)[0].strip()
    try:
        if task in ("ss", "ss_real"):
            return check_ss(body)
        if task == "content":
            values = tuple(float(v) for v in body.split())
            return values if len(values) == 3 else None
        if task == "solubility":
            return int(body) if body in ("0", "1") else None
        return validate_protein(body)
    except (SeqzooError, ValueError):
        return None


def real_windows(chains: list[LabelledChain], length: int = MAX_LENGTH, min_length: int = MIN_LENGTH
                 ) -> list[LabelledChain]:
    """Non-overlapping windows of ``length`` residues (the last one kept if at least ``min_length``)."""
    out = []
    for c in chains:
        for start in range(0, len(c.sequence), length):
            piece = c.sequence[start:start + length]
            if len(piece) >= min_length:
                out.append(LabelledChain(f"{c.name}@{start + 1}", piece, c.ss[start:start + length], c.source,
                                         c.family))
    return out


class ProteinPromptTask:
    """Deterministic batches of mixed prompts (a :class:`seqzoo.core.data.BatchSource`).

    Each row draws a task with ``weights``; synthetic rows draw a protein from :func:`random_protein` (streams
    differ per split), ``ss_real`` rows a random window of ``min_length … max_length`` residues of a chain from
    ``real_train`` (split ``train``) or ``real_val`` (other splits). Rows are padded with byte 0 to ``seq_len + 1``
    bytes; ``inputs``/``targets`` are the usual shift, ``loss_mask`` is :func:`loss_mask`.
    """

    def __init__(self, *, seed: int = 0, seq_len: int = 128, weights: dict | None = None,
                 real_train: list[LabelledChain] | None = None, real_val: list[LabelledChain] | None = None,
                 mask_prob: float = 0.0, min_length: int = MIN_LENGTH, max_length: int = MAX_LENGTH):
        weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
        for task in weights:
            check_task(task)
        if not real_train:
            weights.pop("ss_real", None)
        if not weights or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise SeqzooError(f"task weights must be non-negative with a positive sum, got {weights}")
        if not 0.0 <= mask_prob < 1.0:
            raise SeqzooError(f"mask_prob must lie in [0, 1), got {mask_prob!r}")
        longest = 2 * max_length + 6
        if seq_len + 1 < longest:
            raise SeqzooError(f"seq_len={seq_len} is too short for proteins of {max_length} residues; "
                              f"use seq_len >= {longest - 1}")
        self.seed, self.seq_len, self.mask_prob = seed, seq_len, mask_prob
        self.min_length, self.max_length = min_length, max_length
        self.tasks = [t for t in TASKS if weights.get(t, 0) > 0]
        self.weights = [weights[t] for t in self.tasks]
        self.real = {"train": list(real_train or []), "val": list(real_val or real_train or [])}

    def example(self, task: str, rng: random.Random, split: str) -> str:
        """One full example text (prompt + answer) of ``task``."""
        if task == "ss_real":
            chains = self.real["train" if split == "train" else "val"]
            chain = rng.choices(chains, weights=[len(c.sequence) for c in chains])[0]
            size = min(len(chain.sequence), rng.randint(self.min_length, self.max_length))
            start = rng.randint(0, len(chain.sequence) - size)
            seq, ss = chain.sequence[start:start + size], chain.ss[start:start + size]
            return make_prompt(task, sequence=seq) + make_answer(task, ss=ss)
        seq = random_protein(rng, self.min_length, self.max_length)
        if task == "design":
            h, e = round_content(*sequence_content(seq)[:2])
            return make_prompt(task, helix=h, sheet=e, length=len(seq)) + \
                make_answer(task, sequence=seq)
        return make_prompt(task, sequence=seq) + make_answer(task, sequence=seq)

    def get_batch(self, split: str, index: int, batch_size: int) -> dict:
        split_id = {"train": 0, "val": 1, "test": 2}.get(split)
        if split_id is None:
            raise SeqzooError(f"unknown split {split!r}; valid: train, val, test")
        rng = random.Random(zlib.crc32(f"{self.seed}:{split_id}:{index}".encode()))
        rows, masks = [], []
        for _ in range(batch_size):
            task = rng.choices(self.tasks, weights=self.weights)[0]
            tokens = encode(self.example(task, rng, split))
            tokens = tokens + [PAD_BYTE] * (self.seq_len + 1 - len(tokens))
            rows.append(tokens)
            masks.append(loss_mask(tokens))
        data = torch.tensor(rows, dtype=torch.int64)
        inputs, targets = data[:, :-1].clone(), data[:, 1:].clone()
        if split == "train" and self.mask_prob > 0:
            gen = torch.Generator().manual_seed(rng.getrandbits(62))
            hide = torch.rand(inputs.shape, generator=gen) < self.mask_prob
            hide[:, 0] = False
            hide &= inputs != PAD_BYTE
            inputs = inputs.masked_fill(hide, MASK_BYTE)
        return {"inputs": inputs, "targets": targets, "loss_mask": torch.tensor(masks, dtype=torch.bool)}


__all__ = ["DELIMITER", "END", "MASK_BYTE", "ProteinPromptTask", "TASKS", "decode", "encode", "loss_mask",
           "make_answer", "make_prompt", "parse_answer", "parse_prompt", "real_windows", "round_content"]
