"""Run under ``python -m torch.distributed.run --standalone --nproc_per_node=P``: sequence-sharded ring attention
(:func:`seqzoo.ops.distributed_attention.distributed_softmax_attention`, gloo on CPU) against single-process
softmax attention on the whole sequence, forward and backward.

Every rank builds the same full q, k, v from a seed, keeps its contiguous shard, runs the distributed op and
compares its shard of the output and of the gradients with the single-process result. Each rank writes its
largest errors as JSON to ``OUT_DIR/rank<r>.json``; the exit status is non-zero if any error is over tolerance.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from seqzoo.ops import softmax_attention
from seqzoo.ops.distributed_attention import distributed_softmax_attention

# name, causal, heads, kv heads, head width, value width, dtype, shard lengths per rank (by world size)
CASES = [
    ("causal-equal", True, 4, 4, 8, 8, torch.float64, {2: [9, 9], 3: [6, 6, 6]}),
    ("causal-gqa-ragged", True, 4, 2, 8, 5, torch.float64, {2: [5, 12], 3: [7, 1, 9]}),
    ("bidirectional-ragged", False, 2, 2, 6, 6, torch.float64, {2: [11, 4], 3: [3, 8, 5]}),
    ("causal-float32", True, 2, 1, 8, 8, torch.float32, {2: [10, 7], 3: [4, 7, 6]}),
]
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def reference(q, k, v, causal):
    if causal:
        return softmax_attention(q, k, v, impl="math")[0]
    groups = q.shape[2] // k.shape[2]
    kh, vh = (t.repeat_interleave(groups, dim=2).transpose(1, 2) for t in (k, v))
    scores = q.transpose(1, 2) @ kh.transpose(-1, -2) * q.shape[-1] ** -0.5
    return (torch.softmax(scores, dim=-1) @ vh).transpose(1, 2)


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def run_case(case, lengths: list[int], rank: int, group=None) -> dict:
    """Errors of this rank's shard for one case (``rank`` is the rank within ``group``)."""
    name, causal, heads, kv_heads, width, v_width, dtype, _ = case
    total, start = sum(lengths), sum(lengths[:rank])
    shard = slice(start, start + lengths[rank])
    gen = torch.Generator().manual_seed(7)
    q = torch.randn(2, total, heads, width, generator=gen, dtype=torch.float64).to(dtype)
    k = torch.randn(2, total, kv_heads, width, generator=gen, dtype=torch.float64).to(dtype)
    v = torch.randn(2, total, kv_heads, v_width, generator=gen, dtype=torch.float64).to(dtype)
    grad_out = torch.randn(2, total, heads, v_width, generator=gen, dtype=torch.float64).to(dtype)
    full = [t.clone().requires_grad_(True) for t in (q, k, v)]
    ref = reference(*full, causal)
    ref_grads = torch.autograd.grad((ref * grad_out).sum(), full)
    mine = [t[:, shard].clone().requires_grad_(True) for t in (q, k, v)]
    out, lse = distributed_softmax_attention(*mine, causal=causal, group=group)
    grads = torch.autograd.grad((out * grad_out[:, shard]).sum(), mine)
    errors = {"forward": rel(out, ref[:, shard])}
    for label, g, g_ref in zip(("dq", "dk", "dv"), grads, ref_grads):
        errors[label] = rel(g, g_ref[:, shard])
    # the returned log-sum-exp is that of each query's scores over the whole (visible) sequence
    kx = k.repeat_interleave(heads // kv_heads, 2).double()
    scores = (q.double().transpose(1, 2) @ kx.transpose(1, 2).transpose(-1, -2)) * width ** -0.5
    if causal:
        scores = scores.masked_fill(torch.ones(total, total, dtype=torch.bool).triu(1), float("-inf"))
    errors["lse"] = rel(lse.transpose(1, 2).double(), torch.logsumexp(scores, -1)[:, :, shard])
    return errors


def main(out_dir: Path) -> int:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    results, ok = {}, True
    for case in CASES:
        results[case[0]] = errors = run_case(case, case[-1][world], rank)
        ok = ok and all(e <= TOL[case[6]] for e in errors.values())
    if world == 3:  # a sub-group whose ranks are not 0-based (global ranks 1, 2): peers are mapped to global ranks
        sub = dist.new_group([1, 2])
        if rank in (1, 2):
            for case in CASES[:3]:
                results["group12-" + case[0]] = errors = run_case(case, case[-1][2], rank - 1, group=sub)
                ok = ok and all(e <= TOL[case[6]] for e in errors.values())
    (out_dir / f"rank{rank}.json").write_text(json.dumps({"world": world, "ok": ok, "errors": results}))
    dist.destroy_process_group()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
