"""Reproduction ``tranception``: AR scoring + inference-time retrieval on a synthetic Potts protein family.

Paper: "Tranception: protein fitness prediction with autoregressive transformers and inference-time retrieval",
Notin et al., ICML 2022, arXiv 2205.13760. Headline (ProteinGym substitutions, average Spearman, from the official
performance files [V]): Tranception L with retrieval 0.445 > without retrieval 0.401 > site-independent 0.373;
the gain of retrieval is largest on multiple mutants.

Setting (reference notes, systems-part1.md entry 2; all values fixed before any model was trained):

* Family: a random sparse Potts model (:func:`seqzoo.tasks.protein.potts.random_potts`), L = 48, q = 20,
  96 edges (half between positions 2–4 apart), fields N(0, 2²), couplings N(0, 1) — scales chosen so that the
  family's mean pairwise identity is ≈ 0.3, like a natural family. Gibbs sampling (1,000 parallel chains, 300
  burn-in sweeps, then one sample per chain every 5 sweeps): 20,000 training sequences and, from other chains,
  1,000 sequences as the retrieved MSA. Wild type: the MSA sequence of lowest energy.
* Assay: all 912 single substitutions of the wild type and 2,000 random double substitutions (uniform position
  pairs), true fitness −ΔE (exactly log P(mut) − log P(wt) under the family's distribution).
* Models, same budget: vanilla GPT (registered ``attention`` mixer: softmax attention with RoPE) and Tranception
  (``tranception`` mixer: kernels 1/3/5/7, grouped ALiBi); both d_model 64, 2 layers, 8 heads, GELU MLP,
  AdamW lr 1e-3, batch 32, 1,200 steps (≈ 2 epochs), sequences reversed with probability ½, seed 0.
* Scores: bidirectional log-likelihood ratio; Tranception + retrieval fuses the MSA prior (Hopf weights θ = 0.2,
  pseudo-count 1) at α = 0.6 (the official default [V]); the site-independent prior alone (α = 1) is reported too.

Checks (pre-registered; point estimates, no tolerance): Spearman(Tranception + retrieval) ≥ Spearman(Tranception)
≥ Spearman(vanilla GPT), on singles and on doubles separately, and Tranception + retrieval ≥ site-independent on
doubles. A paired bootstrap (500 resamples of the mutants) gives, for each comparison, how often it held; reported
as notes. ``--set device=cuda`` trains on a GPU; ``--set steps=N`` changes the budget (then it is not the
pre-registered run); ``--set out=DIR`` is where the scatter plot and JSON go.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..core.errors import SeqzooError
from ..models.protein.tranception import FitnessScorer, ProteinFamilyData, ProteinLM, ProteinLMConfig
from ..tasks.protein.msa_prior import msa_log_prior
from ..tasks.protein.potts import all_single_mutants, gibbs_sample, random_double_mutants, random_potts, to_strings
from ..tasks.protein.proteingym import scatter_plot, spearman
from ..train import Trainer
from ..train.config import TrainConfig
from .base import ReproResult, register_repro

FULL = {"length": 48, "n_train": 20000, "n_msa": 1000, "n_doubles": 2000, "chains": 1000, "burn_in": 300,
        "thin": 5, "d_model": 64, "n_layers": 2, "n_heads": 8, "steps": 1200, "batch": 32, "lr": 1e-3}
QUICK = {"length": 12, "n_train": 200, "n_msa": 60, "n_doubles": 40, "chains": 100, "burn_in": 20,
         "thin": 2, "d_model": 16, "n_layers": 1, "n_heads": 4, "steps": 4, "batch": 8, "lr": 1e-3}
POTTS = {"q": 20, "edges_per_site": 2.0, "field_std": 2.0, "coupling_std": 1.0, "local_fraction": 0.5}
ALPHA, THETA, PSEUDOCOUNT = 0.6, 0.2, 1.0
BOOTSTRAP = 500  # paired bootstrap resamples (50 in quick mode)
MODELS = ("vanilla GPT", "Tranception", "Tranception + retrieval", "site-independent (MSA prior)")


def make_family(p: dict, seed: int) -> dict:
    """The Potts family, its training set, MSA, wild type and assay (mutant strings with −ΔE)."""
    potts = random_potts(p["length"], seed=seed, **POTTS)
    train = gibbs_sample(potts, p["n_train"], burn_in=p["burn_in"], thin=p["thin"], chains=p["chains"],
                         seed=seed + 1)
    msa = gibbs_sample(potts, p["n_msa"], burn_in=p["burn_in"], thin=p["thin"], chains=p["chains"], seed=seed + 2)
    wt = msa[int(potts.energy(msa).argmin())]
    singles, single_names = all_single_mutants(wt)
    doubles, double_names = random_double_mutants(wt, p["n_doubles"], seed=seed + 3)
    return {"potts": potts, "train": to_strings(train), "msa": msa, "wild_type": to_strings(wt.view(1, -1))[0],
            "mutants": {"singles": single_names, "doubles": double_names},
            "fitness": {"singles": (-potts.delta_energy(wt, singles)).numpy(),
                        "doubles": (-potts.delta_energy(wt, doubles)).numpy()}}


def train_model(mixer: str, seqs: list[str], p: dict, *, seed: int, device: str) -> tuple[ProteinLM, dict]:
    torch.manual_seed(seed)
    model = ProteinLM(ProteinLMConfig(mixer=mixer, d_model=p["d_model"], n_layers=p["n_layers"],
                                      n_heads=p["n_heads"]))
    data = ProteinFamilyData(seqs, seed=seed)
    cfg = TrainConfig(steps=p["steps"], batch_size=p["batch"], lr=p["lr"], warmup_steps=max(1, p["steps"] // 20),
                      eval_every=p["steps"], eval_batches=4, checkpoint_every=10**9, keep_checkpoints=1,
                      progress=False, log_every=max(1, p["steps"] // 10), seed=seed, device=device)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="seqzoo-tranception-") as out_dir:
        metrics = Trainer(model, data, cfg, out_dir).fit()
    return model, {"parameters": model.num_parameters(), "train_seconds": time.perf_counter() - start,
                   "val_loss": metrics.get("val_loss")}


def bootstrap_fraction(a: np.ndarray, b: np.ndarray, truth: np.ndarray, seed: int = 0,
                       resamples: int = BOOTSTRAP) -> float:
    """Fraction of paired bootstrap resamples of the mutants where Spearman(a) ≥ Spearman(b)."""
    rng = np.random.default_rng(seed)
    wins = 0
    for _ in range(resamples):
        idx = rng.integers(0, len(truth), len(truth))
        wins += spearman(a[idx], truth[idx]) >= spearman(b[idx], truth[idx])
    return wins / resamples


@register_repro("tranception", title="Tranception: protein fitness prediction with autoregressive transformers "
                                     "and inference-time retrieval", arxiv="2205.13760",
                claim="zero-shot Spearman vs −ΔE on a synthetic Potts family: Tranception + MSA retrieval ≥ "
                      "Tranception ≥ vanilla GPT (same budget), on singles and on doubles")
def run(quick: bool, *, device="cpu", threads=1, seed=0, steps=None, out=None) -> ReproResult:
    p = dict(QUICK if quick else FULL)
    seed, threads = int(seed), int(threads)
    if steps is not None:
        p["steps"] = int(steps)
        if p["steps"] <= 0:
            raise SeqzooError(f"steps must be positive, got {steps}")
    device = str(device)
    if device not in ("cpu", "cuda"):
        raise SeqzooError(f"device must be cpu or cuda, got {device!r}")
    old_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    result = ReproResult("tranception")
    start = time.perf_counter()
    try:
        fam = make_family(p, seed)
        sample_seconds = time.perf_counter() - start
        print(f"  family: {len(fam['train'])} training sequences, MSA {len(fam['msa'])}, L = {p['length']} "
              f"({sample_seconds:.1f}s)", flush=True)
        log_prior = msa_log_prior(fam["msa"], theta=THETA, pseudocount=PSEUDOCOUNT)
        models, train_info = {}, {}
        for label, mixer in (("vanilla GPT", "attention"), ("Tranception", "tranception")):
            models[label], train_info[label] = train_model(mixer, fam["train"], p, seed=seed, device=device)
            print(f"  trained {label}: {train_info[label]['parameters']} parameters, val loss "
                  f"{train_info[label]['val_loss']:.4f} nats/token, {train_info[label]['train_seconds']:.0f}s",
                  flush=True)
        wt = fam["wild_type"]
        scorers = {"vanilla GPT": FitnessScorer(models["vanilla GPT"], wt),
                   "Tranception": FitnessScorer(models["Tranception"], wt),
                   "Tranception + retrieval": FitnessScorer(models["Tranception"], wt, log_prior=log_prior,
                                                            alpha=ALPHA),
                   "site-independent (MSA prior)": FitnessScorer(None, wt, log_prior=log_prior, alpha=1.0),
                   "vanilla GPT + retrieval": FitnessScorer(models["vanilla GPT"], wt, log_prior=log_prior,
                                                            alpha=ALPHA)}
        scorers["Tranception + retrieval"].ar_cache = scorers["Tranception"].ar_cache  # same model: score once
        scorers["vanilla GPT + retrieval"].ar_cache = scorers["vanilla GPT"].ar_cache
        scores = {name: {kind: np.asarray(s.score(fam["mutants"][kind])) for kind in ("singles", "doubles")}
                  for name, s in scorers.items()}
    finally:
        torch.set_num_threads(old_threads)
    truth = fam["fitness"]
    rho = {name: {kind: spearman(scores[name][kind], truth[kind]) for kind in truth} for name in scores}
    total = time.perf_counter() - start
    lines = [f"  {'model':30s} {'singles':>8s} {'doubles':>8s}"]
    lines += [f"  {name:30s} {rho[name]['singles']:8.4f} {rho[name]['doubles']:8.4f}" for name in rho]
    print("\n".join(lines))
    hardware = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {threads} torch thread(s)"
    result.details = {"spearman": rho, "train": train_info, "setup": {**p, **POTTS, "alpha": ALPHA, "theta": THETA,
                                                                      "pseudocount": PSEUDOCOUNT, "seed": seed},
                      "wild_type": wt, "seconds": total, "sample_seconds": sample_seconds, "hardware": hardware,
                      "quick": quick}
    for kind in ("singles", "doubles"):
        for better, worse in (("Tranception + retrieval", "Tranception"), ("Tranception", "vanilla GPT")):
            result.check(f"{kind}: Spearman {better} ≥ {worse}",
                         f"{rho[better][kind]:.4f} vs {rho[worse][kind]:.4f}", "≥ (paper: retrieval 0.445 > "
                         "Tranception 0.401 on ProteinGym; Tranception ≳ GPT-2-style baseline)",
                         rho[better][kind] >= rho[worse][kind])
            resamples = 50 if quick else BOOTSTRAP
            frac = bootstrap_fraction(scores[better][kind], scores[worse][kind], truth[kind], seed, resamples)
            result.notes.append(f"{kind}: {better} ≥ {worse} in {100 * frac:.0f}% of {resamples} paired "
                                f"bootstrap resamples")
    si = "site-independent (MSA prior)"
    result.check("doubles: Spearman Tranception + retrieval ≥ site-independent prior",
                 f"{rho['Tranception + retrieval']['doubles']:.4f} vs {rho[si]['doubles']:.4f}",
                 "≥ (paper: 0.445 vs 0.373; the prior alone is weaker on multiple mutants)",
                 rho["Tranception + retrieval"]["doubles"] >= rho[si]["doubles"])
    result.notes.append("Spearman vs −ΔE:\n" + "\n".join(lines))
    out_dir = Path(out) if out is not None else (None if quick else Path("runs/repro-tranception"))
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in ("Tranception + retrieval", "vanilla GPT"):
            tag = name.split()[0].lower() + ("_retrieval" if "retrieval" in name else "")
            png = scatter_plot(np.concatenate([scores[name]["singles"], scores[name]["doubles"]]),
                               np.concatenate([truth["singles"], truth["doubles"]]), out_dir / f"scatter_{tag}.png",
                               title=f"{name} vs −ΔE (Potts family)",
                               groups=["single"] * len(truth["singles"]) + ["double"] * len(truth["doubles"]))
            result.notes.append(f"scatter plot: {png}")
        (out_dir / "result.json").write_text(json.dumps(result.details, indent=2, default=str))
    result.notes.append(f"total wall time {total:.0f}s on {hardware} (sampling {sample_seconds:.0f}s); seed {seed}")
    if quick:
        result.notes.append("quick mode: a smoke run, its checks are not meant to hold")
    return result


__all__ = ["make_family", "run", "train_model"]
