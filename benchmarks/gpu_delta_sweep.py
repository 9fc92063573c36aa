"""Launch-setting sweep of the delta-rule Triton kernels on a GPU (issue 8: measure where the time goes).

For each variant (``num_warps`` / ``num_stages`` of each kernel, the V block of the sequential kernels) this prints
the time of every kernel of one forward + backward pass (``torch.profiler``) and of the whole pass. The sweep is
greedy, one kernel at a time, keeping each kernel's fastest setting (the V block is shared by the two sequential
kernels, so their rows interact). fla's ``chunk_delta_rule`` is timed first, in the same process; then come our
errors at the start settings, the sweep, the best settings with their errors (output and q, k, v, β gradients
against the float64 chunk form at the ``--error-dims`` head sizes, beside fla's) and each compiled kernel's
registers, spills and shared memory. ``--no-sweep`` stops after the start settings (allow it ~5 minutes: fla
autotunes at every shape).

    python benchmarks/gpu_delta_sweep.py --batch 4 --seq 8192 [--float32-intermediates] [--no-sweep] [--json out.json]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, __file__.rsplit("/", 2)[0])
from benchmarks._gpu_common import cuda_time, environment, kernel_ms, write_json  # noqa: E402

KERNELS = {   # LAUNCH key -> kernel function name
    "wy_forward": "_wy_forward_kernel", "state_forward": "_state_forward_kernel",
    "output_forward": "_output_forward_kernel", "dq_dv_intra": "_dq_dv_intra_kernel",
    "state_backward": "_state_backward_kernel", "wy_backward": "_wy_backward_kernel",
}
SEQUENTIAL = ("state_forward", "state_backward")


def inputs(B, T, H, D, dtype, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    q, k, v = (torch.randn(B, T, H, D, device="cuda", generator=gen) for _ in range(3))
    k = F.normalize(k, dim=-1)
    beta = torch.rand(B, T, H, device="cuda", generator=gen)
    return [x.to(dtype).requires_grad_() for x in (q, k, v, beta)]


def fwd_bwd(fn, leaves, do):
    def step():
        o = fn(*leaves)
        torch.autograd.backward(o, do)
    return step


def kernel_times(step, iters=5) -> dict[str, float]:
    """ms per iteration of each of our kernels (and 'other': everything else on the GPU)."""
    step()
    out = {name: 0.0 for name in KERNELS}
    out["other"] = 0.0
    names = {v: k for k, v in KERNELS.items()}
    for kernel, ms in kernel_ms(step, iters=iters).items():
        out[names.get(kernel, "other")] += ms
    return out


def compiled_stats(kd) -> list[str]:
    """Registers, spills and shared memory of every compiled variant of each kernel."""
    lines = []
    for name, fn_name in KERNELS.items():
        fn = getattr(kd, fn_name)
        for device_cache in fn.device_caches.values():
            for kernel in device_cache[0].values():
                if hasattr(kernel, "_init_handles"):
                    kernel._init_handles()        # Triton 3.x loads the binary (and its register count) lazily
                md = kernel.metadata
                lines.append(f"{name:15s} warps={md.num_warps} stages={md.num_stages} "
                             f"regs={getattr(kernel, 'n_regs', '?')} spills={getattr(kernel, 'n_spills', '?')} "
                             f"shared={md.shared}")
    return lines


def rel(a, b) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


@functools.lru_cache(maxsize=4)
def _reference(B, T, H, D, dtype):
    """The float64 chunk form's output, a random output gradient and the input gradients, on errors()' inputs."""
    import seqzoo.ops as ops

    ref_leaves = [x.detach().double().requires_grad_() for x in inputs(B, T, H, D, dtype, seed=1)]
    o_ref, _ = ops.delta_rule(*ref_leaves, impl="chunk")
    do = torch.randn_like(o_ref)
    return o_ref.detach(), do, torch.autograd.grad(o_ref, ref_leaves, do)


def errors(fn, B, T, H, D, dtype) -> dict[str, float]:
    """Relative errors of o and the q, k, v, β gradients against the float64 chunk form (itself tested against the
    float64 recurrence), on fresh inputs."""
    leaves = inputs(B, T, H, D, dtype, seed=1)
    o_ref, do, grads_ref = _reference(B, T, H, D, dtype)
    o = fn(*leaves)
    grads = torch.autograd.grad(o, leaves, do.to(o.dtype))
    out = {"o": rel(o, o_ref)}
    out.update({f"d{n}": rel(g, r) for n, g, r in zip(("q", "k", "v", "beta"), grads, grads_ref)})
    return {k: round(v, 5) for k, v in out.items()}


def int_list(text: str) -> list[int]:
    """argparse type: comma-separated integers ("2,4,8")."""
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=8192)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--error-dims", type=int_list, default=None, help="head sizes of the error checks (default: D,16; each one "
                                                              "compiles fla and our kernels again, about a minute)")
    ap.add_argument("--warps", type=int_list, default=[2, 4, 8])
    ap.add_argument("--stages", type=int_list, default=[1, 2, 3])
    ap.add_argument("--kernels", default=",".join(KERNELS), help="the kernels to sweep, in order")
    ap.add_argument("--block-v", type=int_list, default=None,
                    help="V blocks of the wy_backward kernel to sweep (default: the shared V block only)")
    ap.add_argument("--raw", action="store_true",
                    help="launch each swept setting as given, without the host's overrides (which avoid shared-memory "
                         "overflow and known miscompiles): to measure those")
    ap.add_argument("--check-each", action="store_true",
                    help="the output and gradient errors at head size D after every setting")
    ap.add_argument("--no-peer", action="store_true", help="skip fla (its autotuning takes minutes)")
    ap.add_argument("--no-sweep", action="store_true", help="only time and check the current settings")
    ap.add_argument("--float32-intermediates", action="store_true",
                    help="FAST_16BIT off: W, U, V', dV' in float32 (the default mode keeps them in bf16)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_delta_sweep.py needs a CUDA GPU")
    import seqzoo.ops as ops
    import seqzoo.ops.triton.delta_rule as kd

    torch.backends.cuda.matmul.allow_tf32 = False
    kd.FAST_16BIT = not args.float32_intermediates
    B, T, H, D = args.batch, args.seq, args.heads, args.dim
    dims = args.error_dims or [D, 16]
    leaves = inputs(B, T, H, D, torch.bfloat16)
    do = torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16)

    def ours(q, k, v, b):
        return ops.delta_rule(q, k, v, b, impl="triton")[0]

    result = {"env": environment(), "shape": [B, T, H, D], "fast_16bit": not args.float32_intermediates}
    try:
        if args.no_peer:
            raise ImportError("--no-peer")
        from fla.ops.delta_rule import chunk_delta_rule

        def fla(q, k, v, b):
            return chunk_delta_rule(q, k, v, b)[0]

        result["fla_ms"] = cuda_time(fwd_bwd(fla, leaves, do), warmup=3, iters=10) * 1e3
        result["fla_errors"] = {d: errors(fla, 1, 4096, 4, d, torch.bfloat16) for d in dims}
    except Exception as exc:  # noqa: BLE001 - the peer is optional
        print(f"fla: not measured ({type(exc).__name__}: {exc})")
    print(f"fla: {result.get('fla_ms')} ms, errors {result.get('fla_errors')}", flush=True)
    step = fwd_bwd(ours, leaves, do)
    print(f"delta_rule B{B}·T{T}·H{H}·D{D} bf16, FAST_16BIT={kd.FAST_16BIT}", flush=True)

    def measure(label):
        try:
            times = kernel_times(step)
        except Exception as exc:  # noqa: BLE001 - a setting that does not compile (e.g. out of shared memory)
            print(f"  {label}: failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}", flush=True)
            return None
        total = sum(times.values())
        print(f"  {label}: total {total:.3f} ms | " + " ".join(f"{k} {v:.3f}" for k, v in times.items()),
              flush=True)
        return times

    base = measure("start")
    result["start_errors"] = {d: errors(ours, 1, 4096, 4, d, torch.bfloat16) for d in dims}
    print(f"errors at the start settings: {result['start_errors']}", flush=True)
    if args.no_sweep:
        write_json(args.json, result)
        return
    warps, stages = args.warps, args.stages
    table = kd.LAUNCH_16BIT if kd.FAST_16BIT and D >= 64 else kd.LAUNCH
    prec = kd._precision(torch.bfloat16, D)[0]
    if args.raw:
        kd._launch = lambda name, K, prec: dict(table[name])
    for name in args.kernels.split(","):
        best, best_t = dict(table[name]), (base or {}).get(name, float("inf"))
        best_bv = kd.STATE_BV
        bvs = (32, 64) if name in SEQUENTIAL else (kd.STATE_BV,)
        block_vs = args.block_v if name == "wy_backward" and args.block_v else (None,)
        for nw, ns, bv, block_v in itertools.product(warps, stages, bvs, block_vs):
            table[name] = dict(num_warps=nw, num_stages=ns, **({} if block_v is None else {"block_v": block_v}))
            kd.STATE_BV = bv
            run = kd._launch(name, D, prec)      # what is launched (the host overrides some settings)
            ran = "" if run == table[name] else f" (runs warps={run['num_warps']} stages={run['num_stages']})"
            label = (f"{name} warps={nw} stages={ns}{ran}" + (f" BV={bv}" if name in SEQUENTIAL else "")
                     + ("" if block_v is None else f" block_v={block_v}"))
            t = measure(label)
            if t is not None and args.check_each:
                print(f"    errors: {errors(ours, 1, 4096, 4, D, torch.bfloat16)}", flush=True)
            if t is not None and t[name] < best_t:
                best, best_t, best_bv = dict(table[name]), t[name], bv
        table[name], kd.STATE_BV = best, best_bv
        print(f"* {name}: best {best} BV={best_bv} at {best_t:.3f} ms", flush=True)
    final = measure("best")
    total_ms = cuda_time(step, warmup=3, iters=10) * 1e3
    result.update(launch=table, state_bv=kd.STATE_BV, kernels_ms=final, total_ms=total_ms,
                  errors={d: errors(ours, 1, 4096, 4, d, torch.bfloat16) for d in dims})
    print("\n".join(compiled_stats(kd)))
    for key in ("launch", "state_bv", "total_ms", "fla_ms", "errors", "fla_errors"):
        print(f"{key}: {result.get(key)}")
    if "fla_ms" in result:
        print(f"ours / fla: {result['total_ms'] / result['fla_ms']:.2f}x")
    write_json(args.json, result)


if __name__ == "__main__":
    main()
