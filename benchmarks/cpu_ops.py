"""CPU benchmark of the recurrent ops: the fast pure-PyTorch form ("auto") against the step-by-step reference.

Ops and equations (see each op's module docstring in ``seqzoo/ops`` for the papers):
linear_attention (S_t = S_{t-1} + k_tᵀ v_t), decay_linear_attention (S_t = exp(g_t) S_{t-1} + k_tᵀ v_t),
delta_rule (S_t = S_{t-1} + β_t k_tᵀ (v_t − k_t S_{t-1})) and selective_scan
(x_t = exp(Δ_t A) ⊙ x_{t-1} + Δ_t u_t B_t, y_t = x_t C_t + D u_t).

Settings: B = 1, H = 4, K = V = 64 (selective_scan: Dm = H·D = 256, N = 16), float32, T ∈ {256, 1024, 4096};
forward only by default (``--backward`` adds forward + backward). Each configuration is timed ``--repeats`` times,
the reference and the fast form alternating so that background load hits both alike; the median is reported
(the ratio of the best times is printed too, as a check on shared, noisy machines).

    python benchmarks/cpu_ops.py --json results.json            # full run
    python benchmarks/cpu_ops.py --quick                          # small settings, a few seconds
    python benchmarks/cpu_ops.py --chunk-sizes 64,128 --threads 1 # try chunk sizes, pin the thread count
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from seqzoo.ops import decay_linear_attention, delta_rule, linear_attention, selective_scan

OPS = ("linear_attention", "decay_linear_attention", "delta_rule", "selective_scan")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_idle_fraction(seconds: float = 0.5) -> float | None:
    """Fraction of CPU time spent idle over ``seconds`` (from /proc/stat; None where unavailable)."""
    def sample():
        with open("/proc/stat", encoding="utf-8") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        return fields[3] + fields[4], sum(fields)          # idle + iowait, total

    try:
        idle0, total0 = sample()
        time.sleep(seconds)
        idle1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return (idle1 - idle0) / max(1, total1 - total0)


def wait_for_idle(max_wait: float, min_idle: float = 0.85) -> bool:
    """On a shared machine, wait (up to ``max_wait`` s) until other processes leave the CPUs mostly idle."""
    deadline = time.monotonic() + max_wait
    while time.monotonic() < deadline:
        idle = cpu_idle_fraction()
        if idle is None or idle >= min_idle:
            return True
    return False


def make_inputs(op: str, T: int, B: int, H: int, D: int, N: int, requires_grad: bool):
    """Positional inputs of ``op`` (float32) with realistic value ranges."""
    gen = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=gen)

    if op == "selective_scan":
        Dm = H * D
        inputs = [randn(B, T, Dm), F.softplus(randn(B, T, Dm) - 3.0), -torch.arange(1, N + 1.0).repeat(Dm, 1),
                  randn(B, T, N), randn(B, T, N), randn(Dm)]
    else:
        inputs = [randn(B, T, H, D), F.normalize(randn(B, T, H, D), dim=-1), randn(B, T, H, D)]
        if op == "decay_linear_attention":
            inputs.append(F.logsigmoid(randn(B, T, H) + 4.0))
        elif op == "delta_rule":
            inputs.append(torch.sigmoid(randn(B, T, H)))
    return [x.requires_grad_(requires_grad) for x in inputs]


def op_function(op: str):
    return {"linear_attention": linear_attention, "decay_linear_attention": decay_linear_attention,
            "delta_rule": delta_rule, "selective_scan": selective_scan}[op]


def time_once(fn, inputs, backward: bool, **kwargs) -> float:
    start = time.perf_counter()
    if backward:
        out, state = fn(*inputs, **kwargs)
        (out.sum() + state.sum()).backward()
    else:
        with torch.no_grad():
            fn(*inputs, **kwargs)
    return time.perf_counter() - start


def bench(op: str, T: int, args, chunk_sizes: list[int | None]) -> list[dict]:
    fn = op_function(op)
    inputs = make_inputs(op, T, args.batch, args.heads, args.dim, args.state, args.backward)
    configs = [("recurrent", None)] + [("auto", c) for c in chunk_sizes]
    times: dict = {cfg: [] for cfg in configs}
    quiet = True
    for impl, chunk in configs:                                      # warm-up
        time_once(fn, inputs, args.backward, impl=impl, **({} if chunk is None else {"chunk_size": chunk}))
    for _ in range(args.repeats):
        if args.wait_idle:
            quiet = wait_for_idle(args.wait_idle) and quiet
        for impl, chunk in configs:
            kwargs = {} if chunk is None else {"chunk_size": chunk}
            times[(impl, chunk)].append(time_once(fn, inputs, args.backward, impl=impl, **kwargs))
    reference = statistics.median(times[("recurrent", None)])
    reference_best = min(times[("recurrent", None)])
    rows = []
    for impl, chunk in configs[1:]:
        fast, fast_best = statistics.median(times[(impl, chunk)]), min(times[(impl, chunk)])
        rows.append({"op": op, "T": T, "impl": impl, "chunk_size": chunk, "recurrent_ms": reference * 1e3,
                     "fast_ms": fast * 1e3, "ratio": reference / fast, "recurrent_best_ms": reference_best * 1e3,
                     "fast_best_ms": fast_best * 1e3, "ratio_best": reference_best / fast_best,
                     "mode": "fwd+bwd" if args.backward else "fwd", "machine_was_quiet": quiet})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small settings (T = 64, 256; 3 repeats)")
    parser.add_argument("--json", help="write the results as JSON to this path")
    parser.add_argument("--ops", default=",".join(OPS), help="comma-separated subset of " + ", ".join(OPS))
    parser.add_argument("--lengths", default=None, help="comma-separated T values (default 256,1024,4096)")
    parser.add_argument("--chunk-sizes", default="default",
                        help="comma-separated chunk sizes to time for the fast form ('default': the op's default)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per configuration (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--backward", action="store_true", help="time forward + backward instead of forward")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                        help="before each round of timings wait up to SECONDS for the CPUs to be mostly idle "
                             "(for shared machines)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--dim", type=int, default=64, help="K = V = dim; selective_scan uses Dm = heads·dim")
    parser.add_argument("--state", type=int, default=16, help="selective_scan state size N")
    args = parser.parse_args(argv)

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    lengths = [int(t) for t in (args.lengths or ("64,256" if args.quick else "256,1024,4096")).split(",")]
    args.repeats = args.repeats or (3 if args.quick else 5)
    ops = [op.strip() for op in args.ops.split(",")]
    unknown = [op for op in ops if op not in OPS]
    if unknown:
        parser.error(f"unknown op {unknown[0]!r}; valid: {', '.join(OPS)}")
    chunk_sizes = [None] if args.chunk_sizes == "default" else [int(c) for c in args.chunk_sizes.split(",")]

    rows = []
    header = (f"{'op':<24} {'T':>5} {'chunk':>6} {'recurrent ms':>13} {'fast ms':>9} {'ratio':>7} "
              f"{'best-of ratio':>14}")
    print(f"torch {torch.__version__}, {cpu_name()}, {torch.get_num_threads()} threads, "
          f"{'fwd+bwd' if args.backward else 'fwd'}, float32, B={args.batch} H={args.heads} D={args.dim}")
    print(header)
    print("-" * len(header))
    for op in ops:
        for T in lengths:
            for row in bench(op, T, args, chunk_sizes):
                rows.append(row)
                chunk = "auto" if row["chunk_size"] is None else str(row["chunk_size"])
                print(f"{op:<24} {T:>5} {chunk:>6} {row['recurrent_ms']:>13.1f} {row['fast_ms']:>9.2f} "
                      f"{row['ratio']:>6.1f}x {row['ratio_best']:>13.1f}x", flush=True)
    if args.json:
        meta = {"torch": torch.__version__, "python": platform.python_version(), "cpu": cpu_name(),
                "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "dtype": "float32",
                "batch": args.batch, "heads": args.heads, "dim": args.dim, "state": args.state,
                "repeats": args.repeats, "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
                "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"meta": meta, "results": rows}, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
