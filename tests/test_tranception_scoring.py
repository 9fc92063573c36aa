"""Tranception scoring (seqzoo/models/protein/tranception.py): the bidirectional log-likelihood ratio on a
hand-computed example, retrieval algebra (α = 0: pure AR; α = 1: the site-independent closed form), indels, the
protein LM's log-probabilities and its training batches."""

from __future__ import annotations

import math

import pytest
import torch

from seqzoo.core.errors import SeqzooError
from seqzoo.models.protein.tranception import (SEP, FitnessScorer, ProteinFamilyData, ProteinLM, ProteinLMConfig,
                                               encode)
from seqzoo.tasks.protein.msa_prior import site_independent_score
from seqzoo.tasks.protein.sequences import AA_INDEX

# hand-written conditional log-probabilities: (direction, previous letter or '^', current letter or '$')
TABLE = {(False, "^", "A"): -1.0, (False, "^", "G"): -3.0, (False, "A", "C"): -0.5, (False, "G", "C"): -2.0,
         (False, "C", "$"): -0.1,
         (True, "^", "C"): -1.5, (True, "C", "A"): -0.2, (True, "C", "G"): -0.7, (True, "A", "$"): -0.3,
         (True, "G", "$"): -0.3}


class TableModel:
    """A stand-in AR model whose log p(x_t | x_<t) depends on the previous letter only (TABLE; default −2)."""

    def residue_log_probs(self, seqs, *, reverse=False, batch_size=0):
        out = []
        for s in seqs:
            r = s[::-1] if reverse else s
            prev, lps = "^", []
            for a in r + "$":
                lps.append(TABLE.get((reverse, prev, a), -2.0))
                prev = a
            out.append(torch.tensor(lps, dtype=torch.float64))
        return out


def test_bidirectional_llr_hand_computed():
    # forward: wt AC = −1 −0.5 −0.1 = −1.6, mut GC = −3 −2 −0.1 = −5.1  → −3.5
    # reverse: wt CA = −1.5 −0.2 −0.3 = −2.0, mut CG = −1.5 −0.7 −0.3 = −2.5  → −0.5
    bi = FitnessScorer(TableModel(), "AC").score(["A1G"])[0]
    uni = FitnessScorer(TableModel(), "AC", bidirectional=False).score(["A1G"])[0]
    assert bi == pytest.approx(-2.0, abs=1e-12)
    assert uni == pytest.approx(-3.5, abs=1e-12)
    assert FitnessScorer(TableModel(), "AC").score(["WT"])[0] == 0.0


