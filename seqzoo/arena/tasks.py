"""Registry of arena tasks: a name maps to a factory that builds a :class:`BatchSource` for a sequence length.

The arena grid names tasks by string, so every task needs one uniform way to be built at a given sequence length
with a seed and its own options (e.g. ``num_kv_pairs`` for MQAR). Each entry also says which metric the arena
ranks by (a key of :func:`seqzoo.tasks.metrics.token_accuracy`'s result) and its default sequence length.
Built sources expose ``vocab_size`` and ``seq_len`` so the runner can size the model and its state.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

from ..core.data import BatchSource
from ..core.errors import SeqzooError, choice_error
from ..tasks.icl.regression import ICLRegression
from ..tasks.synthetic import MQAR, SelectiveCopying
from ..tasks.synthetic.induction_heads import InductionHeads


@dataclass(frozen=True)
class ArenaTask:
    name: str
    factory: Callable[..., BatchSource]  # factory(seq_len=..., seed=..., **options) -> BatchSource
    default_seq_len: int
    metric: str = "accuracy"
    summary: str = ""

    def options(self) -> list[str]:
        return [p for p in inspect.signature(self.factory).parameters if p not in ("seq_len", "seed")]

    def build(self, seq_len: int | None = None, seed: int = 0, **options) -> BatchSource:
        unknown = [k for k in options if k not in self.options()]
        if unknown:
            raise SeqzooError(f"unknown option {unknown[0]!r} for arena task {self.name!r}; "
                              f"valid: {', '.join(self.options()) or '(none)'}")
        source = self.factory(seq_len=seq_len or self.default_seq_len, seed=seed, **options)
        if getattr(source, "seq_len", None) is None or getattr(source, "vocab_size", None) is None:
            raise SeqzooError(f"arena task {self.name!r} built a source without seq_len/vocab_size attributes")
        return source


_TASKS: dict[str, ArenaTask] = {}


def register_task(task: ArenaTask) -> ArenaTask:
    if task.name in _TASKS:
        raise SeqzooError(f"arena task {task.name!r} is registered twice")
    _TASKS[task.name] = task
    return task


def list_tasks() -> list[str]:
    return sorted(_TASKS)


def get_task(name: str) -> ArenaTask:
    if name not in _TASKS:
        raise choice_error("arena task", name, _TASKS)
    return _TASKS[name]


def _mqar(*, seq_len: int, seed: int, vocab_size: int = 64, num_kv_pairs: int = 4, power_a: float = 0.01):
    return MQAR(vocab_size=vocab_size, seq_len=seq_len, num_kv_pairs=num_kv_pairs, power_a=power_a, seed=seed)


def _selective_copying(*, seq_len: int, seed: int, vocab_size: int = 16, num_tokens: int = 4):
    if seq_len <= num_tokens:
        raise SeqzooError(f"selective_copying needs seq_len > num_tokens, got seq_len={seq_len}, "
                          f"num_tokens={num_tokens}")
    return SelectiveCopying(vocab_size=vocab_size, context_len=seq_len - num_tokens, num_tokens=num_tokens, seed=seed)


def _induction_heads(*, seq_len: int, seed: int, vocab_size: int = 32):
    return InductionHeads(vocab_size=vocab_size, seq_len=seq_len, seed=seed)


def _icl_regression(*, seq_len: int, seed: int, d: int = 5, function: str = "linear", noise_std: float = 0.0):
    if seq_len < 2 or seq_len % 2:
        raise SeqzooError(f"icl_regression needs an even seq_len >= 2 (x, y token pairs), got {seq_len}")
    return ICLRegression(d=d, n_points=seq_len // 2, function=function, noise_std=noise_std, seed=seed)


register_task(ArenaTask("mqar", _mqar, 64, summary="multi-query associative recall (Zoology)"))
register_task(ArenaTask("selective_copying", _selective_copying, 64, summary="selective copying (Mamba §3.1)"))
register_task(ArenaTask("induction_heads", _induction_heads, 64, summary="copy the token after the earlier trigger"))
register_task(ArenaTask("icl_regression", _icl_regression, 22, metric="r2",
                        summary="in-context regression (Garg et al.); score r2 = 1 − normalised squared error"))


def _text_bytes(*, seq_len: int, seed: int, corpus: str = "kjv"):
    from ..tasks.text.bytes import ByteCorpus  # byte-level LM on a built-in corpus or a text path (model sweeps)

    return ByteCorpus.from_source(corpus, seq_len, seed=seed)


register_task(ArenaTask("text_bytes", _text_bytes, 64, summary="next-byte prediction on text (built-in KJV corpus); "
                        "a d_models sweep gives the report's scaling-law fit"))


# -- in-context language learning (REGBENCH DFAs) and chain-of-thought arithmetic (Feng et al.) -----------------
def _icll(*, seq_len: int, seed: int, num_symbols: int = 18, min_states: int = 4, max_states: int = 12,
          min_alphabet: int = 4, max_alphabet: int = 18, max_edges: int = 4, min_len: int = 1, max_len: int = 20):
    from ..tasks.icll import ICLL

    return ICLL(seq_len=seq_len, num_symbols=num_symbols, min_states=min_states, max_states=max_states,
                min_alphabet=min_alphabet, max_alphabet=max_alphabet, max_edges=max_edges, min_len=min_len,
                max_len=max_len, seed=seed)


def _arithmetic(fmt: str):
    def factory(*, seq_len: int, seed: int, num_ops: int = 4, min_ops: int = 1, modulus: int = 11):
        from ..tasks.cot import Arithmetic

        return Arithmetic(num_ops=num_ops, min_ops=min_ops, modulus=modulus, fmt=fmt, seq_len=seq_len, seed=seed)

    return factory


register_task(ArenaTask("icll", _icll, 256, metric="dfa_accuracy",
                        summary="in-context language learning of random DFAs (REGBENCH); score = fraction of greedy "
                                "next tokens valid under the DFA"))
register_task(ArenaTask("arithmetic_cot", _arithmetic("cot"), 50, metric="answer_accuracy",
                        summary="arithmetic over F_11 with a step-by-step derivation (Feng et al.); score = answer "
                                "accuracy of greedy generation (chance 1/11)"))
register_task(ArenaTask("arithmetic_direct", _arithmetic("direct"), 19, metric="answer_accuracy",
                        summary="arithmetic over F_11 answered directly (Feng et al.); score = answer accuracy"))


def _pathfinder(*, seq_len: int, seed: int, distractors: int = 1, dash: int = 2, gap: int = 1):
    """LRA Pathfinder (seqzoo/tasks/synthetic/pathfinder.py); ``seq_len`` is the pixel count side² (the query
    token comes on top)."""
    from ..tasks.synthetic.pathfinder import Pathfinder

    side = int(round(seq_len ** 0.5))
    if side * side != seq_len or side < 12:
        raise SeqzooError(f"pathfinder needs seq_len = side² (a perfect square >= 144, e.g. 256 or 1024), "
                          f"got {seq_len}")
    return Pathfinder(side=side, distractors=distractors, dash=dash, gap=gap, seed=seed)


register_task(ArenaTask("pathfinder", _pathfinder, 256,
                        summary="LRA Pathfinder: are the two dots joined by a dashed path? (class at a query token)"))
