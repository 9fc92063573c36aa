"""Random deterministic finite automata (DFAs) for in-context language learning, REGBENCH-style.

Paper: "In-Context Language Learning: Architectures and Algorithms", Akyürek, Wang, Kim and Andreas, ICML 2024,
arXiv 2401.12973. Official code: github.com/berlino/seq_icl (``src/dataloaders/dfa.py``, read for this file).

A DFA here is A = (Q, Σ, δ, q₀ = 0, F = Q): states Q = {0, …, n−1}, an alphabet Σ ⊂ {1, …, num_symbols} (token ids;
id 0 is kept for the string separator), a *partial* transition function δ: Q × Σ → Q, and every state accepting.
The language is L(A) = {w ∈ Σ* : δ*(q₀, w) is defined}, i.e. a word is accepted iff every step has an edge.

Sampling (as in the official code, with the paper's ranges as defaults):

    n ~ U{min_states … max_states}          (paper: 4–12 states)
    |Σ| ~ U{min_alphabet … max_alphabet}    (paper: alphabet of 4–18 symbols), Σ drawn without replacement
    for each state q: m_q ~ U{1 … min(max_edges, |Σ|)} outgoing edges with distinct symbols drawn from Σ,
                      each to a target state drawn uniformly from Q (self-loops allowed, as in the code)

A string is a uniform random walk from q₀: at state q the next symbol is drawn uniformly from the symbols with an
edge out of q (the probabilistic automaton with uniform transition probabilities of the paper's Fig. 2).
Every sampled string is accepted; the validity oracle :meth:`DFA.valid_next` gives the set of symbols that
extend a prefix inside L(A), which is what the ICLL accuracy metric scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ...core.errors import SeqzooError


@dataclass(frozen=True)
class DFA:
    """A partial DFA over symbol ids; ``transitions[q]`` maps a symbol to the next state. All states accept."""

    transitions: tuple[dict, ...]
    alphabet: tuple[int, ...]

    @property
    def num_states(self) -> int:
        return len(self.transitions)

    def step(self, state: int | None, symbol: int) -> int | None:
        """δ(state, symbol), or None when there is no such edge (or the prefix is already rejected)."""
        if state is None:
            return None
        return self.transitions[state].get(int(symbol))

    def run(self, word) -> int | None:
        """δ*(q₀, word): the state after reading ``word``, or None if some step has no edge."""
        state: int | None = 0
        for symbol in word:
            state = self.step(state, symbol)
        return state

    def accepts(self, word) -> bool:
        """Whether ``word`` (a sequence of symbol ids) is in L(A)."""
        return self.run(word) is not None

    @cached_property
    def out_symbols(self) -> tuple[tuple[int, ...], ...]:
        """Per state, the symbols with an edge out of it, sorted (computed once per DFA)."""
        return tuple(tuple(sorted(edges)) for edges in self.transitions)

    @cached_property
    def valid_table(self) -> np.ndarray:
        """``[num_states, max symbol + 1]`` bool: ``valid_table[q, a]`` iff δ(q, a) is defined."""
        table = np.zeros((self.num_states, max(self.alphabet, default=0) + 1), dtype=bool)
        for state, symbols in enumerate(self.out_symbols):
            table[state, list(symbols)] = True
        return table

    def valid_next(self, state: int) -> list[int]:
        """The symbols with an edge out of ``state`` (sorted)."""
        return list(self.out_symbols[state])

    def sample_word(self, length: int, rng: np.random.Generator) -> list[int]:
        """A uniform random walk of ``length`` symbols from q₀ (always accepted)."""
        state, word = 0, []
        for _ in range(length):
            symbols = self.out_symbols[state]
            symbol = symbols[int(rng.integers(len(symbols)))]
            word.append(symbol)
            state = self.transitions[state][symbol]
        return word


def _check_range(name: str, lo: int, hi: int, floor: int) -> None:
    for v in (lo, hi):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise SeqzooError(f"{name} bounds must be integers, got {v!r}")
    if not floor <= lo <= hi:
        raise SeqzooError(f"{name} range must satisfy {floor} <= min <= max, got min={lo}, max={hi}")


class RandomDFASampler:
    """Draws random DFAs with the REGBENCH recipe (see the module docstring). Symbols are ids 1 … num_symbols."""

    def __init__(self, *, num_symbols: int = 18, min_states: int = 4, max_states: int = 12, min_alphabet: int = 4,
                 max_alphabet: int = 18, max_edges: int = 4):
        _check_range("num_states", min_states, max_states, 1)
        _check_range("alphabet size", min_alphabet, max_alphabet, 1)
        if isinstance(num_symbols, bool) or not isinstance(num_symbols, int) or num_symbols < 1:
            raise SeqzooError(f"num_symbols must be a positive integer, got {num_symbols!r}")
        if max_alphabet > num_symbols:
            raise SeqzooError(f"max_alphabet={max_alphabet} exceeds num_symbols={num_symbols}; "
                              f"valid: max_alphabet <= num_symbols")
        if isinstance(max_edges, bool) or not isinstance(max_edges, int) or max_edges < 1:
            raise SeqzooError(f"max_edges must be a positive integer, got {max_edges!r}")
        self.num_symbols, self.max_edges = num_symbols, max_edges
        self.min_states, self.max_states = min_states, max_states
        self.min_alphabet, self.max_alphabet = min_alphabet, max_alphabet

    def sample(self, rng: np.random.Generator) -> DFA:
        n = int(rng.integers(self.min_states, self.max_states + 1))
        size = int(rng.integers(self.min_alphabet, self.max_alphabet + 1))
        alphabet = tuple(sorted(int(s) for s in rng.choice(np.arange(1, self.num_symbols + 1), size, replace=False)))
        transitions = []
        for _ in range(n):
            m = int(rng.integers(1, min(self.max_edges, size) + 1))
            symbols = rng.choice(np.asarray(alphabet), m, replace=False)
            targets = rng.integers(0, n, m)
            transitions.append({int(s): int(t) for s, t in zip(symbols, targets)})
        return DFA(tuple(transitions), alphabet)


__all__ = ["DFA", "RandomDFASampler"]
