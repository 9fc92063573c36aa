"""Protein data for Tranception: mutant strings (seqzoo/tasks/protein/mutations.py), the Potts family
(potts.py), the MSA prior (msa_prior.py), ProteinGym assays and Spearman (proteingym.py); the real assays in
mavenn and the real sequences in emboss-test are used when installed and skipped cleanly otherwise."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from seqzoo.core.errors import SeqzooError
from seqzoo.tasks.protein.msa_prior import (encode_alignment, position_prior, read_stockholm, sequence_weights,
                                            site_independent_score)
from seqzoo.tasks.protein.mutations import (align_to_wild_type, apply_mutant, count_mutations,
                                            mutant_from_sequences, parse_mutant)
from seqzoo.tasks.protein.potts import (all_single_mutants, gibbs_sample, random_double_mutants, random_potts,
                                        to_strings)
from seqzoo.tasks.protein.proteingym import (check_assay, load_assay, load_mavenn, mavenn_dataset_dir, rankdata,
                                             scatter_plot, spearman)
from seqzoo.tasks.protein.sequences import parse_fasta

EMBOSS = Path("/usr/share/EMBOSS/test")
WT = "MKTAYIAKQR"


# -- mutations -------------------------------------------------------------------------------------------------------
def test_apply_substitutions_and_multi_mutants():
    seq, cols = apply_mutant(WT, "K2A:Q9W")
    assert seq == "MATAYIAKWR" and cols == list(range(10))
    assert apply_mutant(WT, "")[0] == WT
    assert count_mutations("K2A:Q9W") == 2
    assert mutant_from_sequences(WT, seq) == "K2A:Q9W"


def test_apply_indels_with_column_maps():
    seq, cols = apply_mutant(WT, "T3del")
    assert seq == "MKAYIAKQR" and cols == [0, 1, 3, 4, 5, 6, 7, 8, 9]
    seq, cols = apply_mutant(WT, "T3insGS:Y5F")
    assert seq == "MKTGSAFIAKQR" and cols == [0, 1, 2, None, None, 3, 4, 5, 6, 7, 8, 9]
    assert apply_mutant(WT, "T3-")[0] == "MKAYIAKQR"
    assert align_to_wild_type("MKTGSAYIAKQR", WT) == [0, 1, 2, None, None, 3, 4, 5, 6, 7, 8, 9]
    assert align_to_wild_type("MKAYIAKQR", WT) == [0, 1, 3, 4, 5, 6, 7, 8, 9]


@pytest.mark.parametrize("mutant, message", [
    ("A2G", "position 2 is K, not A"),
    ("K20A", "valid positions: 1-10"),
    ("K2B", "unknown amino acid .B."),     # B is not one of the 20 letters
    ("K2", "malformed mutation"),
    ("2A", "malformed mutation"),
    ("K2K", "by itself"),
    ("K2A:K2C", "changes position 2 twice"),
    ("K0A", "positions start at 1"),
])
def test_bad_mutants_are_one_line_errors(mutant, message):
    with pytest.raises(SeqzooError, match=message) as info:
        apply_mutant(WT, mutant)
    assert "\n" not in str(info.value)


def test_parse_mutant_orders_and_rejects_non_strings():
    assert [str(m) for m in parse_mutant("Q9W:K2A")] == ["K2A", "Q9W"]
    with pytest.raises(SeqzooError):
        parse_mutant(12)


# -- Potts family ----------------------------------------------------------------------------------------------------
def test_potts_energy_and_delta_energy_by_hand():
    m = random_potts(5, 3, edges_per_site=1.0, seed=1)
    s = torch.tensor([[0, 1, 2, 0, 1]])
    e = -sum(float(m.h[i, s[0, i]]) for i in range(5))
    e -= sum(float(m.J[i, j, s[0, i], s[0, j]]) for i, j in itertools.combinations(range(5), 2))
    assert float(m.energy(s)) == pytest.approx(e, abs=1e-12)
    assert torch.allclose(m.J, m.J.permute(1, 0, 3, 2))
    mut = s.clone()
    mut[0, 2] = 0
    assert float(m.delta_energy(s[0], mut)) == pytest.approx(float(m.energy(mut) - m.energy(s)), abs=1e-12)
    assert all(0 <= i < j < 5 for i, j in m.edges)


def test_gibbs_sampler_matches_exact_distribution():
    """L = 3, q = 3: the empirical distribution of 6,000 Gibbs samples matches exp(−E)/Z (all 27 states)."""
    m = random_potts(3, 3, edges_per_site=1.0, field_std=1.0, coupling_std=1.5, seed=2)
    states = torch.tensor(list(itertools.product(range(3), repeat=3)))
    p = torch.softmax(-m.energy(states), 0)
    samples = gibbs_sample(m, 6000, burn_in=30, thin=3, chains=1000, seed=0)
    idx = (samples * torch.tensor([9, 3, 1])).sum(1)
    freq = torch.bincount(idx, minlength=27).double() / len(samples)
    assert (freq - p).abs().max() < 0.025
    # an obvious stub (uniform sampling) fails the same check
    assert (torch.full((27,), 1 / 27, dtype=torch.float64) - p).abs().max() > 0.05


def test_mutant_sets():
    wt = torch.tensor([0, 5, 7, 19])
    singles, names = all_single_mutants(wt)
    assert singles.shape == (4 * 19, 4) and len(set(names)) == 76
    assert ((singles != wt).sum(1) == 1).all()
    doubles, dnames = random_double_mutants(wt, 30, seed=1)
    assert ((doubles != wt).sum(1) == 2).all() and len(set(dnames)) == 30
    wt_str = to_strings(wt.view(1, -1))[0]
    for row, name in zip(doubles, dnames):
        assert apply_mutant(wt_str, name)[0] == to_strings(row.view(1, -1))[0]


# -- MSA prior -------------------------------------------------------------------------------------------------------
def test_sequence_weights_by_hand():
    msa = encode_alignment(["ACDEFGHIKL", "ACDEFGHIKM", "WWWWWWWWWW", "ACDEFGHIKL"])
    # rows 0, 1 and 3 are ≥ 80% identical to each other (9/10, 10/10); row 2 is alone
    w = sequence_weights(msa, theta=0.2)
    assert w.tolist() == pytest.approx([1 / 3, 1 / 3, 1.0, 1 / 3])
    assert sequence_weights(msa, theta=0.0).tolist() == pytest.approx([0.5, 1.0, 1.0, 0.5])


def test_position_prior_with_pseudocounts_and_gaps():
    msa = encode_alignment(["AC", "A-", "DC"])
    f = position_prior(msa, torch.tensor([1.0, 1.0, 2.0]), pseudocount=0.5)
    from seqzoo.tasks.protein.sequences import AA_INDEX

    assert float(f[0, AA_INDEX["A"]]) == pytest.approx((2 + 0.5) / (4 + 10))
    assert float(f[0, AA_INDEX["D"]]) == pytest.approx((2 + 0.5) / (4 + 10))
    assert float(f[1, AA_INDEX["C"]]) == pytest.approx((3 + 0.5) / (3 + 10))  # the gap is not counted
    assert torch.allclose(f.sum(-1), torch.ones(2, dtype=torch.float64))
    prior = f.log()
    assert site_independent_score(prior, "AC", "DC") == pytest.approx(0.0)
    assert site_independent_score(prior, "AC", "AW") == pytest.approx(math.log(0.5 / 13) - math.log(3.5 / 13))


def test_alignment_focus_columns_and_errors():
    msa = encode_alignment(["AC-D", "ACED", "AcC-D"], wild_type="ACD")  # A2M: 'c' is an insert state
    assert msa.shape == (3, 3)
    with pytest.raises(SeqzooError, match="is not the wild type"):
        encode_alignment(["ACD", "ACE"], wild_type="ACE")
    with pytest.raises(SeqzooError, match="same number of columns"):
        encode_alignment(["ACD", "AC"])
    with pytest.raises(SeqzooError, match="unknown amino acid"):
        encode_alignment(["ACD", "AXD"])


@pytest.mark.skipif(not (EMBOSS / "data/hmm/pkinase.sto").is_file(), reason="emboss-test is not installed")
def test_real_alignment_pkinase_weights_and_prior():
    rows = read_stockholm(EMBOSS / "data/hmm/pkinase.sto")
    assert len(rows) == 67
    msa = encode_alignment([s for _, s in rows])
    w = sequence_weights(msa)
    assert ((w > 0) & (w <= 1)).all() and 1 <= float(w.sum()) <= 67
    f = position_prior(msa, w)
    assert torch.allclose(f.sum(-1), torch.ones(f.shape[0], dtype=torch.float64))
    # the kinase glycine-rich loop 'GxGxxG' is conserved: some column puts > 50% on G
    from seqzoo.tasks.protein.sequences import AA_INDEX

    assert float(f[:, AA_INDEX["G"]].max()) > 0.5


@pytest.mark.skipif(not (EMBOSS / "data/hmm/globins630.fa").is_file(), reason="emboss-test is not installed")
def test_real_fasta_globins_strict_reading():
    path = EMBOSS / "data/hmm/globins630.fa"
    from seqzoo.tasks.protein.sequences import read_fasta

    with pytest.raises(SeqzooError, match="unknown amino acid 'X'"):
        read_fasta(path)  # some globins hold X: strict reading names the record and position
    records = [r for r in path.read_text().split(">")[1:]]
    clean = ">" + ">".join(r for r in records if set("".join(r.split("\n")[1:]).upper()) <= set("ACDEFGHIKLMNPQRSTVWY"))
    parsed = parse_fasta(clean)
    assert 500 < len(parsed) < 630 and all(100 < len(s) < 200 for _, s in parsed)


# -- assays, Spearman ------------------------------------------------------------------------------------------------
def test_spearman_and_ties():
    assert rankdata([10, 20, 20, 30]).tolist() == [1.0, 2.5, 2.5, 4.0]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 4, 30), rng.standard_normal(30)
    scipy_stats = pytest.importorskip("scipy.stats")
    assert spearman(a, b) == pytest.approx(scipy_stats.spearmanr(a, b).statistic, abs=1e-12)
    with pytest.raises(SeqzooError, match="same length"):
        spearman([1, 2], [1, 2, 3])


def write(tmp_path, text, name="assay.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_load_proteingym_csv(tmp_path):
    p = write(tmp_path, "mutant,mutated_sequence,DMS_score\nK2A,MATAYIAKQR,0.5\nK2A:Q9W,MATAYIAKWR,-1.2\n")
    df = load_assay(p, WT)
    assert df["n_mutations"].tolist() == [1, 2] and df["DMS_score"].tolist() == [0.5, -1.2]
    only_mutants = load_assay(write(tmp_path, "mutant,DMS_score\nT3del,0.1\nK2A,1\n", "b.csv"), WT)
    assert only_mutants["mutated_sequence"].tolist() == ["MKAYIAKQR", "MATAYIAKQR"]


@pytest.mark.parametrize("text, message", [
    ("mutant,score\nK2A,1\n", "needs DMS_score"),
    ("mutant,mutated_sequence,DMS_score\nA2G,MGTAYIAKQR,1\n", "position 2 is K, not A"),
    ("mutant,mutated_sequence,DMS_score\nK2A,MATAYIAKQB,1\n", "unknown amino acid 'B'"),
    ("mutant,mutated_sequence,DMS_score\nK2A,MCTAYIAKQR,1\n", "does not equal the wild type"),
    ("mutant,mutated_sequence,DMS_score\nK2A,MATAYIAKQR,abc\n", "finite numbers"),
    ("mutant,mutated_sequence,DMS_score\n", "no rows"),
    ('mutant,DMS_score\n"K2A,1\n', "could not be parsed"),
])
def test_malformed_assays_are_one_line_errors(tmp_path, text, message):
    with pytest.raises(SeqzooError, match=message) as info:
        load_assay(write(tmp_path, text), WT)
    assert "\n" not in str(info.value)


def test_malformed_fasta_is_a_one_line_error():
    with pytest.raises(SeqzooError, match="before the first '>' header"):
        parse_fasta("MKT\n>a\nMKT\n")
    with pytest.raises(SeqzooError, match="unknown amino acid 'J'"):
        parse_fasta(">a\nMKJ\n")


def test_scatter_plot_png(tmp_path):
    out = scatter_plot([1, 2, 3, 4], [1, 3, 2, 4], tmp_path / "s.png", title="t", groups=["a", "a", "b", "b"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(mavenn_dataset_dir() is None, reason="mavenn (pip install --no-deps mavenn==1.1.4) is absent")
def test_mavenn_amyloid_in_proteingym_format():
    df, wt = load_mavenn("amyloid", split="test")
    assert wt == "DAEFRHDSGYEVHHQKLVFFAEDVGSNKGAIIGLMVGGVVIA"  # Aβ42
    assert set(df.columns) >= {"mutant", "mutated_sequence", "DMS_score", "set", "n_mutations"}
    assert set(df["set"]) == {"test"} and set(df["n_mutations"]) <= {1, 2}
    row = df.iloc[0]
    assert apply_mutant(wt, row["mutant"])[0] == row["mutated_sequence"]
    checked = check_assay(df.head(50), wt, source="gb1")
    assert checked["n_mutations"].tolist() == df["n_mutations"].head(50).tolist()
    with pytest.raises(SeqzooError, match="unknown mavenn assay"):
        load_mavenn("gfp")
