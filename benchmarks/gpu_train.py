"""Training throughput of a 134M-parameter seqzoo model vs Hugging Face transformers, in one run (issue 8, item 3).

Both models have the shape of a 134M LlamaForCausalLM (12 layers, d 768, 12 heads, SwiGLU 2048, vocab 32000,
untied head). Each trains on random tokens at B·T = 16·2048 in bf16 autocast with AdamW; a step is forward,
backward and optimizer step. Reported: median step time, tokens/s, and model FLOP/s with the PaLM count
6·N + 12·L·d·T FLOPs per token (N: parameters outside the input embedding; attention's QKᵀ and AV counted in
full, as PaLM does), and their ratio to the H200's measured bf16 matmul peak (~790 TFLOP/s, device notes).

seqzoo's model uses torch.compile, a fused AdamW and SDPA attention; HF is run as a user runs it (eager, its
default AdamW). DeltaNet, Mamba and hybrid (DeltaNet + attention every other layer) seqzoo models of the same
width and depth are reported as well (their ops run their pure-PyTorch chunked forms unless a Triton impl exists).

    python benchmarks/gpu_train.py --json out.json [--models seqzoo-attention,hf-llama,...] [--steps 10]
        [--kernel-variants] [--profile]
"""

from __future__ import annotations

import argparse
import sys

import torch

sys.path.insert(0, __file__.rsplit("/", 2)[0])
from benchmarks._gpu_common import (D_MODEL, N_LAYERS, count_params, cuda_time, environment,  # noqa: E402
                                    hf_llama, seqzoo_config, write_json)

PEAK_TFLOPS = 790.0
MODELS = ("seqzoo-attention", "hf-llama", "seqzoo-deltanet", "seqzoo-mamba", "seqzoo-hybrid")


def build(name: str, device):
    if name == "hf-llama":
        model = hf_llama(device)
        if model is None:
            return None, None
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)

        def loss_fn(tokens):
            return model(input_ids=tokens[:, :-1], labels=tokens[:, :-1]).loss

        return model, (opt, loss_fn, model.model.embed_tokens.weight.numel())
    from seqzoo.models import CausalLM
    from seqzoo.train.trainer import LossModule

    mixer = {"seqzoo-attention": "attention", "seqzoo-deltanet": "deltanet", "seqzoo-mamba": "mamba",
             "seqzoo-hybrid": ["deltanet", "attention"]}[name]
    model = CausalLM(seqzoo_config(mixer)).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, fused=True)
    # compile the loss as the Trainer does (train.compile=true): torch.compile(model) alone would compile only
    # forward(), and model.loss() through the wrapper would run eagerly
    compiled = torch.compile(LossModule(model))

    def loss_fn(tokens):
        return compiled({"inputs": tokens[:, :-1], "targets": tokens[:, 1:]})

    return model, (opt, loss_fn, model.embed.weight.numel())


def print_top_kernels(name: str, step, top: int = 12) -> None:
    """One profiled training step: the ``top`` CUDA kernels by total time (where the step's time goes)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    print(f"--- {name}: top CUDA kernels of one step")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=top, max_name_column_width=70))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--json", default=None)
    ap.add_argument("--kernel-variants", action="store_true",
                    help="the non-default kernel modes: delta rule with float32 intermediates (FAST_16BIT "
                         "off), selective scan segmented at any batch")
    ap.add_argument("--profile", action="store_true",
                    help="after timing, print each model's 12 most expensive CUDA kernels over one step")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_train.py needs a CUDA GPU")
    device = torch.device("cuda")
    if args.kernel_variants:
        import seqzoo.ops.triton.delta_rule as delta_kernels
        import seqzoo.ops.triton.selective_scan as scan_kernels

        delta_kernels.FAST_16BIT, scan_kernels.SEGMENTED = False, True
    torch.backends.cuda.matmul.allow_tf32 = True
    tokens = torch.randint(0, 32000, (args.batch, args.seq + 1), device=device)
    rows = []
    for name in args.models.split(","):
        torch.manual_seed(0)
        try:
            model, extra = build(name, device)
            if model is None:
                print(f"{name}: skipped (transformers not installed)")
                continue
            opt, loss_fn, embed_params = extra

            def step():
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss = loss_fn(tokens)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

            seconds = cuda_time(step, warmup=args.warmup, iters=args.steps)
            n_params = count_params(model)
            flops_per_token = 6 * (n_params - embed_params) + 12 * N_LAYERS * D_MODEL * args.seq
            tok_s = args.batch * args.seq / seconds
            tflops = tok_s * flops_per_token / 1e12
            rows.append({"model": name, "params": n_params, "step_ms": seconds * 1e3, "tokens_per_s": tok_s,
                         "model_tflops": tflops, "mfu": tflops / PEAK_TFLOPS,
                         "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30})
            if args.profile:
                print_top_kernels(name, step)
        except Exception as err:  # noqa: BLE001 - report and continue with the next model
            rows.append({"model": name, "error": f"{type(err).__name__}: {str(err)[:300]}"})
        finally:
            model = opt = loss_fn = None
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        print(rows[-1], flush=True)
    hf = next((r for r in rows if r["model"] == "hf-llama" and "tokens_per_s" in r), None)
    print(f"\n{'model':18s} {'params':>8s} {'step ms':>8s} {'tok/s':>9s} {'TFLOP/s':>8s} {'MFU':>6s} {'vs HF':>6s}")
    for r in rows:
        if "error" in r:
            print(f"{r['model']:18s} ERROR {r['error']}")
            continue
        ratio = r["tokens_per_s"] / hf["tokens_per_s"] if hf else float("nan")
        print(f"{r['model']:18s} {r['params'] / 1e6:7.1f}M {r['step_ms']:8.1f} {r['tokens_per_s']:9.0f} "
              f"{r['model_tflops']:8.1f} {r['mfu']:6.1%} {ratio:5.2f}x")
    write_json(args.json, {"env": environment(), "batch": args.batch, "seq": args.seq, "rows": rows})


if __name__ == "__main__":
    main()
