"""Per-kernel CUDA time of one op, ours vs its peers, forward + backward (issue 8: "profile, do not guess").

Builds the same problem as ``gpu_ops.py`` (``build``), runs a few warm-up iterations (autotuning), then profiles
``--iters`` forward + backward passes of each implementation with ``torch.profiler`` and prints the kernels sorted
by total CUDA time. Where our kernel spends the time that the peer does not is what to optimise next.

    python benchmarks/gpu_op_profile.py --op delta_rule --batch 4 --seq 8192
"""

from __future__ import annotations

import argparse
import sys

import torch

sys.path.insert(0, __file__.rsplit("/", 2)[0])
from benchmarks.gpu_ops import build  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--op", default="delta_rule")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=8192)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_op_profile.py needs a CUDA GPU")
    inputs, fns, _ = build(args.op, args.batch, args.seq, args.heads, args.dim, torch.device("cuda"),
                           torch.bfloat16)
    leaves = [x.detach().requires_grad_(x.is_floating_point()) for x in inputs]
    for name, fn in fns.items():
        def step():
            out = fn(*leaves)
            out.float().sum().backward()
        for _ in range(3):
            step()
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(args.iters):
                step()
            torch.cuda.synchronize()
        total = sum(e.device_time_total for e in prof.key_averages()) / args.iters / 1e3
        print(f"--- {args.op} {name} B{args.batch}·T{args.seq} fwd+bwd: {total:.3f} ms of CUDA kernels per iteration")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=args.top, max_name_column_width=60))


if __name__ == "__main__":
    main()
