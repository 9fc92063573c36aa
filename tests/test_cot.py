"""Chain-of-thought arithmetic over F_p (Feng et al.): expressions, derivations, batches, metric, arena."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from torch import nn

from seqzoo.core.errors import SeqzooError
from seqzoo.tasks.cot import Arithmetic, apply, derivation, evaluate, random_expression, render

P = 11


def python_value(tokens: list[str], p: int = P) -> int:
    """Independent oracle: Python's own parser and precedence over exact rationals, then reduced mod p (valid
    because no divisor's numerator is a multiple of p when the F_p evaluation never divides by zero)."""
    text = " ".join(f"Fraction({t})" if t.isdigit() else t for t in tokens)
    value = eval(text, {"Fraction": Fraction})  # noqa: S307 — tokens come from our own generator
    return value.numerator * pow(value.denominator, p - 2, p) % p


def parse(tokens: list[str]):
    """A small recursive-descent parser (test-only) into (op, left, right) / int trees."""
    pos = 0

    def atom():
        nonlocal pos
        if tokens[pos] == "(":
            pos += 1
            node = expr()
            assert tokens[pos] == ")"
            pos += 1
            return node
        pos += 1
        return int(tokens[pos - 1])

    def level(ops, sub):
        nonlocal pos
        node = sub()
        while pos < len(tokens) and tokens[pos] in ops:
            op = tokens[pos]
            pos += 1
            node = (op, node, sub())
        return node

    def term():
        return level("*/", atom)

    def expr():
        return level("+-", term)

    tree = expr()
    assert pos == len(tokens)
    return tree


def one_reduction(a, b) -> bool:
    """True iff tree ``b`` is tree ``a`` with exactly one operation on two numbers replaced by its value."""
    if isinstance(a, int):
        return False
    op, left, right = a
    if isinstance(left, int) and isinstance(right, int) and b == apply(op, left, right, P):
        return True
    if isinstance(b, int) or b[0] != op:
        return False
    return (one_reduction(left, b[1]) and right == b[2]) or (left == b[1] and one_reduction(right, b[2]))


def test_apply_is_field_arithmetic():
    for a in range(P):
        for b in range(1, P):
            assert apply("*", apply("/", a, b, P), b, P) == a
        assert apply("+", apply("-", a, 3, P), 3, P) == a
    with pytest.raises(SeqzooError, match="division by zero"):
        apply("/", 3, 0, P)


def test_rendering_and_values_agree_with_python():
    rng = np.random.default_rng(0)
    for _ in range(600):
        tree = random_expression(int(rng.integers(1, 7)), P, rng)
        tokens = render(tree)
        assert python_value(tokens) == evaluate(tree, P)


def test_minimal_parentheses_by_hand():
    from seqzoo.tasks.cot.arithmetic import Node

    def op(o, a, b):
        return Node(0, o, a if isinstance(a, Node) else Node(a), b if isinstance(b, Node) else Node(b))

    assert render(op("-", 1, op("-", 2, 3))) == "1 - ( 2 - 3 )".split()
    assert render(op("-", op("-", 1, 2), 3)) == "1 - 2 - 3".split()
    assert render(op("+", 1, op("-", 2, 3))) == "1 + 2 - 3".split()
    assert render(op("*", op("+", 1, 2), 3)) == "( 1 + 2 ) * 3".split()
    assert render(op("/", 6, op("*", 2, 3))) == "6 / ( 2 * 3 )".split()
    assert render(op("+", 1, op("*", 2, 3))) == "1 + 2 * 3".split()


def test_every_cot_step_is_one_valid_reduction_and_ends_at_the_value():
    rng = np.random.default_rng(1)
    for _ in range(400):
        n = int(rng.integers(1, 7))
        tree = random_expression(n, P, rng)
        steps = derivation(tree, P)
        value = evaluate(tree, P)
        assert len(steps) == n + 1 and steps[-1] == [str(value)]
        for k, (before, after) in enumerate(zip(steps, steps[1:])):
            assert python_value(before) == value and python_value(after) == value
            assert sum(t in "+-*/" for t in before) == n - k and sum(t in "+-*/" for t in after) == n - k - 1
            assert one_reduction(parse(before), parse(after)), (before, after)
            assert render_roundtrip(after)


def render_roundtrip(tokens):
    """Fewest parentheses: re-rendering the parsed step gives the same tokens (no redundant brackets)."""
    from seqzoo.tasks.cot.arithmetic import Node

    def build(t):
        return Node(t) if isinstance(t, int) else Node(0, t[0], build(t[1]), build(t[2]))

    return render(build(parse(tokens))) == tokens


def test_answers_are_spread_over_the_field():
    task = Arithmetic(num_ops=5, min_ops=5, fmt="direct")
    answers = [ex["answer"] for ex in task.examples("train", 0, 1100)]
    counts = np.bincount(answers, minlength=P)
    assert counts.min() > 60  # close to uniform (100 each), so chance is 1/p


def test_formats_and_loss_mask():
    for fmt in ("direct", "cot"):
        task = Arithmetic(num_ops=4, min_ops=1, fmt=fmt, seed=2)
        batch = task.get_batch("train", 3, 16)
        examples = task.examples("train", 3, 16)
        assert batch["inputs"].shape == (16, task.seq_len)
        assert torch.equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
        for row, ex, tgt, mask in zip(batch["inputs"], examples, batch["targets"], batch["loss_mask"]):
            prompt, out = ex["prompt"], ex["output"]
            assert row[:len(prompt)].tolist() == prompt and task.decode(prompt)[-1] == "="
            assert tgt[mask].tolist() == out  # exactly the output after the first "=", through <eos>
            words = task.decode(out)
            assert words[-1] == "<eos>" and words[-2] == str(ex["answer"])
            if fmt == "direct":
                assert len(out) == 2
            else:
                assert words[:-1] == [w for s in ex["steps"][1:] for w in s + ["="]][:-1]
                assert task.answer_of(out) == ex["answer"]


