"""Reproduction ``mqar-frontier``: the Zoology recall frontier, MQAR accuracy against recurrent state size.

Paper: "Zoology: Measuring and Improving Recall in Efficient Language Models", Arora, Eyuboglu, Timalsina,
Johnson, Poli, Zou, Rudra, Ré, ICLR 2024, arXiv 2312.04927 (its Figure 2 sweep and recall-vs-state-size plots, as
read from HazyResearch/zoology in the reference notes, ``reference/anchors-architecture.md`` §3).

Task: multi-query associative recall (:class:`~seqzoo.tasks.synthetic.mqar.MQAR`): ``kv = T/16`` key–value pairs
up front, each key queried once later at a power-law gap (a = 0.01); accuracy is the fraction of recalled values.
Grid (Zoology's Figure 2 shape): mixers × widths d_model × lengths T, two layers, no FFN (Zoology's MQAR models
use an identity "state mixer"), each cell the best over a small learning-rate grid (validation accuracy). The
state size of a cell is the model's recurrent state after T tokens (:meth:`CausalLM.state_size`: attention's KV
cache grows with T, the recurrent mixers' state does not).

Expectations (pre-registered from the Zoology figures before any run; "given enough state" read as "at the
largest width of the grid"):

1. attention ≈ 1.0 given enough state: at the largest d_model, attention's accuracy ≥ 0.9 at every length;
2. DeltaNet ≥ linear attention: DeltaNet's accuracy averaged over the (T, d) cells is at least linear
   attention's;
3. gated convolutions fall off with length: at the largest d_model, the gated convolution's accuracy at the
   shortest length exceeds that at the longest by ≥ 0.1 (Zoology: BaseConv > 0.9 at T = 64 but ≈ 0.7 at 512).

The gated convolution is :class:`GatedLongConv`, Zoology's BaseConv form (the library registers no gated
convolution mixer yet):

    y = (x W + b) ⊙ (h ∗ x + c),      (h ∗ x)_t[i] = Σ_{s ≤ t} h[i, t − s] x_s[i]

with an explicit causal filter h ∈ R^{d × T} per channel (initialised as Gaussian noise under an exponential
decay whose time constant is log-uniform in [1, T]), computed by FFT. Its state (for decoding) is the input
history, d·T numbers per layer. It is a training-only module (no streaming state), used only here.

CPU default (≤ 10 minutes on one thread; a deviation from Zoology's vocabulary 8192, widths 64–512, 100k
examples): vocabulary 128, T ∈ {64, 128} (kv 4, 8), d ∈ {32, 64}, mixers attention, linear_attention,
deltanet, base_conv, lrs {2.2e-3, 1e-2} (the top two points of Zoology's grid logspace(−4, −2, 4)), 200 steps of
32 sequences. With ``device=cuda`` the defaults are Zoology's: vocabulary 8192, T ∈ {64, 128, 256}, d ∈ {64, 128,
256}, lrs logspace(−4, −2, 4), batch 64, at most 2000 steps (fewer under ``budget_seconds``), and retention and
mamba join the mixers. Options (``--set key=value``): ``device``,
``precision``, ``threads``, ``mixers`` (registered names or ``base_conv``), ``d_models``, ``seq_lens``, ``lrs``,
``vocab_size``, ``steps``, ``budget_seconds`` (common step count fitted to a time budget, see ``lra``),
``batch_size``, ``eval_batches``, ``seed``. Quick mode: two tiny cells, a few steps.
"""

from __future__ import annotations

import math
import sys
import time

import torch
from torch import Tensor, nn

from ..core.errors import SeqzooError
from ..core.registry import mixer_entry
from ..models import CausalLM, ModelConfig
from ..tasks.synthetic.mqar import MQAR
from .base import ReproResult, register_repro
from .lra import as_list, as_number, common_steps, step_seconds, train_and_score

GATED_CONV = "base_conv"
CPU_MIXERS = ("attention", "linear_attention", "deltanet", GATED_CONV)
GPU_MIXERS = ("attention", "linear_attention", "deltanet", "retention", "mamba", GATED_CONV)
ATTENTION_TARGET = 0.9
FALL_OFF = 0.1


