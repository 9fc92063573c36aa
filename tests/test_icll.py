"""In-context language learning (REGBENCH-style): DFA sampler and oracle, n-gram baselines, batches, metric, arena."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seqzoo.core.errors import SeqzooError
from seqzoo.tasks.icll import ICLL, SEPARATOR, RandomDFASampler, ngram_predict, ngram_probabilities


def _dfas(count=40, seed=0, **kw):
    rng = np.random.default_rng(seed)
    sampler = RandomDFASampler(**kw)
    return [sampler.sample(rng) for _ in range(count)], rng


def test_sampler_respects_the_recipe():
    dfas, _ = _dfas(200, min_states=4, max_states=12, min_alphabet=4, max_alphabet=18, max_edges=4)
    for dfa in dfas:
        assert 4 <= dfa.num_states <= 12 and 4 <= len(dfa.alphabet) <= 18
        assert set(dfa.alphabet) <= set(range(1, 19)) and SEPARATOR not in dfa.alphabet
        for edges in dfa.transitions:
            assert 1 <= len(edges) <= 4
            assert set(edges) <= set(dfa.alphabet)
            assert all(0 <= q < dfa.num_states for q in edges.values())
    assert {d.num_states for d in dfas} == set(range(4, 13))  # the whole range is used


def test_oracle_accepts_sampled_strings_and_rejects_mutated_ones():
    dfas, rng = _dfas(60, seed=1)
    rejected = 0
    for dfa in dfas:
        for _ in range(5):
            word = dfa.sample_word(int(rng.integers(1, 30)), rng)
            assert dfa.accepts(word)
            # mutate one position to a symbol with no edge out of the state reached there
            i = int(rng.integers(len(word)))
            state = dfa.run(word[:i])
            invalid = [s for s in range(1, 19) if s not in dfa.transitions[state]]
            mutated = word[:i] + [invalid[int(rng.integers(len(invalid)))]] + word[i + 1:]
            assert not dfa.accepts(mutated)
            assert dfa.run(mutated) is None
            rejected += 1
    assert rejected == 300


def test_oracle_by_hand():
    from seqzoo.tasks.icll import DFA

    dfa = DFA(({1: 1, 2: 0}, {3: 0}), (1, 2, 3))  # 0 -1-> 1 -3-> 0, 0 -2-> 0
    assert dfa.accepts([]) and dfa.accepts([1, 3, 2, 2, 1, 3]) and dfa.accepts([1])
    assert not dfa.accepts([3]) and not dfa.accepts([1, 1]) and not dfa.accepts([1, 3, 3])
    assert dfa.valid_next(0) == [1, 2] and dfa.valid_next(1) == [3]


def test_batches_are_deterministic_and_shifted():
    task = ICLL(seq_len=64, max_len=10, seed=3)
    a, b = task.get_batch("train", 5, 4), task.get_batch("train", 5, 4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["inputs"], task.get_batch("train", 6, 4)["inputs"])
    assert not torch.equal(a["inputs"], task.get_batch("val", 5, 4)["inputs"])
    assert not torch.equal(a["inputs"], ICLL(seq_len=64, max_len=10, seed=4).get_batch("train", 5, 4)["inputs"])
    assert a["inputs"].shape == (4, 64) and a["loss_mask"].all()
    assert torch.equal(a["inputs"][:, 1:], a["targets"][:, :-1])
    assert int(a["inputs"].max()) < task.vocab_size and (a["inputs"][:, 0] == SEPARATOR).all()


def test_training_batches_skip_the_validity_sets_but_keep_the_tokens():
    """get_batch draws tokens only (the oracle's validity sets are for evaluation): the same tokens as a full
    sample, and every validity set equals the DFA's edges recomputed by stepping the row one token at a time."""
    task = ICLL(seq_len=64, seed=5)
    full, light = task.sample("train", 3, 6), task.sample("train", 3, 6, with_validity=False)
    assert np.array_equal(full.tokens, light.tokens) and light.valid is None and light.scored is None
    assert np.array_equal(task.get_batch("train", 3, 6)["inputs"].numpy(), full.tokens[:, :-1])
    for row, dfa, valid in zip(full.tokens, full.dfas, full.valid):
        state = 0
        for t in range(task.seq_len):
            state = 0 if row[t] == SEPARATOR else dfa.step(state, row[t])
            assert sorted(np.flatnonzero(valid[t])) == dfa.valid_next(state)


def test_every_complete_string_in_a_prompt_is_in_its_language():
    task = ICLL(seq_len=128, max_len=12, seed=0)
    sample = task.sample("val", 0, 8)
    for row, dfa in zip(sample.tokens, sample.dfas):
        cuts = np.nonzero(row == SEPARATOR)[0]
        complete = [row[a + 1: b].tolist() for a, b in zip(cuts[:-1], cuts[1:])]  # between separators
        assert len(complete) >= 2
        for word in complete:
            assert 1 <= len(word) <= 12 and dfa.accepts(word)
        assert set(int(w) for s in complete for w in s) <= set(dfa.alphabet)


def test_validity_metric_oracle_and_stubs():
    task = ICLL(seq_len=128, max_len=12, seed=0)
    sample = task.sample("val", 1, 8)
    truth = sample.tokens[:, 1:]
    assert task.validity(truth, sample) == 1.0  # the true continuation is always valid
    assert task.validity(np.full_like(truth, SEPARATOR), sample) == 0.0  # "always end the string" scores nothing
    # the scored positions: inside strings after the first, never where the next token is the separator
    b, t = np.nonzero(sample.scored)
    assert (sample.tokens[b, t + 1] != SEPARATOR).all()
    first_sep = [int(np.nonzero(row[1:] == SEPARATOR)[0][0]) + 1 for row in sample.tokens]
    assert all(t_ >= first_sep[b_] for b_, t_ in zip(b, t))
    # a random symbol is valid only sometimes
    rng = np.random.default_rng(0)
    assert 0.05 < task.validity(rng.integers(1, task.vocab_size, truth.shape), sample) < 0.6


def _brute_ngram(row, order, vocab):
    preds = []
    for t in range(len(row)):
        for n in range(order, 0, -1):
            counts = np.zeros(vocab, dtype=int)
            if n == 1:
                for j in range(t + 1):
                    counts[row[j]] += 1
            else:
                if t - n + 2 < 0:
                    continue
                ctx = list(row[t - n + 2: t + 1])
                for j in range(n - 2, t):
                    if list(row[j - n + 2: j + 1]) == ctx:
                        counts[row[j + 1]] += 1
            if counts.sum():
                preds.append(int(np.argmax(counts)))
                break
    return preds


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_ngram_matches_brute_force(order):
    rng = np.random.default_rng(order)
    tokens = rng.integers(0, 4, (3, 40))
    got = ngram_predict(tokens, order, 4)
    for b in range(3):
        assert got[b].tolist() == _brute_ngram(tokens[b].tolist(), order, 4)


def test_ngram_probabilities_are_distributions():
    tokens = np.array([[0, 1, 2, 0, 1, 2, 0, 1]])
    p = ngram_probabilities(tokens, 3, 3, smoothing=0.5)
    assert np.allclose(p.sum(-1), 1.0)
    # after "0 1" the 3-gram has seen "2" twice: (2 + 0.5) / (2 + 1.5)
    assert p[0, -1, 2] == pytest.approx(2.5 / 3.5)


def test_ngram_beats_unigram_on_dfa_data():
    task = ICLL(seq_len=192, max_len=15, seed=0)
    base = task.baselines(batches=1, batch_size=16, orders=(1, 2, 3))
    assert base["ngram3_dfa_accuracy"] > base["ngram2_dfa_accuracy"] > base["ngram1_dfa_accuracy"] + 0.1
    assert base["ngram3_dfa_accuracy"] > 0.75


def test_evaluate_model_keys_and_oracle_bound():
    from seqzoo.models import CausalLM, ModelConfig

    task = ICLL(seq_len=48, max_len=8, seed=0)
    torch.manual_seed(0)
    model = CausalLM(ModelConfig(vocab_size=task.vocab_size, d_model=16, n_layers=1, mixer="retention"))
    m = task.evaluate_model(model, batches=1, batch_size=4)
    assert set(m) == {"dfa_accuracy", "accuracy", "loss"} and 0.0 <= m["dfa_accuracy"] <= 1.0
    assert m["accuracy"] <= m["dfa_accuracy"] + 1e-12  # an exact hit is always a valid one


@pytest.mark.parametrize("kwargs, needle", [
    ({"max_len": 0}, "max_len must be a positive integer"),
    ({"min_len": 5, "max_len": 3}, "min_len <= max_len"),
    ({"seq_len": 20, "max_len": 20}, "seq_len=20 must hold at least two strings"),
    ({"max_alphabet": 30}, "max_alphabet=30 exceeds num_symbols=18"),
    ({"min_states": 9, "max_states": 4}, "num_states range"),
    ({"max_edges": 0}, "max_edges must be a positive integer"),
])
def test_bad_options_are_one_line_errors(kwargs, needle):
    with pytest.raises(SeqzooError, match=needle) as info:
        ICLL(**kwargs)
    assert "\n" not in str(info.value)


def test_bad_split_and_order():
    with pytest.raises(SeqzooError, match="unknown split 'dev'"):
        ICLL(seq_len=64, max_len=8).get_batch("dev", 0, 2)
    with pytest.raises(SeqzooError, match="order must be an integer >= 1"):
        ngram_predict(np.zeros((1, 4), dtype=np.int64), 0, 3)
    with pytest.raises(SeqzooError, match="tokens must lie in"):
        ngram_predict(np.full((1, 4), 7), 2, 3)


def test_arena_task_and_run():
    from seqzoo.arena.runner import run_one
    from seqzoo.arena.tasks import get_task

    entry = get_task("icll")
    assert entry.metric == "dfa_accuracy"
    source = entry.build(48, 0, max_len=8)
    assert source.seq_len == 48 and source.vocab_size == 19
    config = {"task": "icll", "task_options": {"max_len": 8}, "seq_len": 48, "mixer": "linear_attention",
              "mixer_options": {}, "d_model": 16, "n_layers": 1, "lr": 1e-3, "seed": 0, "steps": 2,
              "batch_size": 4, "eval_batches": 1}
    metrics = run_one(config)
    assert metrics["metric"] == "dfa_accuracy" and metrics["score"] == metrics["dfa_accuracy"]
    assert 0.0 <= metrics["accuracy"] <= 1.0
    with pytest.raises(SeqzooError, match="unknown option 'states'"):
        entry.build(48, 0, states=3)


def test_repro_quick_runs():
    from seqzoo.repro import get_repro

    result = get_repro("icll").run(True)
    assert len(result.checks) == 2 and "ngram3" in " ".join(result.notes)
    with pytest.raises(SeqzooError, match="unknown mixer 'nope'"):
        get_repro("icll").run(True, models="attention,nope")
    with pytest.raises(SeqzooError, match="device must be"):
        get_repro("icll").run(True, device="tpu")
