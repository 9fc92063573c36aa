"""Scan and Snap (seqzoo/tasks/scan_snap.py): entropy on hand-made attention maps, the sequence-class data, the
reparameterised 1-layer model, and the direction of the early dynamics the theory predicts."""

from __future__ import annotations

import math

import pytest
import torch

from seqzoo.core.errors import SeqzooError
from seqzoo.repro.scan_snap import logit_groups, rank_correlations
from seqzoo.tasks.scan_snap import (ScanSnapModel, SequenceClasses, attention_entropy, probe, spearman,
                                    token_attention, train_scan_snap)


def test_entropy_of_hand_made_attention_maps():
    attn = torch.tensor([[0.25, 0.25, 0.25, 0.25],      # uniform over 4: log 4
                         [1.0, 0.0, 0.0, 0.0],          # one-hot: 0
                         [0.5, 0.5, 0.0, 0.0],          # two positions: log 2
                         [0.7, 0.2, 0.1, 0.0]], dtype=torch.float64)
    expected = [math.log(4), 0.0, math.log(2), -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1))]
    assert torch.allclose(attention_entropy(attn), torch.tensor(expected, dtype=torch.float64), atol=1e-12)
    mask = torch.tensor([[True] * 4, [True, False, False, False], [True, True, False, False], [True] * 4])
    assert torch.allclose(attention_entropy(attn, mask), torch.tensor(expected, dtype=torch.float64), atol=1e-12)
    with pytest.raises(SeqzooError, match="masked-out"):
        attention_entropy(attn, torch.zeros_like(mask))
    with pytest.raises(SeqzooError, match="sum to 1"):
        attention_entropy(attn * 2)


def test_token_attention_sums_positions_of_each_token():
    attn = torch.tensor([[0.1, 0.2, 0.3, 0.4]], dtype=torch.float64)
    tokens = torch.tensor([[2, 0, 2, 1]])
    mass = token_attention(attn, tokens, 4)
    assert torch.allclose(mass, torch.tensor([[0.2, 0.4, 0.4, 0.0]], dtype=torch.float64))
    assert math.isclose(float(attention_entropy(mass)), -(0.2 * math.log(0.2) + 2 * 0.4 * math.log(0.4)))


def test_spearman_matches_hand_computed_ranks():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [5, 5, 5]) == 0.0
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486832980505138)


def test_sequence_classes_structure_and_frequencies():
    data = SequenceClasses(n_classes=4, n_queries=2, n_distinct=3, n_common=2, common_prob=0.4, seq_len=400, seed=1)
    assert data.vocab_size == 2 + 4 * 3
    cooc = data.cooccurrence()
    assert torch.allclose(cooc.sum(1), torch.ones(4, dtype=torch.float64))
    for n in range(4):   # distinct tokens of class n appear for class n only, in decreasing frequency
        others = [m for m in range(4) if m != n]
        assert (cooc[others][:, data.distinct_tokens(n)] == 0).all()
        dt = cooc[n, data.distinct_tokens(n)]
        assert (dt[1:] < dt[:-1]).all()
    batch = data.get_batch("train", 3, 64)
    assert batch["context"].shape == (64, 399) and torch.equal(batch["query"], batch["target"] % 2)
    assert torch.equal(batch["context"], data.get_batch("train", 3, 64)["context"])    # deterministic
    rows = batch["target"] == 0
    counts = torch.bincount(batch["context"][rows].flatten(), minlength=data.vocab_size).double()
    assert torch.allclose(counts / counts.sum(), cooc[0], atol=0.03)
    with pytest.raises(SeqzooError, match="n_queries"):
        SequenceClasses(n_classes=2, n_queries=3)


def test_model_starts_uniform_and_matches_the_formula():
    data = SequenceClasses(n_classes=4, n_queries=2, n_distinct=3, n_common=2, seq_len=9)
    model = ScanSnapModel.for_data(data)
    batch = data.get_batch("val", 0, 5)
    logits, attn = model(batch["context"], batch["query"])
    assert torch.allclose(attn, torch.full_like(attn, 1 / 8)) and torch.equal(logits, torch.zeros_like(logits))
    torch.manual_seed(0)
    with torch.no_grad():
        model.Z.normal_()
        model.Y.normal_()
    logits, attn = model(batch["context"], batch["query"])
    for b in range(5):   # direct evaluation of c_l ∝ exp(z_{m, x_l}), f = Σ c_l e_{x_l} / ‖·‖, logits = Y f
        z = model.Z[batch["query"][b], batch["context"][b]]
        c = torch.exp(z) / torch.exp(z).sum()
        f = torch.zeros(data.vocab_size, dtype=torch.float64)
        for pos, tok in enumerate(batch["context"][b]):
            f[tok] += c[pos]
        assert torch.allclose(attn[b], c) and torch.allclose(logits[b], model.Y @ (f / f.norm()))


def test_training_moves_attention_as_the_theory_predicts():
    """Common-token logits fall and distinct-token logits rise from the first steps; entropy falls; a frozen Z
    (η_Z = 0, the stub) keeps uniform attention and no frequency ordering."""
    data = SequenceClasses(n_classes=4, n_queries=2, n_distinct=5, n_common=4, seq_len=48, seed=0)
    model, hist = train_scan_snap(data, steps=100, lr_y=1.0, lr_z=0.3, batch_size=32, record=[0, 20, 100],
                                  probe_size=64)
    (ct0, dt0), (ct1, dt1) = logit_groups(data, hist.Z[0]), logit_groups(data, hist.Z[1])
    assert ct1 < ct0 and dt1 > dt0
    assert hist.entropy[0] == pytest.approx(math.log(47), abs=1e-12)
    assert hist.entropy[2] < hist.entropy[1] < hist.entropy[0]
    assert min(rank_correlations(data, model.Z.detach())) > 0.8
    frozen, fh = train_scan_snap(data, steps=100, lr_y=1.0, lr_z=0.0, batch_size=32, probe_size=64)
    assert fh.entropy[-1] == pytest.approx(fh.entropy[0], abs=1e-12)
    assert max(rank_correlations(data, frozen.Z.detach())) == 0.0
    assert probe(frozen, data.get_batch("val", 0, 8))[0] == pytest.approx(math.log(47))


def test_quick_reproduction_runs_and_reports_its_checks():
    from seqzoo.repro import get_repro

    result = get_repro("scan-snap").run(True)
    assert len(result.checks) == 7 and "quick mode" in result.render()
    assert result.checks[0].held   # uniform attention at Z = 0 holds at any size
