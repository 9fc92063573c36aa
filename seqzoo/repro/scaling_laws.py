"""Reproduction ``scaling-laws-ar``: byte-level loss falls with model size as L(N) = L∞ + (N₀/N)^α.

Paper: "Scaling Laws for Autoregressive Generative Modeling", Henighan et al., 2020, arXiv 2010.14701. Claim: for
every domain studied, the loss of (converged) autoregressive transformers against their non-embedding parameter
count N is well fitted by a power law plus a constant, L(N) = L∞ + (N₀/N)^α; L∞ estimates the data's entropy.

Setting (fixed before any run): the built-in byte corpus (King James Bible, :mod:`seqzoo.tasks.text.bytes`,
5 % validation tail), windows of ``SEQ_LEN`` bytes. A width sweep of ``CausalLM`` with ``N_LAYERS`` softmax attention
layers (RoPE, 4 heads, GLU FFN, tied embeddings) at d_model ∈ ``WIDTHS``; every size gets the same recipe (AdamW,
lr ``LR``, warm-up then cosine, batch ``BATCH``, ``STEPS`` steps — the same tokens for every size, one learning
rate, no per-size tuning) and is scored by its mean next-byte cross-entropy (nats/byte) on ``EVAL_BATCHES`` ×
``BATCH`` validation windows. N counts non-embedding parameters (the paper's convention): all parameters minus the
256 × d_model byte embedding (tied with the head). Fit: :func:`seqzoo.arena.scaling.fit_scaling_law` (robust
least squares in log space), and a pure power law (L∞ = 0) for comparison.

Checks (the reference notes' expectations, set before running): (1) the loss decreases monotonically with N;
(2) R² ≥ ``R2_BAR`` for L∞ + (N₀/N)^α; (3) extrapolation: the law fitted without the largest model predicts its
loss within ``EXTRAPOLATION_TOL`` (relative). Reported beside them: L∞ and α with standard errors, the pure power
law's fit, and the unigram entropy of the bytes (the loss of a model that ignores context).

Caveat stated up front: this is a fixed-token-budget sweep of tiny models (≈ 7 k … 250 k non-embedding parameters,
3 M training bytes each), not the converged-model L(N) of the paper; larger models are the least converged, so
the fitted α and L∞ describe this budget, not the corpus's entropy.

Options (``seqzoo repro scaling-laws-ar --set key=value``): ``widths`` (comma list), ``steps``, ``device``
(``cpu``/``cuda``), ``threads`` (torch threads on CPU, default 1), ``db`` (an arena database file to which every
size is written as an arena run of task ``text_bytes``, so ``seqzoo report DB`` draws the scaling-law plot).
Quick mode: three tiny widths and a few steps (the test suite's smoke run; its checks are not meant to hold).
"""

from __future__ import annotations

import tempfile
import time

import torch

from ..core.errors import SeqzooError
from ..models import CausalLM, ModelConfig
from ..tasks.metrics import token_accuracy
from ..tasks.text.bytes import ByteCorpus
from ..train import Trainer
from ..train.config import TrainConfig
from .base import ReproResult, register_repro

SEQ_LEN, N_LAYERS, N_HEADS = 64, 2, 4
WIDTHS = (16, 24, 32, 48, 64, 96)
STEPS, BATCH, LR, EVAL_BATCHES = 1500, 32, 3e-3, 16
R2_BAR, EXTRAPOLATION_TOL = 0.98, 0.05
QUICK = {"widths": (8, 16, 24), "steps": 6, "eval_batches": 1}


def model_config(width: int) -> ModelConfig:
    return ModelConfig(vocab_size=256, d_model=width, n_layers=N_LAYERS, mixer="attention",
                       mixer_options={"attention": {"n_heads": N_HEADS}})


def non_embedding_parameters(model: CausalLM) -> int:
    """All parameters minus the token embedding (tied with the head, so counted once)."""
    return model.num_parameters() - model.embed.weight.numel()


