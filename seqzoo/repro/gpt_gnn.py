"""Reproduction ``protein-gpt-gnn``: one byte-level prompt-based GPT-GNN solves forward and inverse protein tasks.

Paper: "Generative Pretrained Autoregressive Transformer Graph Neural Network applied to the Analysis and Discovery
of Novel Proteins", M. J. Buehler, J. Appl. Phys. 2023, arXiv 2305.04934. Headline: a single prompt-based
autoregressive transformer whose heads run a GCN on the causal attention graph predicts secondary structure
(per residue and overall content) and solubility, and designs sequences for a requested secondary-structure
content (checked in the paper by folding the designs with OmegaFold and DSSP).

Setting here (fixed before any run; see docs/repro/protein-gpt-gnn.md):

* data: multi-task prompts (:mod:`seqzoo.tasks.protein.prompts`) over synthetic proteins labelled by the
  deterministic physics (:mod:`seqzoo.tasks.protein.physics`) and over real chains labelled by PDB HELIX/SHEET and
  Swiss-Prot FT records from Debian's emboss-test (:mod:`seqzoo.tasks.protein.structure`), split by homology
  family (about 25 % of the residues held out);
* model: :func:`~seqzoo.models.protein.gpt_gnn.gpt_gnn_config` with d_model 64, 4 layers, 4 heads, 3 GCN layers
  (the README's count), MLP FFN; the ablation is the same model with ``gnn_layers = 0`` (plain attention) trained
  on the same batches for the same number of steps;
* training: AdamW lr 2e-3, batch 32, ``STEPS`` steps, warm-up 5 %, cosine; no input masking (the README masks 15 %
  of the bytes; at this budget that only adds label noise);
* evaluation (greedy decoding, parsed answers): ``N_EVAL`` held-out synthetic proteins for per-residue structure,
  content and solubility; every held-out real window (≤ 60 residues) for per-residue structure; ``N_EVAL`` design
  requests (the contents and lengths of held-out synthetic proteins) scored in closed loop by the physics, beside
  uniformly random sequences of the requested length.

Checks (pre-registered, on the GCN model): synthetic per-residue accuracy above the composition baseline (each
amino acid's most frequent class); real held-out per-residue accuracy above the majority class; forward content
MAE < 0.05 and design closed-loop R² > 0.8 (the reference notes' expectations); design closed-loop content error
below that of random sequences. gnn_layers 3 vs 0 is reported without a check (the notes do not expect a sign).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import torch

from ..core.errors import SeqzooError
from ..models.protein.gpt_gnn import (build_gpt_gnn, closed_loop, design, evaluate_content, evaluate_solubility,
                                      evaluate_ss, gpt_gnn_config, plot_ss_strings, train_gpt_gnn)
from ..tasks.protein.physics import (random_protein, secondary_structure, sequence_content, solubility_class,
                                     uniform_random_protein)
from ..tasks.protein.prompts import ProteinPromptTask, real_windows, round_content
from ..tasks.protein.structure import emboss_test_dir, load_real_secondary_structure, split_by_family
from .base import ReproResult, register_repro

MODEL = {"d_model": 64, "n_layers": 4, "n_heads": 4}
GNN_LAYERS = 3
STEPS, BATCH, LR = 500, 32, 2e-3
N_EVAL, N_TRAIN_STATS = 96, 2000
QUICK = {"steps": 3, "n_eval": 4, "model": {"d_model": 32, "n_layers": 1, "n_heads": 2}}
CONTENT_MAE_BAR, DESIGN_R2_BAR = 0.05, 0.8


def _synthetic(seed: str, n: int) -> list[str]:
    rng = random.Random(seed)
    return [random_protein(rng) for _ in range(n)]


def evaluate_model(model, *, test_seqs: list[str], train_seqs: list[str], real_test, real_train,
                   design_requests, batch_size: int = 64) -> dict:
    """Every metric of the reproduction for one trained model."""
    out = {}
    syn_items = [(s, secondary_structure(s)) for s in test_seqs]
    syn_train = [(s, secondary_structure(s)) for s in train_seqs]
    out["synthetic_ss"] = evaluate_ss(model, "ss", syn_items, train_items=syn_train, batch_size=batch_size)
    out["content"] = evaluate_content(model, test_seqs, train_sequences=train_seqs, batch_size=batch_size)
    out["solubility"] = evaluate_solubility(model, test_seqs, [solubility_class(s) for s in test_seqs],
                                            batch_size=batch_size)
    if real_test:
        out["real_ss"] = evaluate_ss(model, "ss_real", [(c.sequence, c.ss) for c in real_test],
                                     train_items=[(c.sequence, c.ss) for c in real_train], batch_size=batch_size)
    designs = design(model, design_requests, batch_size=batch_size)
    out["design"] = closed_loop(design_requests, designs)
    out["design_examples"] = [(r, s) for r, s in list(zip(design_requests, designs))[:4]]
    return out


@register_repro("protein-gpt-gnn", title="Generative Pretrained Autoregressive Transformer Graph Neural Network "
                "applied to the Analysis and Discovery of Novel Proteins", arxiv="2305.04934",
                claim="One byte-level prompt-based GPT whose attention heads run a GCN on the attention graph predicts "
                      "secondary structure (per residue and content) and solubility, and designs sequences with a "
                      "requested secondary-structure content (closed loop).")
def run(quick: bool, device: str = "cpu", steps: str | int | None = None, gnn_layers: str | int = GNN_LAYERS,
        out: str | None = None, threads: str | int = 1, seed: str | int = 0) -> ReproResult:
    try:
        steps = int(steps) if steps is not None else (QUICK["steps"] if quick else STEPS)
        gnn_layers, threads, seed = int(gnn_layers), int(threads), int(seed)
    except ValueError:
        raise SeqzooError("protein-gpt-gnn options steps, gnn_layers, threads and seed must be integers") from None
    if steps < 1 or gnn_layers < 1 or threads < 1:
        raise SeqzooError("protein-gpt-gnn needs steps >= 1, gnn_layers >= 1 (0 is the ablation run anyway), "
                          "threads >= 1")
    if device not in ("cpu", "cuda"):
        raise SeqzooError(f"device must be cpu or cuda, got {device!r}")
    torch.set_num_threads(threads)
    start = time.perf_counter()
    n_eval = QUICK["n_eval"] if quick else N_EVAL
    model_shape = QUICK["model"] if quick else MODEL
    result = ReproResult("protein-gpt-gnn")

    real_train = real_test = []
    if emboss_test_dir() is not None:
        real_train, real_test = split_by_family(load_real_secondary_structure())
    else:
        result.notes.append("emboss-test not installed: trained and evaluated on synthetic physics only")
    real_test_windows = real_windows(real_test)[: (n_eval if quick else None)]
    task = ProteinPromptTask(seed=seed, real_train=real_train, real_val=real_test)
    test_seqs = _synthetic(f"test-{seed}", n_eval)
    train_seqs = _synthetic(f"train-stats-{seed}", 50 if quick else N_TRAIN_STATS)
    requests = [(*round_content(*sequence_content(s)[:2]), len(s)) for s in _synthetic(f"design-{seed}", n_eval)]
    rng = random.Random(f"random-designs-{seed}")
    random_loop = closed_loop(requests, [uniform_random_protein(rng, n) for _, _, n in requests])

    runs = {}
    for layers in (gnn_layers, 0):
        torch.manual_seed(seed)
        model = build_gpt_gnn(gpt_gnn_config(gnn_layers=layers, **model_shape))
        train = train_gpt_gnn(model, task, steps=steps, batch_size=BATCH, lr=LR, seed=seed, device=device)
        t0 = time.perf_counter()
        metrics = evaluate_model(model, test_seqs=test_seqs, train_seqs=train_seqs, real_test=real_test_windows,
                                 real_train=real_train, design_requests=requests)
        metrics.update(train_loss=train.get("loss"), train_seconds=train["train_seconds"],
                       eval_seconds=time.perf_counter() - t0, parameters=model.num_parameters())
        runs[layers] = metrics
        if out is not None:
            rows = [(f"syn{i}", p, t) for i, (_, p, t) in enumerate(metrics["synthetic_ss"]["rows"][:8])]
            plot_ss_strings(rows, Path(out) / f"ss_synthetic_gnn{layers}.png",
                            title=f"synthetic physics, held-out proteins (gnn_layers={layers})")
            if "real_ss" in metrics:
                rows = [(c.name, p, t) for c, (_, p, t) in zip(real_test_windows, metrics["real_ss"]["rows"][:8])]
                plot_ss_strings(rows, Path(out) / f"ss_real_gnn{layers}.png",
                                title=f"real PDB/Swiss-Prot labels, held-out families (gnn_layers={layers})")

    g, p = runs[gnn_layers], runs[0]
    syn, con, loop = g["synthetic_ss"], g["content"], g["design"]
    result.check("synthetic per-residue accuracy vs composition baseline",
                 f"{syn['accuracy']:.3f} vs {syn['composition_accuracy']:.3f} "
                 f"(majority {syn['majority_accuracy']:.3f})",
                 "model > composition baseline", syn["accuracy"] > syn["composition_accuracy"])
    if "real_ss" in g:
        real = g["real_ss"]
        result.check("real held-out per-residue accuracy vs majority class",
                     f"{real['accuracy']:.3f} vs {real['majority_accuracy']:.3f} ({real['majority_class']}; "
                     f"composition {real['composition_accuracy']:.3f}; {real['residues']} residues)",
                     "model > majority class", real["accuracy"] > real["majority_accuracy"])
    result.check("forward content MAE (synthetic)", f"{con['content_mae']:.3f} (mean-content baseline "
                 f"{con['mean_baseline_mae']:.3f})", f"< {CONTENT_MAE_BAR} (reference notes)",
                 con["content_mae"] < CONTENT_MAE_BAR)
    result.check("design closed-loop R² of achieved vs requested f_H, f_E", loop["r2"],
                 f"> {DESIGN_R2_BAR} (reference notes)", loop["r2"] > DESIGN_R2_BAR)
    result.check("design closed-loop content MAE vs random sequences",
                 f"{loop['content_mae']:.3f} vs {random_loop['content_mae']:.3f} (well-formed "
                 f"{loop['well_formed']:.2f})", "model < random", loop["content_mae"] < random_loop["content_mae"])
    line = []
    for layers, m in ((gnn_layers, g), (0, p)):
        real_acc = f"{m['real_ss']['accuracy']:.3f}" if "real_ss" in m else "n/a"
        line.append(f"gnn_layers={layers}: synthetic acc {m['synthetic_ss']['accuracy']:.3f}, real acc {real_acc}, "
                    f"content MAE {m['content']['content_mae']:.3f}, solubility acc {m['solubility']['accuracy']:.3f}, "
                    f"design MAE {m['design']['content_mae']:.3f} R² {m['design']['r2']:.3f}, "
                    f"train loss {m['train_loss']:.3f}, {m['train_seconds']:.0f} s")
    result.notes.extend(line)
    result.notes.append(f"random sequences: design MAE {random_loop['content_mae']:.3f}, R² {random_loop['r2']:.3f}")
    for m in runs.values():
        for key in ("synthetic_ss", "real_ss"):
            if key in m:
                m[key] = {k: v for k, v in m[key].items() if k != "rows"}
    result.details.update(runs={str(k): v for k, v in runs.items()}, random_designs=random_loop,
                          setup={"model": model_shape, "gnn_layers": gnn_layers, "steps": steps, "batch": BATCH,
                                 "lr": LR, "n_eval": n_eval, "device": device, "threads": threads,
                                 "real_train_residues": sum(len(c.sequence) for c in real_train),
                                 "real_test_windows": len(real_test_windows)},
                          wall_seconds=time.perf_counter() - start)
    if quick:
        result.notes.append("quick mode: a smoke run, its checks are not meant to hold")
    return result


__all__ = ["evaluate_model", "run"]