class GatedLongConv(nn.Module):
    """Zoology's BaseConv gated convolution (see the module docstring): ``y = (x W + b) ⊙ (h ∗ x + c)``."""

    causal = True

    def __init__(self, d_model: int, max_len: int):
        super().__init__()
        if max_len < 1:
            raise SeqzooError(f"GatedLongConv needs max_len >= 1, got {max_len}")
        self.d_model, self.max_len = d_model, max_len
        self.gate = nn.Linear(d_model, d_model)
        tau = torch.exp(torch.rand(d_model, 1) * math.log(max(max_len, 2)))        # time constants in [1, T]
        lags = torch.arange(max_len, dtype=torch.float32)
        self.filter = nn.Parameter(torch.randn(d_model, max_len) * torch.exp(-lags / tau) / math.sqrt(d_model))
        self.conv_bias = nn.Parameter(torch.zeros(d_model))

    def long_conv(self, x: Tensor) -> Tensor:
        """Causal per-channel convolution of ``x [B, T, d]`` with the first T taps of the filter (FFT)."""
        length = x.shape[1]
        if length > self.max_len:
            raise SeqzooError(f"GatedLongConv was built for sequences of at most {self.max_len}, got {length}")
        n = 2 * length
        spectrum = torch.fft.rfft(x.float(), n=n, dim=1) * torch.fft.rfft(self.filter[:, :length].t().float(), n=n,
                                                                          dim=0)
        return torch.fft.irfft(spectrum, n=n, dim=1)[:, :length].to(x.dtype)

    def forward(self, x: Tensor, state=None) -> tuple[Tensor, None]:
        if state is not None:
            raise SeqzooError("GatedLongConv is a training-only baseline: it takes no state")
        return self.gate(x) * (self.long_conv(x) + self.conv_bias), None

    def state_size(self, seq_len: int) -> int:
        return self.d_model * min(seq_len, self.max_len)


def build_model(name: str, *, vocab_size: int, d_model: int, n_layers: int, seq_len: int):
    """``(config, build)`` for one cell: a registered mixer, or the gated convolution swapped into every block."""
    mixer = "attention" if name == GATED_CONV else name
    cfg = ModelConfig(vocab_size=vocab_size, d_model=d_model, n_layers=n_layers, mixer=mixer, ffn="none")
    if name != GATED_CONV:
        return cfg, CausalLM

    def build(config: ModelConfig) -> CausalLM:
        model = CausalLM(config)
        for block in model.blocks:
            block.mixer = GatedLongConv(config.d_model, seq_len)
        return model

    return cfg, build


class _Probe:
    """One fixed batch, for timing (``step_seconds``)."""

    def __init__(self, batch):
        self.batch = batch

    def get_batch(self, split, index, batch_size):
        return self.batch