def test_longest_rows_fit_and_batches_are_deterministic():
    for fmt in ("direct", "cot"):
        task = Arithmetic(num_ops=6, fmt=fmt)
        for ex in task.examples("train", 0, 200):
            assert len(ex["prompt"]) + len(ex["output"]) <= task.seq_len + 1
    task = Arithmetic(num_ops=3, min_ops=1, seed=5)
    a, b = task.get_batch("val", 1, 8), task.get_batch("val", 1, 8)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["inputs"], task.get_batch("val", 2, 8)["inputs"])
    assert not torch.equal(a["inputs"], task.get_batch("train", 1, 8)["inputs"])
    assert not torch.equal(a["inputs"], Arithmetic(num_ops=3, min_ops=1, seed=6).get_batch("val", 1, 8)["inputs"])


class RuleModel(nn.Module):
    """A fake LM whose next token is ``rule(prefix)`` (to test generation and the metric)."""

    def __init__(self, task, rule):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.vocab, self.rule = task.vocab_size, rule

    def forward(self, inputs, state=None):
        logits = torch.zeros(*inputs.shape, self.vocab)
        for b, row in enumerate(inputs.tolist()):
            for t in range(len(row)):
                logits[b, t, self.rule(tuple(row[:t + 1]))] = 1.0
        return logits, None


def oracle(task, examples):
    table = {}
    for ex in examples:
        seq = ex["prompt"] + ex["output"]
        for t in range(len(seq) - 1):
            table[tuple(seq[:t + 1])] = seq[t + 1]
    return RuleModel(task, lambda prefix: table.get(prefix, task.pad))


@pytest.mark.parametrize("fmt", ["direct", "cot"])
def test_answer_accuracy_oracle_and_stub(fmt):
    task = Arithmetic(num_ops=2, min_ops=1, fmt=fmt, seed=0)
    examples = task.examples("val", 0, 12)
    assert task.evaluate_model(oracle(task, examples), batches=1, batch_size=12)["answer_accuracy"] == 1.0
    # a stub that always says "0 <eos>" right away is right only when the answer is 0
    stub = RuleModel(task, lambda prefix: task.token_id["0"] if prefix[-1] == task.eq else task.eos)
    m = task.evaluate_model(stub, batches=1, batch_size=12)
    assert m["answer_accuracy"] == pytest.approx(np.mean([ex["answer"] == 0 for ex in examples]))
    assert m["chance"] == pytest.approx(1 / 11)
    # a stub that copies the expression's first number as its answer is not the oracle either
    first = RuleModel(task, lambda prefix: prefix[0] if prefix[-1] == task.eq else task.eos)
    assert task.evaluate_model(first, batches=1, batch_size=12)["answer_accuracy"] < 1.0


def test_answer_of_needs_eos_and_a_number():
    task = Arithmetic(num_ops=2)
    ids = task.encode(["3", "+", "4", "=", "7"])
    assert task.answer_of(ids + [task.eos, task.pad]) == 7
    assert task.answer_of(ids) is None
    assert task.answer_of(task.encode(["3", "+"]) + [task.eos]) is None


@pytest.mark.parametrize("kwargs, needle", [
    ({"modulus": 10}, "modulus must be a prime"),
    ({"fmt": "scratchpad"}, "unknown arithmetic format 'scratchpad'; valid: direct, cot"),
    ({"num_ops": 0}, "num_ops must be a positive integer"),
    ({"num_ops": 3, "min_ops": 4}, "min_ops must be an integer in 1 … num_ops=3"),
    ({"num_ops": 4, "seq_len": 20}, "needs seq_len >= 50"),
])
def test_bad_options_are_one_line_errors(kwargs, needle):
    with pytest.raises(SeqzooError, match=needle) as info:
        Arithmetic(**kwargs)
    assert "\n" not in str(info.value)


def test_bad_split_and_length():
    task = Arithmetic(num_ops=2)
    with pytest.raises(SeqzooError, match="unknown split 'dev'"):
        task.get_batch("dev", 0, 2)
    with pytest.raises(SeqzooError, match="num_ops must lie in 1 … 2"):
        task.get_batch("val", 0, 2, num_ops=3)


def test_arena_tasks_and_run():
    from seqzoo.arena.runner import run_one
    from seqzoo.arena.tasks import get_task

    for name, fmt in (("arithmetic_cot", "cot"), ("arithmetic_direct", "direct")):
        entry = get_task(name)
        assert entry.metric == "answer_accuracy"
        source = entry.build(None, 0)
        assert source.fmt == fmt and source.vocab_size == 20
    with pytest.raises(SeqzooError, match="needs seq_len >= 50"):
        get_task("arithmetic_cot").build(32, 0)
    config = {"task": "arithmetic_cot", "task_options": {"num_ops": 2}, "seq_len": 18, "mixer": "attention",
              "mixer_options": {}, "d_model": 16, "n_layers": 1, "lr": 1e-3, "seed": 0, "steps": 2,
              "batch_size": 4, "eval_batches": 1}
    metrics = run_one(config)
    assert metrics["metric"] == "answer_accuracy" and metrics["score"] == metrics["answer_accuracy"]


def test_repro_quick_runs():
    from seqzoo.repro import get_repro

    result = get_repro("cot-theory").run(True)
    assert len(result.checks) == 3 and "chance 0.091" in " ".join(result.notes)
    with pytest.raises(SeqzooError, match="steps must be positive"):
        get_repro("cot-theory").run(True, steps="0")
