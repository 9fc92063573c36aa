"""CPU benchmark of every registered mixer (issue 3/4 performance items).

1. Fast mode vs the recurrent reference: forward time of the mixer's default implementation against its reference
   implementation (``IMPLS[0]``) at ``T`` tokens (default 4096), B = 1, d_model = 256 — for mixers that have more
   than one implementation.
2. Decode step time vs context length: prefill ``L`` tokens, then time single-token steps through the state.
   Recurrent mixers should be flat in ``L``; attention's per-token time grows with its KV cache.

    python benchmarks/cpu_mixers.py --json mixers.json
    python benchmarks/cpu_mixers.py --quick                       # T=512, contexts 64/256
    python benchmarks/cpu_mixers.py --mixers attention,retention
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_ops import cpu_name  # noqa: E402

import seqzoo  # noqa: E402
from seqzoo.core import mixer_entry, mixer_options  # noqa: E402


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build(name: str, d_model: int, impl: str | None = None):
    kwargs = {"impl": impl} if impl is not None else {}
    torch.manual_seed(0)
    return seqzoo.build_mixer(name, d_model, **kwargs).eval()


@torch.no_grad()
def fast_vs_reference(name: str, d_model: int, length: int, repeats: int) -> dict | None:
    cls = mixer_entry(name).cls
    impls = tuple(getattr(cls, "IMPLS", ()))
    if len(impls) < 2 or "impl" not in mixer_options(name):
        return None
    x = torch.randn(1, length, d_model)
    fast, reference = build(name, d_model), build(name, d_model, impls[0])
    t_fast = median_time(lambda: fast(x), repeats)
    t_ref = median_time(lambda: reference(x), max(1, repeats // 2))
    return {"mixer": name, "T": length, "fast_impl": getattr(fast, "impl", "auto"), "reference": impls[0],
            "fast_ms": 1e3 * t_fast, "reference_ms": 1e3 * t_ref, "speedup": t_ref / t_fast}


@torch.no_grad()
def decode_times(name: str, d_model: int, contexts: list[int], steps: int) -> dict | None:
    cls = mixer_entry(name).cls
    if not cls.causal:
        return None
    mixer = build(name, d_model)
    row = {"mixer": name}
    for context in contexts:
        _, state = mixer(torch.randn(1, context, d_model))
        token = torch.randn(1, 1, d_model)

        def step():
            s = state
            for _ in range(steps):
                _, s = mixer(token, s)

        row[context] = 1e3 * median_time(step, 3) / steps
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--mixers", default="", help="comma-separated names (default: all registered)")
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--contexts", default="256,1024,4096")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    length = 512 if args.quick else args.length
    contexts = [64, 256] if args.quick else [int(c) for c in args.contexts.split(",")]
    names = [n for n in args.mixers.split(",") if n] or seqzoo.list_mixers()

    print(f"CPU: {cpu_name()}, torch {torch.__version__}, threads {torch.get_num_threads()}, d_model {args.d_model}")
    print(f"\n## fast mode vs recurrent reference, forward, B=1, T={length}")
    print(f"{'mixer':24s} {'fast impl':>10s} {'fast ms':>10s} {'ref ms':>10s} {'speed-up':>9s}")
    fast_rows = []
    for name in names:
        row = fast_vs_reference(name, args.d_model, length, args.repeats)
        if row:
            fast_rows.append(row)
            print(f"{name:24s} {row['fast_impl']:>10s} {row['fast_ms']:10.1f} {row['reference_ms']:10.1f} "
                  f"{row['speedup']:8.1f}x")

    print(f"\n## decode: ms per token after a context of L tokens (B=1, {args.steps} steps)")
    print(f"{'mixer':24s} " + " ".join(f"{'L=' + str(c):>10s}" for c in contexts) + f" {'last/first':>11s}")
    decode_rows = []
    for name in names:
        row = decode_times(name, args.d_model, contexts, args.steps)
        if row:
            decode_rows.append(row)
            growth = row[contexts[-1]] / row[contexts[0]]
            print(f"{name:24s} " + " ".join(f"{row[c]:10.3f}" for c in contexts) + f" {growth:10.2f}x")

    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_name(), "torch": torch.__version__,
                                               "threads": torch.get_num_threads(), "d_model": args.d_model,
                                               "fast_vs_reference": fast_rows, "decode": decode_rows}, indent=2))


if __name__ == "__main__":
    main()
