"""GPT-GNN for proteins: a byte-level prompt-based decoder whose attention heads run a GCN on their own attention
graph, trained on forward (structure, content, solubility) and inverse (design) tasks at once.

Paper: "Generative Pretrained Autoregressive Transformer Graph Neural Network applied to the Analysis and Discovery
of Novel Proteins", M. J. Buehler, J. Appl. Phys. 2023, arXiv 2305.04934 ("MaterioFormer").

The model is seqzoo's :class:`~seqzoo.models.CausalLM` over bytes (vocabulary 256) with the registered mixer
``gpt_gnn_attention`` (:mod:`seqzoo.mixers.attention.gnn_attention`) in every layer:

    h_0 = Embed(bytes);  h_l = h_{l-1} + GraphAttention(RMSNorm(h_{l-1}));  h_l = h_l + MLP(RMSNorm(h_l))
    GraphAttention: o = A V + GCN_A(V) W_out  with  Hˡ = GELU(diag(Â1)⁻¹ Â (Hˡ⁻¹ Wₗ + bₗ) + Hˡ⁻¹),  H⁰ = V

trained by next-byte cross-entropy counted only after the task delimiter (:mod:`seqzoo.tasks.protein.prompts`).
Answers are produced by :func:`seqzoo.generation.generate` (prefill, then stepping the KV + GCN cache), greedy by
default, and parsed back; the inverse task is scored in closed loop by the synthetic physics
(:mod:`seqzoo.tasks.protein.physics`). The paper's model is 12 layers of width 256 with 8 heads of 32 and 3 GCN
layers (official README); the defaults here are CPU-sized.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

from ...core.errors import SeqzooError
from ...generation import generate
from ...tasks.protein.physics import SS_CLASSES, content, sequence_content
from ...tasks.protein.prompts import END, decode, encode, make_prompt, parse_answer
from ..causal_lm import CausalLM
from ..config import ModelConfig

MIXER = "gpt_gnn_attention"


def gpt_gnn_config(*, d_model: int = 96, n_layers: int = 4, n_heads: int = 4, gnn_layers: int = 3,
                   ffn: str = "mlp", **mixer_options) -> ModelConfig:
    """A byte-level :class:`ModelConfig` with ``gpt_gnn_attention`` in every layer (``gnn_layers = 0``: plain
    causal attention, the ablation)."""
    options = {"n_heads": n_heads, "gnn_layers": gnn_layers, **mixer_options}
    return ModelConfig(vocab_size=256, d_model=d_model, n_layers=n_layers, mixer=MIXER,
                       mixer_options={MIXER: options}, ffn=ffn)


def build_gpt_gnn(cfg: ModelConfig | None = None, **kwargs) -> CausalLM:
    """A :class:`CausalLM` from ``cfg`` (or from :func:`gpt_gnn_config` keyword arguments)."""
    return CausalLM(cfg if cfg is not None else gpt_gnn_config(**kwargs))


def train_gpt_gnn(model: CausalLM, task, *, steps: int, batch_size: int = 32, lr: float = 2e-3, seed: int = 0,
                  out_dir=None, device: str = "cpu", progress: bool = False, run_config: dict | None = None,
                  eval_batches: int = 4) -> dict:
    """Train with seqzoo's :class:`~seqzoo.train.Trainer` (AdamW, warm-up + cosine, clipping, atomic checkpoints
    in ``out_dir``; a temporary directory when None). Returns the trainer's final metrics plus ``train_seconds``."""
    from ...train import Trainer
    from ...train.config import TrainConfig

    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, warmup_steps=max(1, steps // 20),
                      weight_decay=0.01, eval_every=0, eval_batches=eval_batches, checkpoint_every=0,
                      keep_checkpoints=1, log_every=max(1, steps // 20), progress=progress, device=device)
    start = time.perf_counter()
    if out_dir is None:
        with tempfile.TemporaryDirectory(prefix="seqzoo-gpt-gnn-") as tmp:
            metrics = Trainer(model, task, cfg, tmp, run_config=run_config).fit()
            metrics.pop("checkpoint", None)
    else:
        metrics = Trainer(model, task, cfg, out_dir, run_config=run_config).fit()
    metrics["train_seconds"] = time.perf_counter() - start
    return metrics


@torch.no_grad()
def complete(model: CausalLM, prompts: list[str], max_new_tokens: int, *, temperature: float = 0.0,
             top_k: int | None = None, seed: int | None = None, batch_size: int = 64) -> list[str]:
    """Generate each prompt's answer (bytes up to and including ``;``) and decode it."""
    if not prompts:
        return []
    was_training = model.training
    model.eval()
    out: list[str] = []
    try:
        for lo in range(0, len(prompts), batch_size):
            chunk = [encode(p) for p in prompts[lo:lo + batch_size]]
            new = generate(model, chunk, max_new_tokens, temperature=temperature, top_k=top_k, eos_id=ord(END),
                           seed=None if seed is None else seed + lo)
            out.extend(decode(t) for t in new)
    finally:
        model.train(was_training)
    return out


def predict(model: CausalLM, task: str, sequences: list[str], **kwargs) -> list:
    """Answers of a forward task (``ss``, ``ss_real``, ``content``, ``solubility``) for each sequence, parsed
    (None where the generated text is malformed)."""
    if task == "design":
        raise SeqzooError("predict runs forward tasks (ss, ss_real, content, solubility); use design() for GEN")
    prompts = [make_prompt(task, sequence=s) for s in sequences]
    longest = max(len(s) for s in sequences) if sequences else 0
    budget = longest + 2 if task in ("ss", "ss_real") else 16
    return [parse_answer(task, text) for text in complete(model, prompts, budget, **kwargs)]


def design(model: CausalLM, requests: list[tuple[float, float, int]], **kwargs) -> list[str | None]:
    """Sequences for ``(helix fraction, sheet fraction, length)`` requests (None where malformed)."""
    prompts = [make_prompt("design", helix=h, sheet=e, length=n) for h, e, n in requests]
    longest = max(n for _, _, n in requests) if requests else 0
    return [parse_answer("design", text) for text in complete(model, prompts, longest + 8, **kwargs)]


# -- metrics --------------------------------------------------------------------------------------------------------
def ss_accuracy(pred: str | None, truth: str) -> float:
    """Fraction of residues of ``truth`` labelled right; a missing or short prediction counts as wrong there."""
    if not pred:
        return 0.0
    return sum(p == t for p, t in zip(pred, truth)) / len(truth)


def majority_class(ss_strings: list[str]) -> str:
    counts = Counter("".join(ss_strings))
    return max(SS_CLASSES, key=lambda c: (counts[c], -SS_CLASSES.index(c)))


def residue_majority(sequences: list[str], ss_strings: list[str]) -> dict[str, str]:
    """The composition baseline: for each amino acid its most frequent class in the training data (falling back to
    the overall majority class)."""
    overall = majority_class(ss_strings)
    counts: dict[str, Counter] = {}
    for seq, ss in zip(sequences, ss_strings):
        for a, c in zip(seq, ss):
            counts.setdefault(a, Counter())[c] += 1
    return {a: max(SS_CLASSES, key=lambda k: (cnt[k], k == overall)) for a, cnt in counts.items()} | \
        {"_default": overall}


def apply_residue_majority(table: dict[str, str], seq: str) -> str:
    return "".join(table.get(a, table["_default"]) for a in seq)


def content_mae(pred, truth) -> float:
    return sum(abs(p - t) for p, t in zip(pred, truth)) / 3


def evaluate_ss(model: CausalLM, task: str, items: list[tuple[str, str]], *, train_items: list[tuple[str, str]],
                **kwargs) -> dict:
    """Per-residue accuracy (pooled over residues) of the model on ``(sequence, truth)`` items beside the
    majority-class and composition baselines fitted on ``train_items``; plus the content error of the predicted
    strings vs the true content, beside predicting the training mean content. Returns metrics and the rows."""
    preds = predict(model, task, [s for s, _ in items], **kwargs)
    majority = majority_class([t for _, t in train_items])
    table = residue_majority([s for s, _ in train_items], [t for _, t in train_items])
    mean_content = [sum(content(t)[k] for _, t in train_items) / len(train_items) for k in range(3)]
    total = sum(len(t) for _, t in items)
    model_right = sum(ss_accuracy(p, t) * len(t) for p, (_, t) in zip(preds, items))
    maj_right = sum(t.count(majority) for _, t in items)
    comp_right = sum(ss_accuracy(apply_residue_majority(table, s), t) * len(t) for s, t in items)
    valid = [p is not None and len(p) == len(t) for p, (_, t) in zip(preds, items)]
    errors = [content_mae(content(p), content(t)) if p else 1.0 for p, (_, t) in zip(preds, items)]
    base_err = [content_mae(mean_content, content(t)) for _, t in items]
    return {"accuracy": model_right / total, "majority_accuracy": maj_right / total, "majority_class": majority,
            "composition_accuracy": comp_right / total, "well_formed": sum(valid) / len(items),
            "content_mae": sum(errors) / len(errors), "mean_content_mae": sum(base_err) / len(base_err),
            "residues": total, "items": len(items),
            "rows": [(s, p, t) for p, (s, t) in zip(preds, items)]}


def evaluate_content(model: CausalLM, sequences: list[str], *, train_sequences: list[str], **kwargs) -> dict:
    """Forward content task: MAE of the generated fractions vs the physics, beside predicting the training mean."""
    preds = predict(model, "content", sequences, **kwargs)
    truth = [sequence_content(s) for s in sequences]
    train = [sequence_content(s) for s in train_sequences]
    mean = [sum(t[k] for t in train) / len(train) for k in range(3)]
    errs = [content_mae(p, t) if p is not None else 1.0 for p, t in zip(preds, truth)]
    return {"content_mae": sum(errs) / len(errs), "mean_baseline_mae": sum(content_mae(mean, t) for t in truth) /
            len(truth), "well_formed": sum(p is not None for p in preds) / len(preds)}


def evaluate_solubility(model: CausalLM, sequences: list[str], labels: list[int], **kwargs) -> dict:
    preds = predict(model, "solubility", sequences, **kwargs)
    majority = int(sum(labels) * 2 >= len(labels))
    return {"accuracy": sum(p == y for p, y in zip(preds, labels)) / len(labels),
            "majority_accuracy": sum(y == majority for y in labels) / len(labels)}


def r_squared(pred: list[float], truth: list[float]) -> float:
    mean = sum(truth) / len(truth)
    ss_tot = sum((t - mean) ** 2 for t in truth)
    ss_res = sum((p - t) ** 2 for p, t in zip(pred, truth))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")


def closed_loop(requests: list[tuple[float, float, int]], sequences: list[str | None]) -> dict:
    """Score designs by re-running the physics: MAE of (f_H, f_E, f_C) achieved vs requested; R² of achieved vs
    requested, computed for f_H and for f_E separately and averaged (so a constant output scores ≤ 0); length
    error; over the well-formed designs."""
    pairs = [(r, s) for r, s in zip(requests, sequences) if s]
    if not pairs:
        return {"well_formed": 0.0, "content_mae": float("nan"), "r2": float("nan"), "length_mae": float("nan")}
    achieved = [sequence_content(s) for _, s in pairs]
    wanted = [(h, e, 1.0 - h - e) for (h, e, _), _ in pairs]
    return {"well_formed": len(pairs) / len(requests),
            "content_mae": sum(content_mae(a, w) for a, w in zip(achieved, wanted)) / len(pairs),
            "r2": sum(r_squared([a[k] for a in achieved], [w[k] for w in wanted]) for k in (0, 1)) / 2,
            "length_mae": sum(abs(len(s) - n) for (_, _, n), s in pairs) / len(pairs)}


# -- plots ----------------------------------------------------------------------------------------------------------
SS_COLOURS = {"H": "#d62728", "E": "#1f77b4", "C": "#d9d9d9"}


def plot_ss_strings(rows: list[tuple[str, str | None, str]], path, *, title: str = "") -> Path:
    """Render predicted vs true secondary-structure strings as coloured residue tracks (H red, E blue, C grey) to a
    PNG; ``rows`` are ``(name, prediction or None, truth)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    if not rows:
        raise SeqzooError("plot_ss_strings needs at least one row")
    width = max(len(t) for _, _, t in rows)
    fig, ax = plt.subplots(figsize=(min(2 + width * 0.12, 24), 0.7 + 0.55 * len(rows)))
    for i, (name, pred, truth) in enumerate(rows):
        y = len(rows) - 1 - i
        for track, text, offset in (("truth", truth, 0.22), ("model", pred or "", -0.2)):
            for j, c in enumerate(text):
                ax.add_patch(plt.Rectangle((j, y + offset - 0.17), 1, 0.34, color=SS_COLOURS.get(c, "black"), lw=0))
        acc = ss_accuracy(pred, truth)
        ax.text(-0.5, y, f"{name[:24]}  (acc {acc:.2f})", ha="right", va="center", fontsize=7)
    ax.set_xlim(-0.5, width + 0.5)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_yticks([])
    ax.set_xlabel("residue (upper track: truth, lower track: model)")
    ax.legend(handles=[Patch(color=v, label=k) for k, v in SS_COLOURS.items()], loc="upper right", fontsize=7,
              ncol=3, bbox_to_anchor=(1.0, 1.0 + 0.6 / (len(rows) + 1)))
    if title:
        ax.set_title(title, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


__all__ = ["apply_residue_majority", "build_gpt_gnn", "closed_loop", "complete", "design", "evaluate_content",
           "evaluate_solubility", "evaluate_ss", "gpt_gnn_config", "majority_class", "plot_ss_strings", "predict",
           "r_squared", "residue_majority", "ss_accuracy", "train_gpt_gnn"]