def random_log_prior(length: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(torch.randn(length, 20, generator=g, dtype=torch.float64), -1)


def tiny_model(seed: int = 0, mixer: str = "tranception") -> ProteinLM:
    torch.manual_seed(seed)
    return ProteinLM(ProteinLMConfig(mixer=mixer, d_model=16, n_layers=1, n_heads=4)).double()


WT = "MKTAYIAKQRQISFVKSHFSRQ"
MUTANTS = ["K2A", "K2A:S13W", "M1L:Q22E", "T3del", "A4insGG", "Y5H:I6del"]


def test_retrieval_algebra():
    model, prior = tiny_model(), random_log_prior(len(WT))
    pure = FitnessScorer(model, WT).score(MUTANTS)
    at_zero = FitnessScorer(model, WT, log_prior=prior, alpha=0.0).score(MUTANTS)
    assert at_zero == pytest.approx(pure, abs=1e-12)
    at_one = FitnessScorer(model, WT, log_prior=prior, alpha=1.0).score(MUTANTS[:4])
    closed = []
    for m in MUTANTS[:4]:  # substitutions and a deletion: Σ_i log f_i(mut_i) − log f_i(wt_i)
        from seqzoo.tasks.protein.mutations import apply_mutant

        seq, cols = apply_mutant(WT, m)
        closed.append(site_independent_score(prior, WT, seq, cols))
    assert at_one == pytest.approx(closed, abs=1e-10)
    # by hand for K2A: log f_2(A) − log f_2(K)
    assert at_one[0] == pytest.approx(float(prior[1, AA_INDEX["A"]] - prior[1, AA_INDEX["K"]]), abs=1e-12)
    # in between: linear in α for substitutions of equal length
    mid = FitnessScorer(model, WT, log_prior=prior, alpha=0.6).score(MUTANTS[:3])
    assert mid == pytest.approx([0.4 * p + 0.6 * c for p, c in zip(pure, closed[:3])], abs=1e-10)
    # no model: only the site-independent score exists
    alone = FitnessScorer(None, WT, log_prior=prior, alpha=1.0).score(MUTANTS[:4])
    assert alone == pytest.approx(closed, abs=1e-12)


def test_inserted_residues_use_the_ar_term_only():
    prior = random_log_prior(2)
    s = FitnessScorer(TableModel(), "AC", log_prior=prior, alpha=1.0, bidirectional=False)
    # "A1insG" → AGC: A (col 0), G (inserted: AR −3? no: previous letter A, current G → default −2), C (col 1)
    value = s.score(["A1insG"])[0]
    assert value == pytest.approx(-2.0, abs=1e-12)  # prior terms cancel; the inserted G keeps its AR term


def test_scores_match_the_model_log_probs():
    model = tiny_model(1)
    seqs = [WT, WT[:5] + "W" + WT[6:], WT[:-3]]
    for reverse in (False, True):
        got = model.residue_log_probs(seqs, reverse=reverse, batch_size=2)
        for s, lp in zip(seqs, got):
            ids = torch.tensor([encode(s, reverse)])
            logits, _ = model(ids[:, :-1])
            ref = torch.log_softmax(logits.double(), -1)[0].gather(-1, ids[0, 1:, None]).squeeze(-1)
            assert lp.shape == (len(s) + 1,)
            assert torch.allclose(lp, ref, atol=1e-10)
    # the LLR is the difference of summed log-probs, averaged over both directions
    fw = [float(t.sum()) for t in model.residue_log_probs(seqs[:2])]
    bw = [float(t.sum()) for t in model.residue_log_probs(seqs[:2], reverse=True)]
    score = FitnessScorer(model, WT).score_sequences([seqs[1]])[0]
    assert score == pytest.approx(0.5 * (fw[1] - fw[0]) + 0.5 * (bw[1] - bw[0]), abs=1e-10)


def test_mismatched_mutants_and_bad_inputs():
    s = FitnessScorer(tiny_model(), WT)
    with pytest.raises(SeqzooError, match="position 2 is K, not A"):
        s.score(["A2G"])
    with pytest.raises(SeqzooError, match="valid positions: 1-22"):
        s.score(["Q40A"])
    with pytest.raises(SeqzooError, match="unknown amino acid 'B'"):
        s.score_sequences(["MKTAYIAKQRQISFVKSHFSRB"])
    with pytest.raises(SeqzooError, match="alpha"):
        FitnessScorer(tiny_model(), WT, log_prior=random_log_prior(len(WT)), alpha=1.5)
    with pytest.raises(SeqzooError, match="expected"):
        FitnessScorer(tiny_model(), WT, log_prior=random_log_prior(5))
    with pytest.raises(SeqzooError, match="max_length"):
        ProteinLM(ProteinLMConfig(d_model=16, n_layers=1, max_length=10)).residue_log_probs([WT])


def test_family_batches_reverse_half_and_mask_padding():
    seqs = ["ACDEFG", "KLMNPQRST", "WY"]
    data = ProteinFamilyData(seqs, val_fraction=0.0, seed=3)
    b1, b2 = data.get_batch("train", 7, 64), data.get_batch("train", 7, 64)
    assert torch.equal(b1["inputs"], b2["inputs"])  # deterministic
    inp, tgt, mask = b1["inputs"], b1["targets"], b1["loss_mask"]
    assert (inp[:, 0] == SEP).all()
    assert torch.equal(inp[:, 1:], tgt[:, :-1])
    forward = {tuple(encode(s)[1:-1]) for s in seqs}
    reversed_ = {tuple(encode(s, True)[1:-1]) for s in seqs}
    n_rev = 0
    for row, m in zip(tgt, mask):
        body = tuple(row[m].tolist())[:-1]
        assert row[m].tolist()[-1] == SEP
        assert body in forward | reversed_
        n_rev += body in reversed_ and body not in forward
    assert 16 < n_rev < 48  # about half of 64 rows read right-to-left
    with pytest.raises(SeqzooError, match="unknown split"):
        data.get_batch("test", 0, 2)


def test_training_lowers_the_loss_on_a_family():
    torch.manual_seed(0)
    model = ProteinLM(ProteinLMConfig(d_model=16, n_layers=1, n_heads=4))
    data = ProteinFamilyData(["MKTAYIAKQR", "MKTAYLAKQR", "MKSAYIAKQR"], seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-2)
    with torch.no_grad():
        first = float(model.loss(data.get_batch("train", 0, 16)))
    for step in range(30):
        loss = model.loss(data.get_batch("train", step, 16))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > math.log(21) - 0.3
    with torch.no_grad():
        assert float(model.loss(data.get_batch("train", 99, 16))) < 0.6 * first