def train_size(width: int, corpus: ByteCorpus, *, steps: int, eval_batches: int, device: str) -> dict:
    torch.manual_seed(0)
    model = CausalLM(model_config(width))
    cfg = TrainConfig(steps=steps, batch_size=BATCH, lr=LR, seed=0, warmup_steps=max(1, steps // 15),
                      eval_every=steps, eval_batches=2, checkpoint_every=10**9, keep_checkpoints=1, progress=False,
                      log_every=max(1, steps // 10), device=device)
    wall, cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(prefix="seqzoo-scaling-") as out_dir:
        Trainer(model, corpus, cfg, out_dir).fit()
    metrics = token_accuracy(model, corpus, split="val", batches=eval_batches, batch_size=BATCH)
    metrics.update(width=width, parameters=model.num_parameters(),
                   non_embedding_parameters=non_embedding_parameters(model), state_size=model.state_size(SEQ_LEN),
                   wall_seconds=time.perf_counter() - wall, cpu_seconds=time.process_time() - cpu)
    return metrics


def _ints(value, name: str) -> list[int]:
    try:
        items = value.split(",") if isinstance(value, str) else (value if isinstance(value, (list, tuple)) else [value])
        out = [int(v) for v in items]
    except (TypeError, ValueError):
        raise SeqzooError(f"{name} must be comma-separated positive integers, got {value!r}") from None
    if not out or any(v <= 0 for v in out):
        raise SeqzooError(f"{name} must be comma-separated positive integers, got {value!r}")
    return out


def _store(db_path: str, rows: list[dict], steps: int) -> None:
    from ..arena.db import RunDB
    from ..arena.runner import run_key

    with RunDB(db_path) as db:
        for m in rows:
            config = {"task": "text_bytes", "task_options": {"corpus": "kjv"}, "seq_len": SEQ_LEN,
                      "mixer": "attention", "mixer_options": {"n_heads": N_HEADS}, "d_model": m["width"],
                      "n_layers": N_LAYERS, "lr": LR, "seed": 0, "steps": steps, "batch_size": BATCH,
                      "eval_batches": EVAL_BATCHES, "source": "repro scaling-laws-ar"}
            db.insert(run_key(config), config, {**m, "score": m["accuracy"], "metric": "accuracy"})


@register_repro("scaling-laws-ar", title="Scaling Laws for Autoregressive Generative Modeling", arxiv="2010.14701",
                claim="Loss against non-embedding parameters follows L(N) = L∞ + (N₀/N)^α: a byte-level width "
                      "sweep decreases monotonically, the fit has R² ≥ 0.98 and extrapolates to the largest model.")
def run(quick: bool, *, widths=None, steps=None, device="cpu", threads=1, db=None) -> ReproResult:
    from ..arena.scaling import fit_power_law, fit_scaling_law

    widths = _ints(widths, "widths") if widths is not None else list(QUICK["widths"] if quick else WIDTHS)
    steps = _ints(steps, "steps")[0] if steps is not None else (QUICK["steps"] if quick else STEPS)
    eval_batches = QUICK["eval_batches"] if quick else EVAL_BATCHES
    if len(set(widths)) < 3:
        raise SeqzooError(f"scaling-laws-ar needs at least 3 distinct widths, got {widths}")
    if device not in ("cpu", "cuda"):
        raise SeqzooError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cpu":
        torch.set_num_threads(_ints(threads, "threads")[0])
    start = time.perf_counter()
    corpus = ByteCorpus.from_source("kjv", SEQ_LEN)
    rows = [train_size(w, corpus, steps=steps, eval_batches=eval_batches, device=device) for w in sorted(widths)]
    if db:
        _store(db, rows, steps)
    n = [r["non_embedding_parameters"] for r in rows]
    loss = [r["loss"] for r in rows]
    fit = fit_scaling_law(n, loss)
    pure = fit_power_law(n, loss) if loss[-1] < loss[0] else None
    result = ReproResult("scaling-laws-ar")
    result.details.update(sizes=rows, fit=fit.as_dict(), power_law=pure.as_dict() if pure else None,
                          unigram_entropy=corpus.unigram_entropy("val"), wall_seconds=time.perf_counter() - start,
                          setup={"seq_len": SEQ_LEN, "n_layers": N_LAYERS, "widths": widths, "steps": steps,
                                 "batch": BATCH, "lr": LR, "eval_windows": eval_batches * BATCH, "device": device})

    drops = [b < a for a, b in zip(loss, loss[1:])]
    result.check("loss decreases monotonically with N", " > ".join(f"{v:.4f}" for v in loss),
                 "every larger model has a lower validation loss", all(drops))
    result.check("fit of L∞ + (N₀/N)^α (R²)", fit.r2, f"≥ {R2_BAR} (reference notes)", fit.r2 >= R2_BAR)
    if len(rows) >= 4:
        held_out = fit_scaling_law(n[:-1], loss[:-1])
        predicted = float(held_out.predict(n[-1]))
        rel = abs(predicted - loss[-1]) / loss[-1]
        result.check(f"extrapolation to the largest model (N = {n[-1]}) from the others",
                     f"predicted {predicted:.4f} vs measured {loss[-1]:.4f} (relative error {rel:.3f})",
                     f"≤ {EXTRAPOLATION_TOL:g}", rel <= EXTRAPOLATION_TOL)
    result.notes.append(f"fit: {fit.summary()}; RMS log residual {fit.rms_log_residual:.4f}")
    if pure:
        result.notes.append(f"pure power law (L∞ = 0): α = {pure.alpha:.3g}, R² = {pure.r2:.4f}, RMS log residual "
                            f"{pure.rms_log_residual:.4f}")
    result.notes.append(f"unigram entropy of the validation bytes {corpus.unigram_entropy('val'):.4f} nats/byte "
                        f"(a context-free model's loss)")
    for r in rows:
        result.notes.append(f"d_model {r['width']:4d}: N = {r['non_embedding_parameters']:7d} non-embedding "
                            f"({r['parameters']} total), val loss {r['loss']:.4f} nats/byte, accuracy "
                            f"{r['accuracy']:.3f}, {r['cpu_seconds']:.0f} cpu-s")
    if quick:
        result.notes.append("quick mode: a smoke run, its checks are not meant to hold")
    return result


__all__ = ["model_config", "non_embedding_parameters", "run", "train_size"]
