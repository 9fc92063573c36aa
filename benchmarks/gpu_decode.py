"""Greedy decoding throughput of the 134M seqzoo model vs Hugging Face, and decode time vs context (issue 8, item 4).

Part 1 — same model shape as ``gpu_train.py`` in bf16 weights, prompt of 128 random tokens, 256 new greedy tokens,
batch 1 and 64:
  * ``hf-loop``: LlamaForCausalLM stepped in a plain Python loop with its own cache (``past_key_values``);
  * ``seqzoo-loop``: seqzoo's CausalLM stepped in a plain loop with its state (the same loop shape);
  * ``seqzoo-graph``: ``StaticGreedyDecoder(graph=True)``: static KV cache, the decode step captured as one CUDA
    graph (captured in the warm-up call and replayed afterwards: the decoder keeps it for equal shapes);
  * ``seqzoo-graph-compiled``: the same with ``compile=True`` (the step fused by ``torch.compile`` before capture).
Each figure is the best of two timed calls after one warm-up call; all include the prefill.
Part 2 — per-token decode time of attention, DeltaNet and Mamba models (same width/depth) after prefilling 1k and
32k tokens (``StaticGreedyDecoder(graph=True)``, batch 1; the decode call's time minus the prefill's, per token):
recurrent mixers stay flat, attention grows.

    python benchmarks/gpu_decode.py --json out.json
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

sys.path.insert(0, __file__.rsplit("/", 2)[0])
from benchmarks._gpu_common import environment, hf_llama, seqzoo_config, write_json  # noqa: E402


def timed(fn) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


@torch.no_grad()
def hf_loop(model, prompt, new):
    out = model(input_ids=prompt, use_cache=True)
    past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
    for _ in range(new - 1):
        out = model(input_ids=tok, past_key_values=past, use_cache=True)
        past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
    return tok


@torch.no_grad()
def seqzoo_loop(model, prompt, new):
    logits, state = model(prompt, None)
    tok = logits[:, -1:].argmax(-1)
    for _ in range(new - 1):
        logits, state = model(tok, state)
        tok = logits[:, -1:].argmax(-1)
    return tok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--batches", default="1,64", help="batch sizes of part 1 ('' skips part 1)")
    ap.add_argument("--contexts", default="1024,32768")
    ap.add_argument("--context-mixers", default="attention,deltanet,mamba")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_decode.py needs a CUDA GPU")
    from seqzoo.generation.static_decode import StaticGreedyDecoder
    from seqzoo.models import CausalLM

    device, dtype = torch.device("cuda"), torch.bfloat16
    torch.manual_seed(0)
    ours = CausalLM(seqzoo_config("attention")).to(device, dtype).eval()
    hf = hf_llama(device, dtype)
    if hf is not None:
        hf.eval()
    rows = []
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    for batch in batches:
        prompt = torch.randint(0, 32000, (batch, args.prompt), device=device)
        graph_decoder = StaticGreedyDecoder(ours, graph=True)
        compiled_decoder = StaticGreedyDecoder(ours, graph=True, compile=True)
        runs = {"seqzoo-loop": lambda: seqzoo_loop(ours, prompt, args.new),
                "seqzoo-graph": lambda: graph_decoder.decode(prompt, args.new),
                "seqzoo-graph-compiled": lambda: compiled_decoder.decode(prompt, args.new)}
        if hf is not None:
            runs["hf-loop"] = lambda: hf_loop(hf, prompt, args.new)
        for name, fn in runs.items():
            try:
                fn()  # warm-up (kernels, graph capture paths)
                seconds = min(timed(fn) for _ in range(2))
                rows.append({"part": "throughput", "impl": name, "batch": batch,
                             "tokens_per_s": batch * args.new / seconds, "seconds": seconds})
            except Exception as err:  # noqa: BLE001
                rows.append({"part": "throughput", "impl": name, "batch": batch,
                             "error": f"{type(err).__name__}: {str(err)[:300]}"})
            print(rows[-1], flush=True)
    # check that the graph decoder and the plain loop agree on the tokens (bf16: compare the first few)
    agreement = check_agreement(ours, args.prompt, device) if batches else (None, None)
    del ours
    torch.cuda.empty_cache()
    part_two(args, device, dtype, rows, agreement)


def check_agreement(ours, prompt_len: int, device) -> None:
    from seqzoo.generation.static_decode import StaticGreedyDecoder

    prompt = torch.randint(0, 32000, (1, prompt_len), device=device)
    graph_tokens = StaticGreedyDecoder(ours, graph=True).decode(prompt, 16)
    loop_tokens = StaticGreedyDecoder(ours, graph=False).decode(prompt, 16)
    compiled_tokens = StaticGreedyDecoder(ours, graph=True, compile=True).decode(prompt, 16)
    agree = float((graph_tokens == loop_tokens).float().mean())
    agree_compiled = float((compiled_tokens == loop_tokens).float().mean())
    print(f"graph vs eager static decoding: {agree:.0%} of 16 tokens equal; compiled graph: {agree_compiled:.0%}")
    return agree, agree_compiled


def part_two(args, device, dtype, rows: list, agreement=(None, None)) -> None:
    """Per-token decode time after a short and a long prefill, per mixer; then the summary and the JSON."""
    from seqzoo.generation.static_decode import StaticGreedyDecoder
    from seqzoo.models import CausalLM

    for mixer in [m for m in args.context_mixers.split(",") if m.strip()]:
        torch.manual_seed(0)
        model = CausalLM(seqzoo_config(mixer)).to(device, dtype).eval()
        for context in map(int, args.contexts.split(",")):
            prompt = torch.randint(0, 32000, (1, context), device=device)
            try:
                decoder = StaticGreedyDecoder(model, graph=True)
                decoder.decode(prompt, 1 + args.new)  # builds the buffers and captures the step
                with torch.no_grad():
                    prefill = min(timed(lambda: model(prompt, None)) for _ in range(2))
                full = min(timed(lambda: decoder.decode(prompt, 1 + args.new)) for _ in range(2))
                per_token = (full - prefill) / args.new
                rows.append({"part": "context", "mixer": mixer, "context": context,
                             "ms_per_token": per_token * 1e3})
            except Exception as err:  # noqa: BLE001
                rows.append({"part": "context", "mixer": mixer, "context": context,
                             "error": f"{type(err).__name__}: {str(err)[:300]}"})
            print(rows[-1], flush=True)
        del model
        torch.cuda.empty_cache()

    print("\nthroughput (tokens/s):")
    for r in rows:
        if r["part"] == "throughput":
            hf_row = next((h for h in rows if h.get("impl") == "hf-loop" and h["batch"] == r["batch"]
                           and "tokens_per_s" in h), None)
            ratio = r["tokens_per_s"] / hf_row["tokens_per_s"] if hf_row and "tokens_per_s" in r else float("nan")
            print(f"  batch {r['batch']:3d} {r['impl']:13s} {r.get('tokens_per_s', float('nan')):10.0f}  "
                  f"{ratio:6.2f}x HF  {r.get('error', '')}")
    print("decode ms/token vs context:")
    for r in rows:
        if r["part"] == "context":
            print(f"  {r['mixer']:10s} ctx {r['context']:6d}  {r.get('ms_per_token', float('nan')):8.3f} ms  "
                  f"{r.get('error', '')}")
    write_json(args.json, {"env": environment(), "prompt": args.prompt, "new": args.new,
                           "graph_loop_agreement": agreement[0], "compiled_loop_agreement": agreement[1],
                           "rows": rows})


if __name__ == "__main__":
    main()
