"""GPU op benchmark: seqzoo's Triton kernels vs fla, mamba_ssm and SDPA, forward and forward+backward (issue 8).

Ops (bf16, H = 16, D = 128 unless ``--quick``) at B·T = 8·2048, 4·8192 and 1·32768:

* ``linear_attention`` vs fla ``chunk_linear_attn`` (``normalize=False``: the same computation);
* ``decay_linear_attention`` vs fla ``chunk_simple_gla`` — forward only for fla (fla 0.6.0's gated backward refuses
  Triton < 3.7.1 on Hopper), our forward+backward reported alone;
* ``delta_rule`` vs fla ``chunk_delta_rule`` (keys L2-normalised);
* ``selective_scan`` (Mamba-1 shapes: Dm = H·D channels, N = 16) vs mamba_ssm ``selective_scan_fn``;
* ``mamba2-ssd``: the Mamba-2 SSD layer computed by ``decay_linear_attention`` with q = C, k = B, v = x·Δ,
  g = Δ·A (P = 128, N = 128, H = 16, one B/C group shared by the heads, chunk 64) vs mamba_ssm
  ``mamba_chunk_scan_combined``, and beside the issue's measured mamba_ssm figures;
* every row also shows its ratio to causal SDPA (``scaled_dot_product_attention(is_causal=True)``) at that shape.

Times are medians of CUDA-event timings after warm-up (which includes Triton autotuning), each call synchronised
(or, with ``--back-to-back``, calls queued without synchronisation, hiding host time). Ratios are ours / peer
(< 1: ours is faster). The goal (issue 8): ≤ 0.9× fla at T ≥ 8192 and never above 1.1× at any shape. Peers that
are not installed, and ops whose Triton impl does not exist yet, are skipped with a note.

    python benchmarks/gpu_ops.py [--quick] [--json out.json] [--ops linear_attention,delta_rule] [--iters 20]
        [--variants]    (adds columns for kernel variants: delta rule with float32 intermediates, selective scan forced
                        segmented / sequential; ``ours / variant`` > 1 means the variant is faster)
        [--profile]     (after each timing: GPU busy vs idle time of the call, most expensive kernels)
        [--back-to-back] (calls queued without a synchronisation between them; default: each call synchronised)
"""

from __future__ import annotations

import argparse
import inspect
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, __file__.rsplit("/", 2)[0])
from benchmarks._gpu_common import cuda_time, environment, kernel_ms, write_json  # noqa: E402

OPS = ("linear_attention", "decay_linear_attention", "delta_rule", "selective_scan", "mamba2-ssd")
SHAPES = ((8, 2048), (4, 8192), (1, 32768))
QUICK_SHAPES = ((2, 512), (1, 2048))
# mamba_ssm SSD (Mamba-2, P = 128, N = 128, chunk 64), bf16 forward+backward on an H200, from issue 8 (ms)
MAMBA2_ISSUE_MS = {(8, 2048): 4.11, (4, 8192): 3.50, (1, 32768): 3.55}
SSM_STATE = 16   # Mamba-1 state size N of the selective-scan rows


def _peer(module: str, name: str):
    """``module.name`` or None when the package is absent (peers are optional)."""
    try:
        return getattr(__import__(module, fromlist=[name]), name)
    except Exception:  # noqa: BLE001 - an absent or broken peer is skipped
        return None


def _kwargs_for(fn, **wanted):
    """The keyword arguments of ``wanted`` that ``fn`` accepts (peer APIs differ between versions)."""
    params = inspect.signature(fn).parameters
    return {k: v for k, v in wanted.items() if k in params}


# ------------------------------------------------------------------------------------------ problems
# each builder returns (inputs: list of tensors, {name: fn(*inputs) -> output tensor}, {peer names: fwd only})
def _matrix_inputs(B, T, H, D, gate, device, dtype):
    q, k, v = (torch.randn(B, T, H, D, device=device, dtype=dtype) for _ in range(3))
    k = F.normalize(k.float(), dim=-1).to(dtype)
    if gate == "g":
        return [q, k, v, F.logsigmoid(torch.randn(B, T, H, device=device) + 3.0)]
    if gate == "beta":
        return [q, k, v, torch.rand(B, T, H, device=device, dtype=dtype)]
    return [q, k, v]


