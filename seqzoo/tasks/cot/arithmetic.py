"""Arithmetic expressions over F_p, answered directly or with a chain-of-thought derivation (Feng et al.).

Paper: "Towards Revealing the Mystery behind Chain of Thought: A Theoretical Perspective", Feng, Zhang, Gu, Ye, He
and Wang, NeurIPS 2023, arXiv 2305.15408; official code github.com/guyuntian/CoT_benchmark (``arithmetic/data.py``,
read for this file). Theory: bounded-depth log-precision transformers cannot evaluate arithmetic expressions
directly (unless TC⁰ = NC¹), while constant-size autoregressive transformers that write the derivation can.

Expressions. Numbers are the elements 0 … p−1 of F_p (p prime, paper: p = 11), operators + − × ÷ with the usual
precedence and left associativity, a ÷ b = a · b^(p−2) mod p (b ≠ 0). An expression with n operators is built top
down, as in the official generator, so its value is uniform on F_p: draw the answer v ~ U(F_p), then n times pick a
uniformly random leaf with value u and replace it by (a ∘ b) with ∘ ~ U{+, −, ×, ÷} and a drawn so that a ∘ b = u:

    +: a ~ U(F_p), b = u − a          −: a ~ U(F_p), b = a − u
    ×: u ≠ 0: a ~ U(F_p \\ 0), b = u/a;  u = 0: a ~ U(F_p), b = 0 if a ≠ 0 else b ~ U(F_p)
    ÷: u ≠ 0: a ~ U(F_p \\ 0), b = a/u;  u = 0: a = 0, b ~ U(F_p \\ 0)

It is written with the fewest parentheses: a child is bracketed iff its precedence is lower than its parent's, or
it is the right child of − or ÷ with equal precedence.

Formats (one token per number, operator, parenthesis, "=" and "<eos>"; p + 8 tokens with "<pad>"):

    direct:  e_n = v <eos>
    cot:     e_n = e_{n−1} = … = e_1 = v <eos>

where e_{k−1} is e_k with one operation evaluated: in the tree a reader parses from the text of e_k, the
leftmost operation whose two operands are numbers. Every e_k has value v. (Feng et al.'s CoT also reduces one
operation per step; the official code reduces in the reverse of the generation order, which depends on the hidden
generation tree. Ours is a function of the previous step's text, e.g. 3 + (5 − 1) is written 3 + 5 − 1 and
reduced to 8 − 1.) The loss and the metric cover only what follows the first "=". The metric, ``answer_accuracy``,
is the fraction of expressions whose greedily generated output ends with the right value; chance is 1/p.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...core.errors import SeqzooError

OPERATORS = ("+", "-", "*", "/")
PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
FORMATS = ("direct", "cot")
SPLITS = {"train": 0, "val": 1, "test": 2}


def apply(op: str, a: int, b: int, p: int) -> int:
    """a ∘ b in F_p (÷ through Fermat's inverse b^(p−2))."""
    if op == "+":
        return (a + b) % p
    if op == "-":
        return (a - b) % p
    if op == "*":
        return (a * b) % p
    if op == "/":
        if b % p == 0:
            raise SeqzooError(f"division by zero in F_{p}")
        return (a * pow(b, p - 2, p)) % p
    raise SeqzooError(f"unknown operator {op!r}; valid: {', '.join(OPERATORS)}")


@dataclass
class Node:
    """A number leaf (``op is None``) or a binary operation."""

    value: int
    op: str | None = None
    left: "Node | None" = None
    right: "Node | None" = None

    @property
    def is_leaf(self) -> bool:
        return self.op is None


def _leaves(node: Node) -> list[Node]:
    return [node] if node.is_leaf else _leaves(node.left) + _leaves(node.right)


def _expand(leaf: Node, op: str, p: int, rng: np.random.Generator) -> None:
    """Turn ``leaf`` (value u) into a ∘ b with a ∘ b = u in F_p."""
    u = leaf.value
    nonzero = lambda: int(rng.integers(1, p))  # noqa: E731
    if op == "+":
        a = int(rng.integers(p))
        b = (u - a) % p
    elif op == "-":
        a = int(rng.integers(p))
        b = (a - u) % p
    elif op == "*":
        if u:
            a = nonzero()
            b = apply("/", u, a, p)
        else:
            a = int(rng.integers(p))
            b = 0 if a else int(rng.integers(p))
    else:
        if u:
            a = nonzero()
            b = apply("/", a, u, p)
        else:
            a, b = 0, nonzero()
    leaf.op, leaf.left, leaf.right = op, Node(a), Node(b)


def random_expression(num_ops: int, p: int, rng: np.random.Generator) -> Node:
    """An expression tree with ``num_ops`` operators whose value is uniform on F_p (see the module docstring)."""
    root = Node(int(rng.integers(p)))
    for _ in range(num_ops):
        leaves = _leaves(root)
        _expand(leaves[int(rng.integers(len(leaves)))], OPERATORS[int(rng.integers(4))], p, rng)
    return root


def evaluate(node: Node, p: int) -> int:
    """The value of the tree in F_p, computed bottom up."""
    if node.is_leaf:
        return node.value % p
    return apply(node.op, evaluate(node.left, p), evaluate(node.right, p), p)


def render(node: Node) -> list[str]:
    """The expression as tokens with the fewest parentheses (precedence and left associativity)."""
    if node.is_leaf:
        return [str(node.value)]
    prec = PRECEDENCE[node.op]
    left, right = render(node.left), render(node.right)
    if not node.left.is_leaf and PRECEDENCE[node.left.op] < prec:
        left = ["("] + left + [")"]
    if not node.right.is_leaf and (PRECEDENCE[node.right.op] < prec or
                                   (PRECEDENCE[node.right.op] == prec and node.op in "-/")):
        right = ["("] + right + [")"]
    return left + [node.op] + right


def _reduce_leftmost(node: Node, p: int) -> bool:
    """Evaluate, in place, the leftmost operation whose operands are both numbers; False if ``node`` is a leaf."""
    if node.is_leaf:
        return False
    if node.left.is_leaf and node.right.is_leaf:
        node.value = apply(node.op, node.left.value, node.right.value, p)
        node.op = node.left = node.right = None
        return True
    return _reduce_leftmost(node.left, p) or _reduce_leftmost(node.right, p)


def parse(tokens: list[str]) -> Node:
    """The tree a reader sees in ``tokens`` (precedence, left associativity); leaf values as written."""
    pos = 0

    def atom() -> Node:
        nonlocal pos
        if pos >= len(tokens):
            raise SeqzooError("arithmetic expression ends early; expected a number or '('")
        token = tokens[pos]
        pos += 1
        if token == "(":
            node = level(0)
            if pos >= len(tokens) or tokens[pos] != ")":
                raise SeqzooError("arithmetic expression has an unclosed '('")
            pos += 1
            return node
        if not token.isdigit():
            raise SeqzooError(f"unexpected token {token!r} in an arithmetic expression; expected a number or '('")
        return Node(int(token))

    def level(depth: int) -> Node:
        nonlocal pos
        ops = ("+", "-") if depth == 0 else ("*", "/")
        node = level(1) if depth == 0 else atom()
        while pos < len(tokens) and tokens[pos] in ops:
            op = tokens[pos]
            pos += 1
            node = Node(0, op, node, level(1) if depth == 0 else atom())
        return node

    tree = level(0)
    if pos != len(tokens):
        raise SeqzooError(f"unexpected token {tokens[pos]!r} in an arithmetic expression")
    return tree


def derivation(root: Node, p: int) -> list[list[str]]:
    """[e_n, e_{n−1}, …, e_0]: each step evaluates one operation of what is written (the leftmost operation on two
    numbers in the reader's parse of the previous step); e_0 is the value. Each step is a function of the text
    of the previous one, not of the hidden generation tree (``3 + (5 − 1)`` is written ``3 + 5 − 1``)."""
    steps = [render(root)]
    tree = parse(steps[0])
    while _reduce_leftmost(tree, p):
        steps.append(render(tree))
        tree = parse(steps[-1])
    return steps


def cot_length(num_ops: int) -> int:
    """An upper bound on the tokens of ``e_n = … = v <eos>``: e_k has ≤ k + 1 numbers, k operators and 2k
    parentheses, so Σ_k (4k + 2) + 1 = 2n(n + 1) + 2(n + 1) + 1 (with its "=" or "<eos>" after each step)."""
    return 2 * num_ops * (num_ops + 1) + 2 * (num_ops + 1) + 1


def direct_length(num_ops: int) -> int:
    """An upper bound on the tokens of ``e_n = v <eos>``."""
    return 4 * num_ops + 1 + 3


class Arithmetic:
    """Batches of arithmetic expressions over F_p in the direct or CoT format (see the module docstring).

    ``num_ops`` is the largest number of operators; each row draws its count uniformly from ``min_ops … num_ops``
    (the official generator's ``--under`` option also mixes in shorter expressions). Rows are right-padded with
    ``<pad>`` to ``seq_len + 1`` tokens; ``seq_len`` defaults to the longest possible row."""

    def __init__(self, *, num_ops: int = 4, min_ops: int | None = None, modulus: int = 11, fmt: str = "cot",
                 seq_len: int | None = None, seed: int = 0):
        for name, value in (("num_ops", num_ops), ("modulus", modulus)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise SeqzooError(f"arithmetic {name} must be a positive integer, got {value!r}")
        min_ops = num_ops if min_ops is None else min_ops
        if isinstance(min_ops, bool) or not isinstance(min_ops, (int, np.integer)) or not 1 <= min_ops <= num_ops:
            raise SeqzooError(f"arithmetic min_ops must be an integer in 1 … num_ops={num_ops}, got {min_ops!r}")
        if modulus < 2 or any(modulus % d == 0 for d in range(2, int(modulus ** 0.5) + 1)):
            raise SeqzooError(f"arithmetic modulus must be a prime (division needs a field), got {modulus}")
        if fmt not in FORMATS:
            raise SeqzooError(f"unknown arithmetic format {fmt!r}; valid: {', '.join(FORMATS)}")
        self.num_ops, self.min_ops, self.modulus, self.fmt, self.seed = int(num_ops), int(min_ops), int(modulus), \
            fmt, seed
        self.tokens = [str(i) for i in range(modulus)] + list(OPERATORS) + ["(", ")", "=", "<eos>", "<pad>"]
        self.token_id = {t: i for i, t in enumerate(self.tokens)}
        self.vocab_size = len(self.tokens)
        self.eq, self.eos, self.pad = self.token_id["="], self.token_id["<eos>"], self.token_id["<pad>"]
        needed = (cot_length if fmt == "cot" else direct_length)(self.num_ops) - 1
        if seq_len is None:
            seq_len = needed
        if isinstance(seq_len, bool) or not isinstance(seq_len, (int, np.integer)) or seq_len < needed:
            raise SeqzooError(f"arithmetic ({fmt}, num_ops={num_ops}) needs seq_len >= {needed}, got {seq_len!r}")
        self.seq_len = int(seq_len)

    def encode(self, words: list[str]) -> list[int]:
        return [self.token_id[w] for w in words]

    def decode(self, ids) -> list[str]:
        return [self.tokens[int(i)] for i in ids]

    def example(self, rng: np.random.Generator, num_ops: int | None = None) -> dict:
        """One expression: its tree, value, derivation and token ids (prompt = expression and "=")."""
        n = int(rng.integers(self.min_ops, self.num_ops + 1)) if num_ops is None else num_ops
        tree = random_expression(n, self.modulus, rng)
        steps = derivation(tree, self.modulus)
        answer = evaluate(tree, self.modulus)
        words = steps[0] + ["="]
        body = [w for s in steps[1:] for w in s + ["="]][:-1] if self.fmt == "cot" else [str(answer)]
        return {"tree": tree, "num_ops": n, "answer": answer, "steps": steps,
                "prompt": self.encode(words), "output": self.encode(body) + [self.eos]}

    def _rng(self, split: str, index: int, num_ops: int | None) -> np.random.Generator:
        if split not in SPLITS:
            raise SeqzooError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        return np.random.default_rng([self.seed, SPLITS[split], index, 0 if num_ops is None else num_ops])

    def examples(self, split: str, index: int, batch_size: int, num_ops: int | None = None) -> list[dict]:
        if num_ops is not None and not 1 <= num_ops <= self.num_ops:
            raise SeqzooError(f"num_ops must lie in 1 … {self.num_ops} for this task, got {num_ops}")
        rng = self._rng(split, index, num_ops)
        return [self.example(rng, num_ops) for _ in range(batch_size)]

    def get_batch(self, split: str, index: int, batch_size: int, num_ops: int | None = None) -> dict:
        rows = np.full((batch_size, self.seq_len + 1), self.pad, dtype=np.int64)
        mask = np.zeros((batch_size, self.seq_len), dtype=bool)
        for b, ex in enumerate(self.examples(split, index, batch_size, num_ops)):
            seq = ex["prompt"] + ex["output"]
            rows[b, :len(seq)] = seq
            mask[b, len(ex["prompt"]) - 1: len(seq) - 1] = True  # targets after the first "=", through <eos>
        data = torch.from_numpy(rows)
        return {"inputs": data[:, :-1], "targets": data[:, 1:], "loss_mask": torch.from_numpy(mask)}

    def answer_of(self, output_ids) -> int | None:
        """The value a generated output claims: the number just before its first <eos> (None if there is none)."""
        ids = list(output_ids)
        if self.eos in ids:
            ids = ids[:ids.index(self.eos)]
        else:
            return None
        if not ids or ids[-1] >= self.modulus:
            return None
        return int(ids[-1])

    @torch.no_grad()
    def generate(self, model, prompts: list[list[int]], max_new: int) -> list[list[int]]:
        """Greedy decoding by re-running the model on each prefix (works for every mixer; rows stop at <eos>)."""
        device = next(model.parameters()).device
        batch = len(prompts)
        lengths = torch.tensor([len(p) for p in prompts], device=device)
        buf = torch.full((batch, int(lengths.max()) + max_new), self.pad, dtype=torch.long, device=device)
        for b, p in enumerate(prompts):
            buf[b, :len(p)] = torch.tensor(p, device=device)
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        rows = torch.arange(batch, device=device)
        for _ in range(max_new):
            logits, _ = model(buf[:, :int(lengths.max())])
            nxt = logits[rows, lengths - 1].argmax(-1)
            active = ~done
            buf[rows[active], lengths[active]] = nxt[active]
            lengths = lengths + active.long()
            done |= active & (nxt == self.eos)
            if bool(done.all()):
                break
        return [buf[b, len(p):].tolist() for b, p in enumerate(prompts)]

    @torch.no_grad()
    def evaluate_model(self, model, *, batches: int = 8, batch_size: int = 64, split: str = "val",
                       num_ops: int | None = None) -> dict:
        """``answer_accuracy`` (greedy generation, the arena metric), teacher-forced token ``accuracy`` and
        ``loss`` on the scored positions, and ``chance`` = 1/p."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        correct = count = hits = scored = 0
        loss_sum = 0.0
        max_new = self.seq_len + 1
        for index in range(batches):
            examples = self.examples(split, index, batch_size, num_ops)
            outputs = self.generate(model, [ex["prompt"] for ex in examples], max_new)
            for ex, out in zip(examples, outputs):
                correct += self.answer_of(out) == ex["answer"]
            count += len(examples)
            batch = {k: v.to(device) for k, v in self.get_batch(split, index, batch_size, num_ops).items()}
            logits, _ = model(batch["inputs"])
            mask = batch["loss_mask"]
            hits += int(((logits.argmax(-1) == batch["targets"]) & mask).sum())
            scored += int(mask.sum())
            loss_sum += float(torch.nn.functional.cross_entropy(logits[mask].float(), batch["targets"][mask],
                                                                reduction="sum"))
        model.train(was_training)
        return {"answer_accuracy": correct / max(count, 1), "accuracy": hits / max(scored, 1),
                "loss": loss_sum / max(scored, 1), "chance": 1.0 / self.modulus}


__all__ = ["Arithmetic", "FORMATS", "Node", "OPERATORS", "apply", "cot_length", "derivation", "direct_length",
           "evaluate", "parse", "random_expression", "render"]