def _probe_seconds(name, task, *, vocab, d, T, batch, device, precision) -> float:
    """Seconds per training step of one cell, including the generation of its batch (done on the fly)."""
    start = time.perf_counter()
    for i in range(3):
        task.get_batch("train", i, batch)
    generation = (time.perf_counter() - start) / 3
    cfg, build = build_model(name, vocab_size=vocab, d_model=d, n_layers=2, seq_len=T)
    if build is CausalLM:
        return generation + step_seconds(cfg, _Probe(task.get_batch("train", 0, batch)), batch_size=batch,
                                         device=device, precision=precision)
    model = build(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    data = {k: v.to(device) for k, v in task.get_batch("train", 0, batch).items()}
    model.loss(data).backward()
    start = time.perf_counter()
    for _ in range(3):
        model.loss(data).backward()
        opt.step()
        opt.zero_grad()
    if device == "cuda":
        torch.cuda.synchronize()
    return generation + (time.perf_counter() - start) / 3


@register_repro("mqar-frontier", title="Zoology: Measuring and Improving Recall in Efficient Language Models",
                arxiv="2312.04927",
                claim="On MQAR, attention reaches ≈1.0 given enough state, DeltaNet ≥ linear attention, and gated "
                      "convolutions fall off with sequence length (Zoology Figure 2 and recall-vs-state plots).")
def run(quick: bool, *, device="cpu", precision="fp32", threads=1, mixers=None, d_models=None, seq_lens=None,
        lrs=None, vocab_size=None, steps=None, budget_seconds=None, batch_size=None, eval_batches=None,
        seed=0) -> ReproResult:
    if device not in ("cpu", "cuda"):
        raise SeqzooError(f"mqar-frontier: device {device!r} is not valid; valid: cpu, cuda")
    if precision not in ("fp32", "bf16"):
        raise SeqzooError(f"mqar-frontier: precision {precision!r} is not valid; valid: fp32, bf16")
    if quick:
        defaults = dict(mixers=["attention", GATED_CONV], d_models=[8], seq_lens=[32, 64], lrs=[3e-3], vocab=64,
                        steps=2, batch=4, eval_batches=1)
    elif device == "cpu":
        defaults = dict(mixers=list(CPU_MIXERS), d_models=[32, 64], seq_lens=[64, 128], lrs=[2.2e-3, 1e-2],
                        vocab=128, steps=200, batch=32, eval_batches=4)
    else:
        defaults = dict(mixers=list(GPU_MIXERS), d_models=[64, 128, 256], seq_lens=[64, 128, 256],
                        lrs=[1e-4, 4.6e-4, 2.2e-3, 1e-2], vocab=8192, steps=2000, batch=64, eval_batches=16)
    names = as_list(mixers) if mixers is not None else defaults["mixers"]
    for name in names:
        if name != GATED_CONV:
            mixer_entry(name)
    widths = as_list(d_models, int) if d_models is not None else defaults["d_models"]
    lengths = as_list(seq_lens, int) if seq_lens is not None else defaults["seq_lens"]
    lr_grid = as_list(lrs, float) if lrs is not None else defaults["lrs"]
    vocab = as_number("vocab_size", vocab_size, low=8) if vocab_size is not None else defaults["vocab"]
    max_steps = as_number("steps", steps) if steps is not None else defaults["steps"]
    batch = as_number("batch_size", batch_size) if batch_size is not None else defaults["batch"]
    n_eval = as_number("eval_batches", eval_batches) if eval_batches is not None else defaults["eval_batches"]
    budget = as_number("budget_seconds", budget_seconds, float, low=1) if budget_seconds is not None else None
    seed, threads = as_number("seed", seed, low=0), as_number("threads", threads)
    if any(w < 1 for w in widths) or any(T < 16 for T in lengths):
        raise SeqzooError(f"mqar-frontier needs d_models >= 1 and seq_lens >= 16, got {widths}, {lengths}")
    tasks = {T: MQAR(vocab_size=vocab, seq_len=T, num_kv_pairs=T // 16, seed=seed) for T in lengths}
    for task in tasks.values():
        task.vocab_size = vocab

    result = ReproResult("mqar-frontier")
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    start = time.perf_counter()
    cells: dict[tuple[str, int, int], dict] = {}
    try:
        run_steps = max_steps
        if budget is not None:
            per_step = {f"{n}@{T}@{d}": _probe_seconds(n, tasks[T], vocab=vocab, d=d, T=T, batch=batch,
                                                       device=device, precision=precision)
                        for n in names for T in lengths for d in widths}
            remaining = budget - (time.perf_counter() - start)
            run_steps = common_steps(per_step, runs_per_mixer=len(lr_grid), budget=0.8 * remaining, cap=max_steps,
                                     eval_cost_steps=n_eval / 3)
            result.details["step_seconds"] = per_step
            print(f"[mqar-frontier] {run_steps} steps per run (budget {budget:g} s)", file=sys.stderr, flush=True)
        for T in lengths:
            for name in names:
                for d in widths:
                    cfg, build = build_model(name, vocab_size=vocab, d_model=d, n_layers=2, seq_len=T)
                    runs = []
                    for lr in lr_grid:
                        row = train_and_score(cfg, tasks[T], steps=run_steps, batch_size=batch, lr=lr,
                                              device=device, precision=precision, eval_batches=n_eval,
                                              splits=("val",), seed=seed, weight_decay=0.1, build=build)
                        runs.append(row)
                    best = max(runs, key=lambda r: (r["val"], -r["lr"]))
                    cells[(name, T, d)] = {"accuracy": best["val"], "lr": best["lr"],
                                           "state_size": best["state_size"], "parameters": best["parameters"],
                                           "by_lr": {r["lr"]: r["val"] for r in runs},
                                           "seconds": sum(r["train_seconds"] for r in runs)}
                    print(f"[mqar-frontier] T={T} {name} d={d}: acc {best['val']:.3f} (lr {best['lr']:g}), "
                          f"state {best['state_size']}", file=sys.stderr, flush=True)
    finally:
        torch.set_num_threads(old_threads)
    wall = time.perf_counter() - start
    hardware = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {threads} thread(s)"
    result.details["cells"] = [{"mixer": n, "seq_len": T, "d_model": d, **v} for (n, T, d), v in cells.items()]
    result.details["setup"] = {"device": device, "hardware": hardware, "precision": precision, "mixers": names,
                               "d_models": widths, "seq_lens": lengths, "kv_pairs": [T // 16 for T in lengths],
                               "lrs": lr_grid, "vocab_size": vocab, "steps": run_steps, "batch_size": batch,
                               "eval_batches": n_eval, "n_layers": 2, "ffn": "none", "seed": seed,
                               "budget_seconds": budget, "wall_seconds": wall, "torch": torch.__version__}

    lines = [f"{'mixer':18s} {'T':>4s} {'d':>4s} {'state':>9s} {'acc':>6s} {'lr':>8s}"]
    for (n, T, d), v in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[1]["state_size"])):
        lines.append(f"{n:18s} {T:4d} {d:4d} {v['state_size']:9d} {v['accuracy']:6.3f} {v['lr']:8.1e}")
    result.notes.append("accuracy vs state size (best over lr):\n" + "\n".join(lines))

    top = max(widths)
    if "attention" in names:
        accs = [cells[("attention", T, top)]["accuracy"] for T in lengths]
        result.check(f"attention ≈ 1.0 at d_model {top} (every length)",
                     ", ".join(f"T={T}: {a:.3f}" for T, a in zip(lengths, accs)),
                     f"≥ {ATTENTION_TARGET} at every length (Zoology: ≈ 1.0)", min(accs) >= ATTENTION_TARGET)
    if "deltanet" in names and "linear_attention" in names:
        mean = {n: sum(cells[(n, T, d)]["accuracy"] for T in lengths for d in widths) / (len(lengths) * len(widths))
                for n in ("deltanet", "linear_attention")}
        wins = sum(cells[("deltanet", T, d)]["accuracy"] >= cells[("linear_attention", T, d)]["accuracy"]
                   for T in lengths for d in widths)
        result.check("DeltaNet ≥ linear attention (mean over the cells)",
                     f"deltanet {mean['deltanet']:.3f} vs linear_attention {mean['linear_attention']:.3f} "
                     f"(deltanet ≥ in {wins}/{len(lengths) * len(widths)} cells)",
                     "deltanet ≥ linear attention", mean["deltanet"] >= mean["linear_attention"])
    if GATED_CONV in names and len(lengths) > 1:
        short, long = cells[(GATED_CONV, min(lengths), top)]["accuracy"], cells[(GATED_CONV, max(lengths), top)][
            "accuracy"]
        result.check(f"gated convolution falls off with length (d_model {top})",
                     f"T={min(lengths)}: {short:.3f}, T={max(lengths)}: {long:.3f}",
                     f"drop ≥ {FALL_OFF} (Zoology: BaseConv > 0.9 at T=64, ≈ 0.7 at T=512)", short - long >= FALL_OFF)
    zoology = lengths == [64, 128, 256] and vocab == 8192 and min(widths) >= 64
    if not zoology:
        result.notes.append(f"deviation from Zoology's Figure 2: vocabulary {vocab} (8192), lengths {lengths} "
                            f"([64, 128, 256]), widths {widths} (64–512), {run_steps} steps of {batch} "
                            f"(100k examples); filler token 0 between queries (Zoology: random tokens)")
    result.notes.append(f"wall time {wall:.0f} s on {hardware}")
    if quick:
        result.notes.append("quick mode: a smoke run, its checks are not meant to hold")
    return result


__all__ = ["GATED_CONV", "GatedLongConv", "build_model", "run"]