def _flagged(module, flag: str, fn, value=True):
    """fn run with ``module.flag = value`` (a kernel variant; its backward follows its forward)."""
    def run(*args):
        saved = getattr(module, flag)
        setattr(module, flag, value)
        try:
            return fn(*args)
        finally:
            setattr(module, flag, saved)
    return run


def build(op, B, T, H, D, device, dtype, variants=False):
    """``variants``: also time kernel variants (modes that are not the default), as extra columns."""
    import seqzoo.ops as ops

    if op == "linear_attention":
        inputs = _matrix_inputs(B, T, H, D, None, device, dtype)
        fns = {"ours": lambda q, k, v: ops.linear_attention(q, k, v, impl="triton")[0]}
        fla = _peer("fla.ops.linear_attn", "chunk_linear_attn")
        if fla is not None:
            extra = _kwargs_for(fla, normalize=False, head_first=False)
            fns["fla"] = lambda q, k, v: fla(q, k, v, **extra)[0]
        return inputs, fns, set()
    if op == "decay_linear_attention":
        inputs = _matrix_inputs(B, T, H, D, "g", device, dtype)
        fns = {"ours": lambda q, k, v, g: ops.decay_linear_attention(q, k, v, g, impl="triton")[0]}
        fla = _peer("fla.ops.simple_gla", "chunk_simple_gla")
        if fla is not None:
            extra = _kwargs_for(fla, head_first=False)
            fns["fla"] = lambda q, k, v, g: fla(q, k, v, g, **extra)[0]
        return inputs, fns, {"fla"}
    if op == "delta_rule":
        inputs = _matrix_inputs(B, T, H, D, "beta", device, dtype)
        fns = {"ours": lambda q, k, v, b: ops.delta_rule(q, k, v, b, impl="triton")[0]}
        if variants:
            import seqzoo.ops.triton.delta_rule as kernels

            fns["ours-f32inter"] = _flagged(kernels, "FAST_16BIT", fns["ours"], False)
        fla = _peer("fla.ops.delta_rule", "chunk_delta_rule")
        if fla is not None:
            extra = _kwargs_for(fla, head_first=False)
            fns["fla"] = lambda q, k, v, b: fla(q, k, v, b, **extra)[0]
        return inputs, fns, set()
    if op == "selective_scan":
        Dm, N = H * D, SSM_STATE
        u = torch.randn(B, T, Dm, device=device, dtype=dtype)
        delta = F.softplus(torch.randn(B, T, Dm, device=device) - 3.0).to(dtype)
        A = -torch.rand(Dm, N, device=device) - 0.5
        Bm, Cm = (torch.randn(B, T, N, device=device, dtype=dtype) for _ in range(2))
        Dskip = torch.randn(Dm, device=device)
        inputs = [u, delta, A, Bm, Cm, Dskip]
        fns = {"ours": lambda u, d, A, b, c, D_: ops.selective_scan(u, d, A, b, c, D_, impl="triton")[0]}
        if variants:
            import seqzoo.ops.triton.selective_scan as kernels

            fns["ours-segmented"] = _flagged(kernels, "SEGMENTED", fns["ours"], True)
            fns["ours-sequential"] = _flagged(kernels, "SEGMENTED", fns["ours"], False)
        scan = _peer("mamba_ssm.ops.selective_scan_interface", "selective_scan_fn")
        if scan is not None:
            fns["mamba_ssm"] = lambda u, d, A, b, c, D_: scan(u.transpose(1, 2), d.transpose(1, 2), A,
                                                              b.transpose(1, 2), c.transpose(1, 2), D_)
        return inputs, fns, set()
    if op == "mamba2-ssd":
        P = N = D
        x = torch.randn(B, T, H, P, device=device, dtype=dtype)
        dt = F.softplus(torch.randn(B, T, H, device=device) - 2.0)
        A = -torch.rand(H, device=device) - 0.5
        Bm, Cm = (torch.randn(B, T, 1, N, device=device, dtype=dtype) for _ in range(2))
        inputs = [x, dt, A, Bm, Cm]

        def ours(x, dt, A, b, c):
            v = (x * dt.unsqueeze(-1).to(x.dtype))
            o, _ = ops.decay_linear_attention(c.expand(-1, -1, H, -1), b.expand(-1, -1, H, -1), v, dt * A,
                                              scale=1.0, impl="triton")
            return o

        fns = {"ours": ours}
        ssd = _peer("mamba_ssm.ops.triton.ssd_combined", "mamba_chunk_scan_combined")
        if ssd is not None:
            fns["mamba_ssm"] = lambda x, dt, A, b, c: ssd(x, dt, A, b, c, chunk_size=64)
        return inputs, fns, set()
    raise ValueError(op)


