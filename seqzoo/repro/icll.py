"""Reproduction ``icll``: on in-context language learning of random DFA languages, a transformer beats recurrent
sequence models trained under the same budget.

Paper: "In-Context Language Learning: Architectures and Algorithms", Akyürek, Wang, Kim and Andreas, ICML 2024,
arXiv 2401.12973 (REGBENCH; headline: "Transformers significantly outperform neural sequence models with recurrent
or convolutional representations on ICLL tasks", and they behave like in-context n-gram models).

Setting (fixed before any run): :class:`~seqzoo.tasks.icll.ICLL` with the paper's DFA ranges (4–12 states,
alphabet of 4–18 of 18 symbols, 1–4 outgoing edges per state, all states accepting), strings of 1–20 symbols
(the official config uses up to 50; shortened so a 256-token prompt holds ~20 strings), prompts of ``SEQ_LEN``
tokens, a fresh DFA per prompt (train and evaluation prompts come from disjoint random streams). Each model is a
``CausalLM`` with ``N_LAYERS`` layers of one mixer, d_model ``D_MODEL``, GLU FFN, trained with the shared trainer
(AdamW, warm-up + cosine, lr ``LR``, weight decay 0.1) for ``STEPS`` steps of ``BATCH`` prompts — the same budget
for every model. Models: ``attention`` (softmax, RoPE) against the recurrent mixers ``linear_attention`` and
``retention`` (``--set models=...`` adds e.g. ``mamba`` or ``deltanet``, slow on a CPU).

Metric: DFA-validity accuracy (``dfa_accuracy``): the greedy next token must be a symbol with an edge out of the
current DFA state, scored at every in-string position after the first string (see :mod:`seqzoo.tasks.icll.data`),
on ``EVAL_BATCHES`` × ``EVAL_BATCH`` validation prompts. Reference learners on the same positions: in-context
n-gram models with backoff, n = 1 … 4 (:mod:`seqzoo.tasks.icll.ngram`).

Checks (pre-registered from the paper's headline; the reference notes, ``reference/systems-part2.md`` §22, give no
verified numbers): the transformer has the highest DFA-validity accuracy of all the models trained, and beats the
best recurrent model by at least ``MARGIN`` = 0.05 ("significantly outperform"). The n-gram baselines are reported
beside them, not checked. Quick mode: a tiny model and a few steps; its checks are not meant to hold.

Options (``seqzoo repro icll --set key=value``): ``models`` (comma list, ``attention`` first), ``device`` (``cpu``
default, ``cuda``), ``steps``, ``batch`` (prompts per step), ``threads`` (torch CPU threads, default 1),
``seed``, ``workers`` (models trained at once in separate processes, e.g. sharing one GPU; default 1).
"""

from __future__ import annotations

import tempfile
import time

import torch

from ..core.errors import SeqzooError
from ..core.registry import list_mixers
from ..models import CausalLM, ModelConfig
from ..tasks.icll import ICLL
from ..train import Trainer
from ..train.config import TrainConfig
from .base import ReproResult, register_repro
from .common import int_option, run_processes

SEQ_LEN, MAX_STRING = 256, 20
MODELS = ("attention", "linear_attention", "retention")
D_MODEL, N_LAYERS = 64, 2
STEPS, BATCH, LR, WEIGHT_DECAY = 800, 32, 2e-3, 0.1
EVAL_BATCHES, EVAL_BATCH = 4, 64
MARGIN = 0.05
QUICK = {"seq_len": 48, "max_len": 8, "d_model": 16, "n_layers": 1, "steps": 3, "batch": 4, "eval_batches": 1,
         "eval_batch": 8}


def _int_option(name: str, value, default: int) -> int:
    return int_option("icll", name, value, default)


def _models(value) -> list[str]:
    if value is None:
        return list(MODELS)
    names = [m.strip() for m in (value.split(",") if isinstance(value, str) else value) if m.strip()]
    valid = list_mixers()
    for name in names:
        if name not in valid:
            raise SeqzooError(f"icll option models: unknown mixer {name!r}; valid: {', '.join(valid)}")
    if len(names) < 2 or names[0] != "attention":
        raise SeqzooError(f"icll option models must list 'attention' first and at least one other mixer, "
                          f"got {value!r}")
    return names


