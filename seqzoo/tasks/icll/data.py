"""The in-context language learning (ICLL) task: prompts of strings from one random DFA language, REGBENCH-style.

Paper: "In-Context Language Learning: Architectures and Algorithms", Akyürek, Wang, Kim and Andreas, ICML 2024,
arXiv 2401.12973; official code github.com/berlino/seq_icl (``src/dataloaders/dfa.py``).

Each row of a batch has its own DFA A (drawn by :class:`~seqzoo.tasks.icll.dfa.RandomDFASampler`) and is

    |  w_1  |  w_2  |  …  |  w_k  | …        (token 0 = "|", the separator; symbols are ids 1 … num_symbols)

with w_i independent uniform random walks of A of length U{min_len … max_len}, packed until the row holds
``seq_len + 1`` tokens (the last string is cut). Training is plain next-token prediction on every position.

Metric (``dfa_accuracy``, the paper's "accuracy": the greedy next token must be a valid continuation under the
DFA). At a position t whose true next token x_{t+1} is a symbol, with q_t = δ*(q₀, current string so far), the
prediction ŷ_t counts as correct iff ŷ_t ∈ {a : δ(q_t, a) defined}. Positions whose true next token is the
separator are not scored (every state accepts, so "|" would always be valid and a constant "|" predictor would
score 1), and neither is the first string (nothing to learn in context yet). The in-context n-gram baselines
(:mod:`seqzoo.tasks.icll.ngram`) are scored on exactly the same positions.

Batches are a pure function of ``(seed, split, index, batch_size)``; train, val and test draw from disjoint random
streams (DFAs repeat across splits only by chance, which is negligible for these sizes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...core.errors import SeqzooError
from .dfa import DFA, RandomDFASampler
from .ngram import ngram_predict

SEPARATOR = 0
SPLITS = {"train": 0, "val": 1, "test": 2}


@dataclass
class ICLLSample:
    """Token rows ``[B, seq_len + 1]``, per-position validity sets ``valid [B, seq_len, V]`` (which predictions for
    x_{t+1} are correct), the scored positions ``scored [B, seq_len]`` and the DFAs. ``valid`` and ``scored`` are
    None in samples drawn ``with_validity=False`` (training batches need only the tokens)."""

    tokens: np.ndarray
    valid: np.ndarray | None
    scored: np.ndarray | None
    dfas: list


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise SeqzooError(f"ICLL {name} must be a positive integer, got {value!r}")
    return int(value)


class ICLL:
    """REGBENCH-style in-context language learning batches (see the module docstring)."""

    def __init__(self, *, seq_len: int = 256, num_symbols: int = 18, min_states: int = 4, max_states: int = 12,
                 min_alphabet: int = 4, max_alphabet: int = 18, max_edges: int = 4, min_len: int = 1,
                 max_len: int = 20, seed: int = 0):
        self.seq_len = _positive_int("seq_len", seq_len)
        self.min_len, self.max_len = _positive_int("min_len", min_len), _positive_int("max_len", max_len)
        if self.min_len > self.max_len:
            raise SeqzooError(f"ICLL string lengths need min_len <= max_len, got {min_len} > {max_len}")
        if self.seq_len < 2 * (self.max_len + 1):
            raise SeqzooError(f"ICLL seq_len={seq_len} must hold at least two strings: seq_len >= 2·(max_len + 1) = "
                              f"{2 * (self.max_len + 1)}")
        self.sampler = RandomDFASampler(num_symbols=num_symbols, min_states=min_states, max_states=max_states,
                                        min_alphabet=min_alphabet, max_alphabet=max_alphabet, max_edges=max_edges)
        self.num_symbols, self.seed = num_symbols, seed
        self.vocab_size = num_symbols + 1

    def _tokens(self, dfa: DFA, rng: np.random.Generator) -> np.ndarray:
        """One row: strings of ``dfa`` between separators, ``seq_len + 1`` tokens (the last string cut)."""
        length = self.seq_len + 1
        tokens = [SEPARATOR]
        while len(tokens) < length:
            tokens.extend(dfa.sample_word(int(rng.integers(self.min_len, self.max_len + 1)), rng))
            tokens.append(SEPARATOR)
        return np.asarray(tokens[:length], dtype=np.int64)

    def _validity(self, dfa: DFA, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(valid ``[seq_len, V]``: the correct predictions of x_{t+1}; scored ``[seq_len]``) of one row."""
        states = np.empty(self.seq_len, dtype=np.int64)
        strings_done = np.empty(self.seq_len, dtype=np.int64)
        state, done = 0, 0
        for t in range(self.seq_len):
            if tokens[t] == SEPARATOR:
                state = 0
                done += t > 0
            else:
                state = dfa.transitions[state][int(tokens[t])]
            states[t], strings_done[t] = state, done
        valid = np.zeros((self.seq_len, self.vocab_size), dtype=bool)
        table = dfa.valid_table
        valid[:, :table.shape[1]] = table[states]
        scored = (tokens[1:] != SEPARATOR) & (strings_done >= 1)
        return valid, scored

    def sample(self, split: str, index: int, batch_size: int, *, with_validity: bool = True) -> ICLLSample:
        if split not in SPLITS:
            raise SeqzooError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        rng = np.random.default_rng([self.seed, SPLITS[split], index])
        rows, dfas = [], []
        for _ in range(batch_size):
            dfa = self.sampler.sample(rng)
            rows.append(self._tokens(dfa, rng)), dfas.append(dfa)
        tokens = np.stack(rows)
        if not with_validity:
            return ICLLSample(tokens, None, None, dfas)
        checks = [self._validity(dfa, row) for dfa, row in zip(dfas, tokens)]
        return ICLLSample(tokens, np.stack([c[0] for c in checks]), np.stack([c[1] for c in checks]), dfas)

    def get_batch(self, split: str, index: int, batch_size: int) -> dict[str, torch.Tensor]:
        data = torch.from_numpy(self.sample(split, index, batch_size, with_validity=False).tokens)
        return {"inputs": data[:, :-1], "targets": data[:, 1:],
                "loss_mask": torch.ones(batch_size, self.seq_len, dtype=torch.bool)}

    @staticmethod
    def validity(preds: np.ndarray, sample: ICLLSample) -> float:
        """Fraction of scored positions where ``preds [B, seq_len]`` is a valid next symbol."""
        b, t = np.nonzero(sample.scored)
        return float(sample.valid[b, t, preds[b, t]].mean()) if len(b) else 0.0

    def baselines(self, *, split: str = "val", batches: int = 4, batch_size: int = 64,
                  orders=(1, 2, 3, 4)) -> dict[str, float]:
        """DFA-validity accuracy of the in-context n-gram models (with backoff) on the evaluation positions."""
        hits = {n: 0.0 for n in orders}
        total = 0
        for index in range(batches):
            sample = self.sample(split, index, batch_size)
            count = int(sample.scored.sum())
            for n in orders:
                preds = ngram_predict(sample.tokens[:, :-1], n, self.vocab_size)
                hits[n] += self.validity(preds, sample) * count
            total += count
        return {f"ngram{n}_dfa_accuracy": hits[n] / max(total, 1) for n in orders}

    @torch.no_grad()
    def evaluate_model(self, model, *, batches: int = 8, batch_size: int = 64, split: str = "val") -> dict:
        """``dfa_accuracy`` (the arena metric), plain next-token ``accuracy`` and mean ``loss`` of ``model``."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        valid_hits = exact = total = 0
        loss_sum, loss_count = 0.0, 0
        for index in range(batches):
            sample = self.sample(split, index, batch_size)
            data = torch.from_numpy(sample.tokens).to(device)
            logits, _ = model(data[:, :-1])
            logits = logits.float()
            preds = logits.argmax(-1).cpu().numpy()
            count = int(sample.scored.sum())
            valid_hits += self.validity(preds, sample) * count
            b, t = np.nonzero(sample.scored)
            exact += int((preds[b, t] == sample.tokens[b, t + 1]).sum())
            total += count
            loss_sum += float(torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), data[:, 1:].reshape(-1), reduction="sum"))
            loss_count += data[:, 1:].numel()
        model.train(was_training)
        return {"dfa_accuracy": valid_hits / max(total, 1), "accuracy": exact / max(total, 1),
                "loss": loss_sum / max(loss_count, 1)}


__all__ = ["ICLL", "ICLLSample", "SEPARATOR"]