def sdpa_fn(B, T, H, D, device, dtype):
    inputs = [torch.randn(B, H, T, D, device=device, dtype=dtype) for _ in range(3)]
    return inputs, (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True))


# ------------------------------------------------------------------------------------------ timing
def _step(fn, inputs, backward: bool):
    """One call of fn (forward, no grad) or of fn + its backward through every floating input."""
    if not backward:
        def forward():
            with torch.no_grad():
                fn(*inputs)
        return forward
    leaves = [x.detach().requires_grad_() if x.is_floating_point() else x for x in inputs]
    grad_of = [x for x in leaves if x.requires_grad]
    grad_out = torch.randn_like(fn(*leaves))

    def step():
        torch.autograd.grad(fn(*leaves), grad_of, grad_out, allow_unused=True)
    return step


def time_fn(fn, inputs, backward: bool, warmup: int, iters: int, back_to_back: bool = False) -> float:
    """Median ms of fn (forward) or of fn + its backward through every floating input."""
    return cuda_time(_step(fn, inputs, backward), warmup=warmup, iters=iters, back_to_back=back_to_back) * 1e3


def profile_fn(fn, inputs, backward: bool, iters: int = 5, top: int = 6) -> str:
    """Where one call's time goes: the GPU's busy time (sum of kernel times) against the call's wall time (as timed:
    synchronised before and after), so host time that leaves the GPU idle shows as the difference; and the most
    expensive kernels."""
    step = _step(fn, inputs, backward)
    kernels = sorted(((ms, name) for name, ms in kernel_ms(step, iters=iters, sync_each=True).items()), reverse=True)
    busy = sum(ms for ms, _ in kernels)
    wall = cuda_time(step, warmup=1, iters=iters) * 1e3
    top_kernels = ", ".join(f"{name[:40]} {ms:.3f}" for ms, name in kernels[:top])
    return (f"wall {wall:.3f} ms, GPU busy {busy:.3f} ms, idle {wall - busy:.3f} ms, {len(kernels)} kernel kinds; "
            f"top: {top_kernels}")


def measure(fn, inputs, backward, args):
    try:
        return time_fn(fn, inputs, backward, args.warmup, args.iters, args.back_to_back), None
    except Exception as err:  # noqa: BLE001 - a peer that fails (e.g. fla's gated backward) is reported
        torch.cuda.synchronize()
        return None, f"{type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}"