def train_one(mixer: str, task: ICLL, *, d_model: int, n_layers: int, steps: int, batch: int, seed: int,
              device: str, eval_batches: int, eval_batch: int, threads: int = 1) -> dict:
    """Train one model on the task; its DFA-validity accuracy, parameters, state size and times."""
    torch.set_num_threads(threads)
    cfg = ModelConfig(vocab_size=task.vocab_size, d_model=d_model, n_layers=n_layers, mixer=mixer)
    torch.manual_seed(seed)
    model = CausalLM(cfg)
    train = TrainConfig(steps=steps, batch_size=batch, lr=LR, seed=seed, weight_decay=WEIGHT_DECAY,
                        warmup_steps=max(1, steps // 10), eval_every=steps, eval_batches=2, checkpoint_every=10**9,
                        keep_checkpoints=1, progress=False, log_every=max(1, steps // 10), device=device)
    wall, cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(prefix="seqzoo-repro-icll-") as out_dir:
        Trainer(model, task, train, out_dir).fit()
    metrics = task.evaluate_model(model, batches=eval_batches, batch_size=eval_batch, split="val")
    metrics.update(mixer=mixer, parameters=model.num_parameters(), state_size=model.state_size(task.seq_len),
                   wall_seconds=time.perf_counter() - wall, cpu_seconds=time.process_time() - cpu)
    return metrics


@register_repro("icll", title="In-Context Language Learning: Architectures and Algorithms", arxiv="2401.12973",
                claim="On in-context learning of random DFA languages (REGBENCH), a transformer's next-token "
                      "predictions are valid far more often than those of recurrent models trained the same way.")
def run(quick: bool, *, models=None, device: str = "cpu", steps=None, batch=None, threads=None,
        seed=None, workers=None) -> ReproResult:
    if str(device) not in ("cpu", "cuda", "auto"):
        raise SeqzooError(f"icll option device must be cpu, cuda or auto, got {device!r}")
    names = _models(models)
    threads, seed = _int_option("threads", threads, 1), _int_option("seed", seed, 0)
    workers = _int_option("workers", workers, 1)
    torch.set_num_threads(threads)
    if quick:
        q = QUICK
        seq_len, max_len, d_model, n_layers = q["seq_len"], q["max_len"], q["d_model"], q["n_layers"]
        eval_batches, eval_batch, steps = q["eval_batches"], q["eval_batch"], _int_option("steps", steps, q["steps"])
        batch = _int_option("batch", batch, q["batch"])
    else:
        seq_len, max_len, d_model, n_layers = SEQ_LEN, MAX_STRING, D_MODEL, N_LAYERS
        eval_batches, eval_batch, steps = EVAL_BATCHES, EVAL_BATCH, _int_option("steps", steps, STEPS)
        batch = _int_option("batch", batch, BATCH)
    start = time.perf_counter()
    task = ICLL(seq_len=seq_len, max_len=max_len, seed=seed)
    baselines = task.baselines(split="val", batches=eval_batches, batch_size=eval_batch)
    jobs = [dict(mixer=m, task=task, d_model=d_model, n_layers=n_layers, steps=steps, batch=batch, seed=seed,
                 device=device, eval_batches=eval_batches, eval_batch=eval_batch, threads=threads) for m in names]
    runs = dict(zip(names, run_processes(train_one, jobs, workers)))
    acc = {m: r["dfa_accuracy"] for m, r in runs.items()}
    result = ReproResult("icll")
    result.details.update(runs=runs, baselines=baselines, wall_seconds=time.perf_counter() - start,
                          setup={"seq_len": seq_len, "max_string_len": max_len, "d_model": d_model,
                                 "n_layers": n_layers, "steps": steps, "batch": batch, "lr": LR,
                                 "weight_decay": WEIGHT_DECAY, "eval_prompts": eval_batches * eval_batch,
                                 "models": names, "device": str(device), "threads": threads, "seed": seed,
                                 "workers": workers})
    best = max(acc, key=acc.get)
    ranking = ", ".join(f"{m} {a:.3f}" for m, a in sorted(acc.items(), key=lambda kv: -kv[1]))
    result.check("model with the highest DFA-validity accuracy", ranking, "attention (paper: transformers best)",
                 best == "attention")
    recurrent = {m: a for m, a in acc.items() if m != "attention"}
    rival = max(recurrent, key=recurrent.get)
    margin = acc["attention"] - recurrent[rival]
    result.check(f"attention minus the best recurrent model ({rival})", margin, f"≥ {MARGIN}", margin >= MARGIN)
    result.notes.append("in-context n-gram baselines (DFA-validity accuracy, same positions): " + ", ".join(
        f"{k.split('_')[0]} {v:.3f}" for k, v in baselines.items()))
    result.notes.append("per model: " + "; ".join(
        f"{m}: loss {r['loss']:.3f}, exact-next-token {r['accuracy']:.3f}, state {r['state_size']}, "
        f"{r['wall_seconds']:.0f} s wall / {r['cpu_seconds']:.0f} s cpu" for m, r in runs.items()))
    result.notes.append(f"total {result.details['wall_seconds']:.0f} s on {device}")
    if quick:
        result.notes.append("quick mode: tiny model and a few steps; the checks are not expected to hold")
    return result
