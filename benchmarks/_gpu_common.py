"""Shared helpers of the GPU benchmarks: the 134M model shapes (seqzoo and Hugging Face), timing, environment."""

from __future__ import annotations

import json
import platform
import time

import torch

VOCAB, D_MODEL, N_LAYERS, N_HEADS, FFN_HIDDEN = 32000, 768, 12, 12, 2048


def seqzoo_config(mixer="attention"):
    """The 134M Llama-shaped seqzoo model: RMSNorm, SwiGLU 2048, untied head, RoPE attention with 12 heads."""
    from seqzoo.models import ModelConfig

    return ModelConfig(vocab_size=VOCAB, d_model=D_MODEL, n_layers=N_LAYERS, mixer=mixer, ffn="glu",
                       ffn_hidden=FFN_HIDDEN, tie_embeddings=False,
                       mixer_options={"attention": {"n_heads": N_HEADS}, "deltanet": {"n_heads": N_HEADS}})


def hf_llama(device, dtype=None):
    """Hugging Face LlamaForCausalLM of the same shape (SDPA attention), or None when transformers is missing."""
    try:
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError:
        return None
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=D_MODEL, intermediate_size=FFN_HIDDEN,
                      num_hidden_layers=N_LAYERS, num_attention_heads=N_HEADS, num_key_value_heads=N_HEADS,
                      max_position_embeddings=65536, tie_word_embeddings=False, attn_implementation="sdpa")
    model = LlamaForCausalLM(cfg).to(device)
    return model.to(dtype) if dtype is not None else model


def count_params(model) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def cuda_time(fn, *, warmup: int, iters: int, back_to_back: bool = False) -> float:
    """Median seconds of ``fn()`` over ``iters`` runs after ``warmup`` runs (CUDA events). Each run is synchronised
    before and after, so host time that leaves the GPU idle counts. ``back_to_back``: instead, the mean over
    ``iters`` calls queued without a synchronisation (the median of three such rounds), as in a training loop,
    where the host prepares the next call while the GPU runs the last one."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    if back_to_back:
        rounds = []
        for _ in range(3):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iters):
                fn()
            end.record()
            torch.cuda.synchronize()
            rounds.append(start.elapsed_time(end) / 1e3 / iters)
        return sorted(rounds)[1]
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    times.sort()
    return times[len(times) // 2]


def kernel_ms(step, *, iters: int, sync_each: bool = False) -> dict[str, float]:
    """GPU ms per call of ``step`` spent in each kernel (``torch.profiler``), after one warm-up call. ``sync_each``:
    synchronise after every call, as the synchronised timing does."""
    step()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            step()
            if sync_each:
                torch.cuda.synchronize()
        torch.cuda.synchronize()
    return {e.key: e.device_time_total / iters / 1e3 for e in prof.key_averages() if e.device_time_total > 0}


def environment() -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(), "time": time.strftime("%Y-%m-%d %H:%M")}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
        env["cuda"] = torch.version.cuda
    for name in ("triton", "transformers", "fla"):
        try:
            env[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - absent packages are simply not reported
            pass
    return env


def write_json(path, payload) -> None:
    if path:
        with open(path, "w") as fh:
            json.dump(payload, fh, indent=2)