def available(op, device, dtype) -> str | None:
    """None when our Triton impl of ``op`` runs on a tiny input, else why not."""
    try:
        inputs, fns, _ = build(op, 1, 64, 2, 32, device, dtype)
        fns["ours"](*inputs)
        torch.cuda.synchronize()
        return None
    except Exception as err:  # noqa: BLE001 - an impl not written yet is skipped
        return f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", default=",".join(OPS))
    ap.add_argument("--quick", action="store_true", help="tiny shapes (H 4, D 64), a smoke test")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--variants", action="store_true", help="also time kernel variants (delta rule with "
                                                            "float32 intermediates, selective scan forced segmented / "
                                                            "sequential)")
    ap.add_argument("--back-to-back", action="store_true",
                    help="time calls queued without a synchronisation between them (the GPU's time, host time hidden "
                         "as in a training loop) instead of each call synchronised (host time that idles the GPU "
                         "counts)")
    ap.add_argument("--profile", action="store_true", help="after each timing, print where the call's time goes "
                                                           "(GPU busy vs idle, most expensive kernels)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--floors", action="store_true", help="print the FLOP/byte floors of every op and shape and exit "
                                                          "(no GPU needed)")
    args = ap.parse_args()
    if args.floors:
        print_floors(args.ops.split(","), QUICK_SHAPES if args.quick else SHAPES, *((4, 64) if args.quick else
                                                                                     (16, 128)))
        return
    if not torch.cuda.is_available():
        sys.exit("gpu_ops.py needs a CUDA GPU")
    device, dtype = torch.device("cuda"), torch.bfloat16
    shapes, H, D = (QUICK_SHAPES, 4, 64) if args.quick else (SHAPES, 16, 128)
    if args.quick:
        args.iters, args.warmup = min(args.iters, 5), min(args.warmup, 2)
    torch.manual_seed(0)

    sdpa = {}
    for B, T in shapes:
        inputs, fn = sdpa_fn(B, T, H, D, device, dtype)
        sdpa[(B, T)] = {mode: measure(fn, inputs, mode == "fwd+bwd", args)[0] for mode in ("fwd", "fwd+bwd")}
        print(f"sdpa B{B} T{T}: {sdpa[(B, T)]}", flush=True)
        del inputs
    rows, notes = [], []
    for op in args.ops.split(","):
        why = available(op, device, dtype)
        if why is not None:
            notes.append(f"{op}: skipped, our Triton impl is not available ({why})")
            print(notes[-1], flush=True)
            continue
        for B, T in shapes:
            inputs, fns, fwd_only = build(op, B, T, H, D, device, dtype, args.variants)
            for mode in ("fwd", "fwd+bwd"):
                row = {"op": op, "B": B, "T": T, "H": H, "D": D, "mode": mode, "ms": {}, "errors": {}}
                for name, fn in fns.items():
                    if mode == "fwd+bwd" and name in fwd_only:
                        row["errors"][name] = "forward only (fla's gated backward needs Triton >= 3.7.1 on Hopper)"
                        continue
                    ms, err = measure(fn, inputs, mode == "fwd+bwd", args)
                    if ms is not None:
                        row["ms"][name] = ms
                        if args.profile:
                            print(f"  profile {op} B{B}·T{T} {mode} {name}: "
                                  f"{profile_fn(fn, inputs, mode == 'fwd+bwd')}", flush=True)
                    else:
                        row["errors"][name] = err
                if sdpa[(B, T)][mode] is not None:
                    row["ms"]["sdpa"] = sdpa[(B, T)][mode]
                if op == "mamba2-ssd" and mode == "fwd+bwd" and (B, T) in MAMBA2_ISSUE_MS and not args.quick:
                    row["ms"]["mamba_ssm(issue)"] = MAMBA2_ISSUE_MS[(B, T)]
                ours = row["ms"].get("ours")
                row["ratio"] = {k: ours / v for k, v in row["ms"].items() if k != "ours" and ours is not None}
                rows.append(row)
                print(_format(row), flush=True)
            del inputs, fns
            torch.cuda.empty_cache()

    print(f"\n{'op':24s} {'shape':>11s} {'mode':8s} {'ours ms':>8s}  peers: ms (ours/peer)")
    for row in rows:
        print(_format(row))
    verdict = _goal(rows)
    print("\n" + "\n".join(verdict + notes))
    write_json(args.json, {"env": environment(), "H": H, "D": D, "dtype": str(dtype), "back_to_back": args.back_to_back,
                           "rows": rows,
                           "goal": verdict, "notes": notes})


def _format(row) -> str:
    ours = row["ms"].get("ours")
    peers = "  ".join(f"{k} {v:.3f} ({row['ratio'][k]:.2f}x)" for k, v in row["ms"].items()
                      if k != "ours" and k in row["ratio"])
    errs = "  ".join(f"{k}: {v}" for k, v in row["errors"].items())
    ours_s = f"{ours:8.3f}" if ours is not None else f"{'-':>8s}"
    return f"{row['op']:24s} {'B' + str(row['B']) + '·T' + str(row['T']):>11s} {row['mode']:8s} {ours_s}  {peers}" \
           + (f"  [{errs}]" if errs else "")


# H200 ceilings measured on these machines (device notes, KINDS.md): bf16 matrix products 790 TFLOP/s, a
# device-to-device copy 4.3 TB/s (bytes read + written); the exponential unit (MUFU) does 16 per SM per clock:
# 132 SMs × 1.98 GHz × 16 ≈ 4.2·10¹² exp/s.
PEAK_FLOPS, PEAK_BYTES, PEAK_EXP = 790e12, 4.3e12, 132 * 1.98e9 * 16
CHUNK = 64


