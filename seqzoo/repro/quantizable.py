"""Reproduction of "Quantizable Transformers: Removing Outliers by Helping Attention Heads Do Nothing" (Bondarenko,
Nagel and Blankevoort, NeurIPS 2023, arXiv 2306.12929).

Claim checked at small scale: language models pre-trained with the clipped softmax or with gated attention learn
smaller activation outliers (lower ∞-norm and kurtosis of the FFN outputs and the residual stream) than with the
vanilla softmax, and so lose less when their activations are quantised to INT8, at equal floating-point quality.

Setup: three byte-level causal LMs on the built-in corpus (``ByteCorpus.from_source("kjv", 128)``), 4 layers,
d = 128, 4 heads, trained with the same data, seed, steps and optimiser; they differ only in the attention:

* vanilla: the ``"attention"`` mixer;
* clipped softmax: ``quantizable_attention`` with ``softmax="clipped"``, ``gate=False``, γ = −0.025, ζ = 1: the
  paper's setting for its models trained at T = 128 (BERT, ``clipped(-.025:1)``; its OPT setting α = 12 at
  T = 512 gives about the same γ = −0.023);
* gated attention: ``quantizable_attention`` with ``softmax="vanilla"``, ``gate=True``, gate init 0.25 (the
  paper's OPT setting).

Evaluation on fixed validation batches: the FP32 loss; :class:`~seqzoo.models.quantization.OutlierProbe` (largest
mean per-sequence ∞-norm over the FFN outputs and block outputs, average and maximum kurtosis); and the loss
under INT8 activation fake quantisation (:class:`~seqzoo.models.quantization.ActivationQuantizer`: per-tensor
asymmetric min-max ranges from 4 training batches, at the input of every linear layer, the output head
included, and on the residual stream; weights in FP32).

Thresholds, fixed before running: "clearly lower" outliers means at most 0.75× the vanilla model's ∞-norm and
maximum kurtosis; the INT8 loss increase must be smaller than vanilla's; the FP32 loss within 0.05 nats of it.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from ..models import CausalLM, ModelConfig
from ..models.quantization import ActivationQuantizer, OutlierProbe
from ..tasks.text import ByteCorpus
from .base import ReproResult, register_repro
from .common import train_on_task


@torch.no_grad()
def _loss(model: CausalLM, batches: list[dict]) -> float:
    model.eval()
    total = 0.0
    for batch in batches:
        logits, _ = model(batch["inputs"])
        total += float(F.cross_entropy(logits.flatten(0, 1).float(), batch["targets"].flatten()))
    return total / len(batches)


@torch.no_grad()
def evaluate(model: CausalLM, val: list[dict], calibration: list[dict], bits: int = 8) -> dict[str, float]:
    """FP32 loss, outlier statistics and the loss under ``bits``-bit activation fake quantisation."""
    model.eval()
    fp = _loss(model, val)
    with OutlierProbe(model) as probe:
        for batch in val:
            model(batch["inputs"])
    quant = ActivationQuantizer(model, bits)
    quant.calibrate(b["inputs"] for b in calibration)
    with quant.enabled():
        q = _loss(model, val)
    return {"fp_loss": fp, "int8_loss": q, "int8_gap": q - fp, **probe.summary()}


@register_repro("quantizable", title="Quantizable Transformers: Removing Outliers by Helping Attention Heads Do "
                "Nothing", arxiv="2306.12929",
                claim="clipped softmax and gated attention give smaller activation outliers and a smaller loss "
                      "increase under INT8 activation quantisation than vanilla softmax, at equal FP quality")
def run(quick: bool = False) -> ReproResult:
    seq_len, d_model, layers, batch_size, steps = (32, 32, 2, 4, 3) if quick else (128, 128, 4, 16, 400)
    eval_batches, calib_batches = (1, 1) if quick else (8, 4)
    lr, seed, gamma = 1e-3, 0, -0.025
    data = ByteCorpus.from_source("kjv", seq_len)
    val = [data.get_batch("val", i, batch_size) for i in range(eval_batches)]
    calibration = [data.get_batch("train", 10**6 + i, batch_size) for i in range(calib_batches)]
    variants = {
        "vanilla": ("attention", {}),
        "clipped": ("quantizable_attention", {"softmax": "clipped", "gate": False, "gamma": gamma, "zeta": 1.0}),
        "gated": ("quantizable_attention", {"softmax": "vanilla", "gate": True, "gate_init": 0.25}),
    }
    stats: dict[str, dict[str, float]] = {}
    for name, (mixer, opts) in variants.items():
        cfg = ModelConfig(vocab_size=256, d_model=d_model, n_layers=layers, mixer=mixer,
                          mixer_options={mixer: opts} if opts else {})
        start = time.perf_counter()
        model, _ = train_on_task(cfg, data, steps=steps, batch_size=batch_size, lr=lr, seed=seed, eval_batches=1)
        stats[name] = {**evaluate(model, val, calibration), "train_seconds": time.perf_counter() - start}

    result = ReproResult("quantizable")
    ref = stats["vanilla"]
    for name in ("clipped", "gated"):
        s = stats[name]
        result.check(f"{name}: max FFN/residual inf-norm vs vanilla", f"{s['max_inf_norm']:.2f} vs "
                     f"{ref['max_inf_norm']:.2f}", "clearly lower (<= 0.75x vanilla)",
                     s["max_inf_norm"] <= 0.75 * ref["max_inf_norm"])
        result.check(f"{name}: max kurtosis vs vanilla", f"{s['max_kurtosis']:.1f} vs {ref['max_kurtosis']:.1f}",
                     "clearly lower (<= 0.75x vanilla)", s["max_kurtosis"] <= 0.75 * ref["max_kurtosis"])
        result.check(f"{name}: INT8 loss increase vs vanilla", f"{s['int8_gap']:+.4f} vs {ref['int8_gap']:+.4f} "
                     f"nats/byte", "smaller than vanilla's", s["int8_gap"] < ref["int8_gap"])
        result.check(f"{name}: FP32 val loss vs vanilla", f"{s['fp_loss']:.4f} vs {ref['fp_loss']:.4f}",
                     "equal or better (within 0.05)", s["fp_loss"] <= ref["fp_loss"] + 0.05)
    for name, s in stats.items():
        result.notes.append(f"{name}: fp32 {s['fp_loss']:.4f}, int8 {s['int8_loss']:.4f}, max inf-norm "
                            f"{s['max_inf_norm']:.2f} (ffn {s['max_ffn_inf_norm']:.2f}, residual "
                            f"{s['max_residual_inf_norm']:.2f}), max |a| {s['max_abs']:.2f}, kurtosis avg "
                            f"{s['avg_kurtosis']:.1f} max {s['max_kurtosis']:.1f}, trained in "
                            f"{s['train_seconds']:.0f} s")
    result.details = {"stats": stats, "steps": steps, "seq_len": seq_len, "d_model": d_model, "n_layers": layers,
                      "batch_size": batch_size}
    return result
