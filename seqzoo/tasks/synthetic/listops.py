"""ListOps as defined by the Long Range Arena (LRA).

Papers: "ListOps: A Diagnostic Dataset for Latent Tree Learning", Nangia and Bowman, NAACL SRW 2018,
arXiv 1804.06028; "Long Range Arena: A Benchmark for Efficient Transformers", Tay et al., ICLR 2021,
arXiv 2011.04006 (the long version used here, checked against google-research/long-range-arena
``lra_benchmarks/data/listops.py``).

An example is a nested prefix expression over the digits 0–9 with four list operators, each closed by ``]``:

    [MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]  → 5

    MIN, MAX: smallest / largest argument;  MED: int(median) (the mean of the two middle values, truncated, for an
    even count);  SM: sum of the arguments mod 10.   The label (10 classes) is the value of the whole expression.

Generation (LRA's definition): a node at depth d < max_depth is a digit with probability 1 − p_op = 0.75, else an
operator (uniform over the four) with 2 … max_args = 10 arguments (uniform), each a node at depth d + 1; at
max_depth = 10 a node is always a digit. The root is at depth 1. A tree is kept only if its length — digits count 1,
an operator counts 2 (its opening token and its ``]``) — lies strictly between min_length = 500 and
max_length = 2000 (rejection sampling). LRA's text form also wraps every node in parentheses; like the S4 code's
loader, the sequence here is the tokens without them, so the token count equals the length above.

Batches for a causal model: the expression, then a query token where the label is predicted (``loss_mask`` is True
only there); rows are left-padded with a pad token to the longest row of the batch, so the query is always last.
Deterministic from ``(seed, split, index)``.
"""

from __future__ import annotations

import numpy as np
import torch

from ...core.errors import SeqzooError

OPERATORS = ("MIN", "MAX", "MED", "SM")
DIGITS = 10
OP_ID = {name: DIGITS + i for i, name in enumerate(OPERATORS)}     # 10 … 13
CLOSE = DIGITS + len(OPERATORS)                                     # 14: "]"
QUERY = CLOSE + 1                                                    # 15
PAD = QUERY + 1                                                      # 16
VOCAB_SIZE = PAD + 1


def apply(op: str, args: list[int]) -> int:
    """The value of one operator on its evaluated arguments."""
    if op == "MIN":
        return min(args)
    if op == "MAX":
        return max(args)
    if op == "MED":
        ordered = sorted(args)
        mid = len(ordered) // 2
        return ordered[mid] if len(ordered) % 2 else int((ordered[mid - 1] + ordered[mid]) / 2)
    if op == "SM":
        return sum(args) % 10
    raise SeqzooError(f"unknown ListOps operator {op!r}; valid: {', '.join(OPERATORS)}")


def evaluate(tokens) -> int:
    """Value of a token sequence (ids as in this module) by a stack machine; malformed input is an error."""
    names = {v: k for k, v in OP_ID.items()}
    stack: list[tuple[str, list[int]]] = []
    result = None
    for tok in (int(t) for t in tokens):
        if tok in names:
            stack.append((names[tok], []))
        elif tok == CLOSE:
            if not stack or not stack[-1][1]:
                raise SeqzooError("malformed ListOps sequence: ']' without an open operator with arguments")
            op, args = stack.pop()
            value = apply(op, args)
            if stack:
                stack[-1][1].append(value)
            else:
                result = value
        elif 0 <= tok < DIGITS:
            if stack:
                stack[-1][1].append(tok)
            elif result is None:
                result = tok
            else:
                raise SeqzooError("malformed ListOps sequence: more than one top-level expression")
        else:
            raise SeqzooError(f"malformed ListOps sequence: unexpected token id {tok}")
    if stack or result is None:
        raise SeqzooError("malformed ListOps sequence: unclosed operator or empty input")
    return result


def depth_of(tokens) -> int:
    """Tree depth of a token sequence (a lone digit has depth 1, an operator of digits depth 2)."""
    depth = best = 0
    for tok in (int(t) for t in tokens):
        if DIGITS <= tok < CLOSE:
            depth += 1
            best = max(best, depth + 1)
        elif tok == CLOSE:
            depth -= 1
    return max(best, 1)


class ListOps:
    """LRA ListOps batches (see the module docstring). ``vocab_size`` = 17; labels are token ids 0–9."""

    vocab_size = VOCAB_SIZE
    num_classes = DIGITS

    def __init__(self, *, min_length: int = 500, max_length: int = 2000, max_depth: int = 10, max_args: int = 10,
                 operator_prob: float = 0.25, seed: int = 0):
        if not (1 <= min_length < max_length - 1):
            raise SeqzooError(f"ListOps needs 1 <= min_length < max_length - 1, got {min_length}, {max_length}")
        if max_depth < 2 or max_args < 2 or not 0 < operator_prob < 1:
            raise SeqzooError(f"ListOps needs max_depth >= 2, max_args >= 2 and 0 < operator_prob < 1, got "
                              f"{max_depth}, {max_args}, {operator_prob}")
        self.min_length, self.max_length = min_length, max_length
        self.max_depth, self.max_args, self.operator_prob, self.seed = max_depth, max_args, operator_prob, seed
        self.seq_len = max_length   # the longest possible row: max_length − 1 tokens and the query

    def _node(self, depth: int, rng: np.random.Generator, out: list[int], budget: int) -> bool:
        """Append one node; False as soon as the sequence exceeds ``budget`` tokens (then it is rejected)."""
        if depth >= self.max_depth or rng.random() >= self.operator_prob:
            out.append(int(rng.integers(0, DIGITS)))
            return len(out) <= budget
        count = int(rng.integers(2, self.max_args + 1))
        out.append(DIGITS + int(rng.integers(0, len(OPERATORS))))
        for _ in range(count):
            if not self._node(depth + 1, rng, out, budget):
                return False
        out.append(CLOSE)
        return len(out) <= budget

    def sample(self, rng: np.random.Generator) -> list[int]:
        """One expression whose length is strictly between ``min_length`` and ``max_length``."""
        while True:
            tokens: list[int] = []
            if self._node(1, rng, tokens, self.max_length - 1) and len(tokens) > self.min_length:
                return tokens

    def get_batch(self, split: str, index: int, batch_size: int) -> dict[str, torch.Tensor]:
        if split not in ("train", "val", "test"):
            raise SeqzooError(f"unknown split {split!r}; valid: train, val, test")
        rng = np.random.default_rng([self.seed, {"train": 0, "val": 1, "test": 2}[split], index])
        rows = [self.sample(rng) for _ in range(batch_size)]
        width = max(len(r) for r in rows) + 1
        inputs = np.full((batch_size, width), PAD, dtype=np.int64)
        targets = np.zeros((batch_size, width), dtype=np.int64)
        for b, row in enumerate(rows):
            inputs[b, width - 1 - len(row):width - 1] = row
            inputs[b, -1] = QUERY
            targets[b, -1] = evaluate(row)
        mask = torch.zeros(batch_size, width, dtype=torch.bool)
        mask[:, -1] = True
        return {"inputs": torch.from_numpy(inputs), "targets": torch.from_numpy(targets), "loss_mask": mask}


__all__ = ["CLOSE", "DIGITS", "ListOps", "OPERATORS", "OP_ID", "PAD", "QUERY", "VOCAB_SIZE", "apply", "depth_of",
           "evaluate"]