def floor_ms(op: str, B: int, T: int, H: int, D: int, backward: bool) -> dict:
    """Lower bounds on the time of one call: the arithmetic of the chunked algorithm at the bf16 matrix rate, the
    unavoidable HBM traffic (inputs read once, outputs written once, bf16; fp32 gates) at the copy rate, and for the
    selective scan the exponentials at the MUFU rate. Backward counts twice the forward's arithmetic and reads
    the inputs and the output gradient and writes the input gradients. Returns ms per bound and their maximum.

    Per token and head, with K = V = D and chunk C: linear attention 4CD (intra-chunk QKᵀ and PV) + 4D² (q·S and
    the state update KᵀV); the delta rule adds the WY form, 4CD (KKᵀ, W = AK, U = AV: one of them counted in the
    4CD above) + 2D² (W·S); the selective scan (Dm = H·D channels, N = ``SSM_STATE``) is element-wise: 2 exp-free
    multiply-adds and one exp per (channel, state), no matrix product."""
    tokens = B * T
    if op == "selective_scan":
        dm = H * D
        elems = tokens * dm * SSM_STATE
        flops, exps = 6 * elems, elems
        io_tensors = 3  # u, delta in; y out ([tokens, Dm] each; B, C are N-wide: negligible)
        bytes_fwd, width = io_tensors * tokens * dm * 2, dm
    else:
        per = 4 * CHUNK * D + 4 * D * D
        if op == "delta_rule":
            per += 4 * CHUNK * D + 2 * D * D
        flops, exps = tokens * H * per, 0
        bytes_fwd, width = 4 * tokens * H * D * 2, H * D  # q, k, v in; o out
        if op in ("decay_linear_attention", "mamba2-ssd"):
            bytes_fwd += tokens * H * 4
    if backward:  # forward again (recomputed or stored) + 2× its arithmetic; read q,k,v,(gate),dO, write dq,dk,dv
        flops, exps = 3 * flops, 2 * exps
        bytes_total = bytes_fwd + (bytes_fwd - tokens * width * 2) * 2 + tokens * width * 2
    else:
        bytes_total = bytes_fwd
    bounds = {"flops_ms": flops / PEAK_FLOPS * 1e3, "bytes_ms": bytes_total / PEAK_BYTES * 1e3,
              "exp_ms": exps / PEAK_EXP * 1e3}
    bounds["floor_ms"] = max(bounds.values())
    bounds.update(gflop=flops / 1e9, mbytes=bytes_total / 1e6)
    return bounds


def print_floors(ops, shapes, H: int, D: int) -> None:
    print(f"{'op':24s} {'shape':>11s} {'mode':8s} {'GFLOP':>8s} {'MB':>8s} {'flop ms':>8s} {'byte ms':>8s} "
          f"{'exp ms':>7s} {'floor':>7s}")
    for op in ops:
        for B, T in shapes:
            for backward in (False, True):
                f = floor_ms(op, B, T, H, D, backward)
                print(f"{op:24s} {'B' + str(B) + '·T' + str(T):>11s} {'fwd+bwd' if backward else 'fwd':8s} "
                      f"{f['gflop']:8.1f} {f['mbytes']:8.0f} {f['flops_ms']:8.3f} {f['bytes_ms']:8.3f} "
                      f"{f['exp_ms']:7.3f} {f['floor_ms']:7.3f}")


def _goal(rows) -> list[str]:
    """The issue's goal against the main peer of each op (fla; mamba_ssm for the scans)."""
    lines = []
    for row in rows:
        peer = "fla" if "fla" in row["ratio"] else "mamba_ssm" if "mamba_ssm" in row["ratio"] else None
        if peer is None:
            continue
        r = row["ratio"][peer]
        target = 0.9 if row["T"] >= 8192 else 1.1
        status = "ok  " if r <= target else "MISS"
        lines.append(f"{status} {row['op']} B{row['B']}·T{row['T']} {row['mode']}: {r:.2f}x {peer} "
                     f"(goal ≤ {target}x)")
    return lines


if __name__ == "__main__":
    main()
