"""Sequence-sharded ring attention: the log-sum-exp merge (one process) and 2- and 3-process gloo runs against
single-process softmax attention, forward and backward (float64 ≤ 1e-10)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seqzoo import SeqzooError
from seqzoo.ops import softmax_attention
from seqzoo.ops.distributed_attention import attention_partial, distributed_softmax_attention, merge_partials

SCRIPT = Path(__file__).parent / "scripts" / "dist_attention_check.py"
F64 = torch.float64


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def full_attention(q, k, v, visible=None):
    """Explicit softmax attention, heads-first ``[B, H, T, D]``."""
    scores = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
    if visible is not None:
        scores = scores.masked_fill(~visible, float("-inf"))
    return torch.softmax(scores, -1) @ v, torch.logsumexp(scores, -1)


# -- the merge ------------------------------------------------------------------------------------------------------
def test_merging_key_blocks_in_any_order_gives_full_attention():
    q, k, v = rand(2, 3, 5, 8, seed=1), rand(2, 3, 17, 8, seed=2), rand(2, 3, 17, 4, seed=3)
    scale = 8 ** -0.5
    want, want_lse = full_attention(q, k, v)
    bounds = [0, 3, 4, 11, 17]
    parts = [attention_partial(q, k[:, :, a:b], v[:, :, a:b], scale) for a, b in zip(bounds, bounds[1:])]
    for order in ([0, 1, 2, 3], [3, 1, 0, 2], [2, 3, 1, 0]):
        o, lse = parts[order[0]]
        for i in order[1:]:
            o, lse = merge_partials(o, lse, *parts[i])
        assert rel(o, want) <= 1e-12 and rel(lse, want_lse) <= 1e-12, order
    # associativity: (a ⊕ b) ⊕ c == a ⊕ (b ⊕ c)
    left = merge_partials(*merge_partials(*parts[0], *parts[1]), *parts[2])
    right = merge_partials(*parts[0], *merge_partials(*parts[1], *parts[2]))
    assert rel(left[0], right[0]) <= 1e-13 and rel(left[1], right[1]) <= 1e-13
    # a single block is not normalised like the whole: the merge is doing real work
    assert rel(parts[2][0], want) > 1e-3


def test_merge_with_fully_masked_block_and_extreme_scores():
    q, k, v = rand(1, 2, 4, 6, seed=4) * 40.0, rand(1, 2, 9, 6, seed=5) * 40.0, rand(1, 2, 9, 3, seed=6)
    scale = 1.0  # scores of order ±1e3: a merge without the max shift overflows
    nothing = torch.zeros(4, 5, dtype=torch.bool)
    o_masked, lse_masked = attention_partial(q, k[:, :, :5], v[:, :, :5], scale, nothing)
    assert torch.isneginf(lse_masked).all() and (o_masked == 0).all()
    o_rest, lse_rest = attention_partial(q, k[:, :, 5:], v[:, :, 5:], scale)
    o, lse = merge_partials(o_masked, lse_masked, o_rest, lse_rest)
    assert torch.equal(o, o_rest) and torch.equal(lse, lse_rest)  # an empty block is the identity
    empty = merge_partials(o_masked, lse_masked, o_masked, lse_masked)
    assert torch.isneginf(empty[1]).all() and (empty[0] == 0).all() and not empty[0].isnan().any()
    scores = q @ k.transpose(-1, -2) * scale
    assert scores.abs().max() > 500
    o_a, lse_a = attention_partial(q, k[:, :, :5], v[:, :, :5], scale)
    o_m, lse_m = merge_partials(o_a, lse_a, o_rest, lse_rest)
    want = torch.softmax(scores, -1) @ v
    assert torch.isfinite(o_m).all() and rel(o_m, want) <= 1e-12
    assert rel(lse_m, torch.logsumexp(scores, -1)) <= 1e-14


def test_causal_partials_by_global_position():
    """Causal attention split into blocks with masks by global position equals causal attention."""
    q, k, v = rand(1, 2, 12, 4, seed=7), rand(1, 2, 12, 4, seed=8), rand(1, 2, 12, 4, seed=9)
    want, _ = full_attention(q, k, v, torch.ones(12, 12, dtype=torch.bool).tril())
    qs = q[:, :, 6:]  # queries at global positions 6..11
    pos_q = torch.arange(6, 12)[:, None]
    o, lse = None, None
    for a, b in ((0, 5), (5, 9), (9, 12)):
        visible = torch.arange(a, b)[None, :] <= pos_q
        part = attention_partial(qs, k[:, :, a:b], v[:, :, a:b], 0.5, visible)
        o, lse = part if o is None else merge_partials(o, lse, *part)
    assert rel(o, want[:, :, 6:]) <= 1e-12


# -- one process: the op is plain attention -----------------------------------------------------------------------
def test_single_process_equals_softmax_attention_forward_and_backward():
    q, k, v = rand(2, 11, 4, 8, seed=10), rand(2, 11, 2, 8, seed=11), rand(2, 11, 2, 5, seed=12)
    grad = rand(2, 11, 4, 5, seed=13)
    ins = [t.clone().requires_grad_(True) for t in (q, k, v)]
    refs = [t.clone().requires_grad_(True) for t in (q, k, v)]
    out, lse = distributed_softmax_attention(*ins)
    want, _ = softmax_attention(*refs, impl="math")
    assert rel(out, want) <= 1e-12 and lse.shape == (2, 11, 4)
    got = torch.autograd.grad((out * grad).sum(), ins)
    exp = torch.autograd.grad((want * grad).sum(), refs)
    for g, e in zip(got, exp):
        assert rel(g, e) <= 1e-12


def test_bad_inputs_are_one_line_errors():
    q = rand(1, 4, 4, 8)
    with pytest.raises(SeqzooError, match="multiple of the key/value heads"):
        distributed_softmax_attention(q, rand(1, 4, 3, 8), rand(1, 4, 3, 8))
    with pytest.raises(SeqzooError, match="this rank's shard"):
        distributed_softmax_attention(q, rand(1, 5, 4, 8), rand(1, 5, 4, 8))
    with pytest.raises(SeqzooError, match="causal must be"):
        distributed_softmax_attention(q, q, q, causal=1)


# -- several processes ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("nproc", [2, 3])
def test_sharded_ring_attention_matches_one_process(tmp_path, nproc):
    """``nproc`` gloo processes, each holding a contiguous (ragged) shard; 3 ranks also run a 2-rank sub-group."""
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={nproc}", str(SCRIPT), str(tmp_path)],
                          env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=180)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(nproc)
               if (tmp_path / f"rank{r}.json").exists()]
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:] + json.dumps(reports)[:4000]
    assert len(reports) == nproc and all(r["ok"] and r["world"] == nproc for r in reports)
    for report in reports:
        for case, errors in report["errors"].items():
            assert set(errors) == {"forward", "dq", "dk", "dv", "lse"}, case
            assert max(errors.values()) <= (1e-5 if "float32" in case else 1e-10), (case, errors)
    if nproc == 3:
        assert any(case.startswith("group12-") for case in reports[1]["errors"])
