"""The unified view (Hè and Kabic, arXiv 2302.06218): every registered mixer has an entry, the table renders from
the registry, and for mixers that expose their mixing step the probed matrix M(x) reproduces the mixer
(y == M v), is lower-triangular exactly when the mixer is causal, and equals M built by hand from q and k."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import seqzoo
from seqzoo import SeqzooError
from seqzoo.mixers.unified_view import MATRIX_PROBES, UNIFIED_VIEW, MixingView, mixing_matrix, unified_view_table

F64 = torch.float64
PLANNED = ["s4", "s4d", "lssl", "lmu", "mamba", "mambamixer", "spacetime", "aaren", "convs5", "deltanet",
           "arflow_attention", "combiner", "longvq", "urpe", "quantizable_attention", "ssa_attention", "probsparse",
           "autocorrelation", "attention", "linear_attention", "retention"]


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


# -- the table --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", seqzoo.list_mixers())
def test_every_registered_mixer_has_an_entry(name):
    assert name in UNIFIED_VIEW, f"add a MixingView for {name!r} to UNIFIED_VIEW in seqzoo/mixers/unified_view.py"
    view = UNIFIED_VIEW[name]
    assert isinstance(view, MixingView)
    assert all(isinstance(getattr(view, f), str) and getattr(view, f).strip() for f in MixingView.__annotations__)


def test_entries_for_the_mixers_being_written():
    assert set(PLANNED) <= set(UNIFIED_VIEW)


def test_table_has_one_row_per_registered_mixer():
    text = unified_view_table()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    names = seqzoo.list_mixers()
    assert [row.split("`")[1] for row in rows] == names
    for row, name in zip(rows, names):
        entry = seqzoo.core.mixer_entry(name)
        cells = row.split(" | ")
        assert len(row.replace("\\|", "").split("|")) == 11, row  # 9 cells: escaped pipes stay inside cells
        assert entry.paper in row and cells[2] == ("yes" if entry.cls.causal else "no")
    assert "y = M(x) v" in text and "2302.06218" in text
    with pytest.raises(SeqzooError, match="no unified-view entry for mixer"):
        unified_view_table(["attention", "not-a-mixer"])


# -- numerical mixing matrices ----------------------------------------------------------------------------------------
def build(name, **kwargs):
    torch.manual_seed(3)
    return seqzoo.build_mixer(name, 32, **kwargs).double().eval()


def causal_mask(T):
    return torch.ones(T, T, dtype=torch.bool).tril()


def check_template(name, mixer, x):
    """M v == the mixer's own mixing; M lower-triangular iff the mixer is causal. Returns M."""
    M, v, mixed = mixing_matrix(mixer, x)
    B, T = x.shape[:2]
    heads = M.shape[1]
    groups = heads // v.shape[2]
    v_rep = v.repeat_interleave(groups, dim=2)
    assert rel(torch.einsum("bhts,bshd->bthd", M, v_rep), mixed) <= 1e-12
    upper = M.masked_select(~causal_mask(T).expand_as(M))
    if type(mixer).causal:
        assert (upper == 0).all(), f"{name}: causal, so M must be lower-triangular"
    else:
        assert upper.abs().max() > 1e-6, f"{name}: not causal and M uses later tokens"
    return M, v, mixed


def test_attention_matrix_is_the_masked_softmax():
    mixer = build("attention", n_heads=4, n_kv_heads=2)
    x = rand(2, 9, 32, seed=1)
    M, v, mixed = check_template("attention", mixer, x)
    q, k, _ = mixer.project(x, torch.zeros(2, dtype=torch.int64))
    k = k.repeat_interleave(2, dim=2)
    scores = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(mixer.head_dim)
    want = torch.softmax(scores.masked_fill(~causal_mask(9), float("-inf")), -1)
    assert rel(M, want) <= 1e-12
    assert rel(M.sum(-1), torch.ones(2, 4, 9, dtype=F64)) <= 1e-14  # rows are distributions
    y, _ = mixer(x)
    assert rel(y, mixer.o_proj(mixed.reshape(2, 9, 32))) <= 1e-12  # M v is what the mixer outputs
    windowed = build("attention", window=3)
    Mw, _, _ = check_template("attention", windowed, x)
    assert (Mw.masked_select(~causal_mask(9).triu(-2).expand_as(Mw)) == 0).all()  # a band of width 3


def test_linear_attention_matrix_is_the_normalised_kernel():
    mixer = build("linear_attention")
    x = rand(2, 11, 32, seed=2)
    M, v, mixed = check_template("linear_attention", mixer, x)
    q, k, _ = mixer.features(x)
    kernel = torch.einsum("bthd,bshd->bhts", q, k) * causal_mask(11)
    want = kernel / (kernel.sum(-1, keepdim=True) + 1e-6)
    assert rel(M, want) <= 1e-12
    y, _ = mixer(x)
    assert rel(y, mixer.o_proj(mixed.reshape(2, 11, 32))) <= 1e-12


def test_retention_matrix_is_the_decayed_kernel():
    mixer = build("retention")
    x = rand(2, 10, 32, seed=3)
    M, v, mixed = check_template("retention", mixer, x)
    q, k, _ = mixer.project(x, torch.zeros(2, dtype=torch.int64))
    t = torch.arange(10, dtype=F64)
    decay = mixer.decays[:, None, None] ** (t[:, None] - t[None, :]).clamp_min(0) * causal_mask(10)
    want = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(mixer.head_dim) * decay
    assert rel(M, want) <= 1e-12
    y, _ = mixer(x)
    gated = F.silu(mixer.g_proj(x)) * mixer.group_norm(mixed)
    assert rel(y, mixer.o_proj(gated)) <= 1e-12


def test_non_causal_mixers_have_full_matrices():
    x = rand(1, 24, 32, seed=4)
    M, _, _ = check_template("autocorrelation", build("autocorrelation"), x)
    # a mixture of cyclic shifts: circulant (M_ts depends on (s − t) mod T only), rows sum to 1
    idx = torch.arange(24)
    circ = M[0, 0, 0][(idx[None, :] - idx[:, None]) % 24]
    assert rel(M[0, 0], circ) <= 1e-14 and rel(M.sum(-1), torch.ones_like(M.sum(-1))) <= 1e-14
    M, _, _ = check_template("probsparse", build("probsparse", factor=1.0), x)
    uniform = torch.isclose(M, torch.full_like(M, 1 / 24), rtol=0, atol=1e-15).all(-1)
    assert uniform.sum(-1).tolist() == [[24 - 4] * 4]  # u = ⌈ln 24⌉ = 4 active rows per head, the rest lazy
    Mc, _, _ = mixing_matrix(build("probsparse", factor=1.0, causal=True), x)
    assert (Mc.masked_select(~causal_mask(24).expand_as(Mc)) == 0).all()  # masked: lower-triangular per call


def test_probe_of_a_mixer_without_one_is_an_error():
    unprobed = [n for n in seqzoo.list_mixers() if n not in MATRIX_PROBES]
    if not unprobed:
        pytest.skip("every registered mixer has a probe")
    with pytest.raises(SeqzooError, match="no mixing-matrix probe"):
        mixing_matrix(build(unprobed[0]), rand(1, 4, 32))
