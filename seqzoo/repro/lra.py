"""Reproduction ``lra``: Long Range Arena's generated tasks, ListOps and Pathfinder, for every chosen mixer.

Papers: "Long Range Arena: A Benchmark for Efficient Transformers", Tay et al., ICLR 2021, arXiv 2011.04006 (the
tasks, and the vanilla Transformer's accuracies: ListOps 36.37 %, Pathfinder 71.40 %, copied from the reference
notes and not re-checked here); "Efficiently Modeling Long Sequences with Structured State Spaces", Gu, Goel, Ré,
ICLR 2022, arXiv 2111.00396 (S4 on LRA: ListOps 59.5 %, Pathfinder 94.0 %, the "final accuracy" row of
state-spaces/s4 ``models/s4/experiments.md``, checked).

Claim checked (fixed before any run): on both tasks the best S4-family mixer (``s4``, ``s4d``) beats vanilla
softmax attention by at least 5 accuracy points on the test split (the papers' gaps are 23 points on both).
Every other mixer in the run is reported beside them, not checked.

Protocol (the same for every mixer; LRA's own models are non-causal encoders with a CLS or pooled readout, ours
are the library's causal :class:`~seqzoo.models.CausalLM` stacks reading the class at a final query token):

* tasks: :class:`~seqzoo.tasks.synthetic.listops.ListOps` (MIN/MAX/MED/SM, depth ≤ 10, 2–10 arguments, length
  strictly between ``listops_min`` and ``listops_max``; LRA: 500 and 2000) and
  :class:`~seqzoo.tasks.synthetic.pathfinder.Pathfinder` (``pathfinder_side``², LRA: 32 × 32 = 1024 pixel
  tokens, two classes). Each task is a fixed data set, as in LRA: ``train_batches`` training batches (seen in
  order, epoch after epoch, when the run is longer) and ``eval_batches`` validation and test batches, generated
  once and shared by every mixer and learning rate;
* model: token embedding → ``n_layers`` blocks of (RMSNorm → mixer → residual, RMSNorm → GLU FFN → residual) of
  width ``d_model``, each mixer with its registry defaults (S4/S4D: N = 64, SSM parameters without weight decay
  and at lr ≤ 1e-3, as S4 prescribes);
* training: AdamW (β = 0.9, 0.95, weight decay 0.05), 10 % linear warm-up then cosine to 0.1·lr, gradient
  clipping 1.0, cross-entropy at the query token only; every mixer trained for the same ``steps`` at every
  learning rate of ``lrs``; the learning rate is chosen on the validation split and the test accuracy of that
  run is reported (LRA's model selection).

``budget_seconds`` (for the GPU commands): instead of fixed ``steps``, time a few training steps of every mixer on
the device and choose the largest common step count that fits the budget (capped by ``steps``), so the whole
grid finishes in time and every mixer still gets the same number of steps.

CPU default (one thread, ≤ 10 minutes; a deviation from the LRA protocol, stated in every result): ListOps of
length 32–128, Pathfinder on a 16 × 16 canvas (256 pixels, one distractor), ``attention``, ``s4d`` and ``s4``
only, d_model 64, 2 layers, 120 steps of 32, lrs {1e-3, 3e-3}. With ``device=cuda`` the defaults are the LRA
lengths (ListOps 500–2000, Pathfinder 32 × 32 with two distractors), every mixer of ``ALL_MIXERS``, d_model 128,
4 layers, at most 5000 steps and a fixed training set of at most 1000 batches of 32; the time to generate the
data (``workers`` processes) is taken out of ``budget_seconds`` before the step count is chosen.
Options (``seqzoo repro lra --set key=value``): ``device``, ``precision``, ``threads``, ``mixers``, ``tasks``,
``steps``, ``budget_seconds``, ``batch_size``, ``lrs``, ``d_model``, ``n_layers``, ``listops_min``,
``listops_max``, ``pathfinder_side``, ``pathfinder_distractors``, ``train_batches``, ``eval_batches``,
``workers`` (processes for data generation), ``seed``. Quick mode: tiny lengths, two mixers, a few steps.
"""

from __future__ import annotations

import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

from ..core.errors import SeqzooError
from ..core.registry import mixer_entry
from ..models import CausalLM, ModelConfig
from ..tasks.metrics import token_accuracy
from ..tasks.synthetic.listops import ListOps
from ..tasks.synthetic.pathfinder import Pathfinder
from ..train import Trainer
from ..train.config import TrainConfig
from .base import ReproResult, register_repro

TASKS = ("listops", "pathfinder")
ALL_MIXERS = ("attention", "linear_attention", "deltanet", "retention", "mamba", "s4", "s4d")
CPU_MIXERS = ("attention", "s4d", "s4")
S4_FAMILY = ("s4", "s4d")
MARGIN = 0.05                    # pre-registered: S4 family ≥ attention + 5 points on each task
PUBLISHED = {                    # test accuracy (%)
    "listops": {"transformer (LRA)": 36.37, "s4 (state-spaces/s4)": 59.5},
    "pathfinder": {"transformer (LRA)": 71.40, "s4 (state-spaces/s4)": 94.0},
}
WEIGHT_DECAY = 0.05
PROBE_STEPS = 3


def as_list(value, kind=str) -> list:
    """A comma-separated option (or a list) as a list of ``kind``."""
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        return [kind(v.strip()) if isinstance(v, str) else kind(v) for v in items if str(v).strip()]
    except ValueError:
        raise SeqzooError(f"cannot read {value!r} as a comma-separated list of {kind.__name__}") from None


def as_number(name: str, value, kind=int, *, low=1):
    """An option as a number ``>= low`` (values from ``--set`` arrive as strings)."""
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise SeqzooError(f"option {name} must be a number, got {value!r}") from None
    if number < low:
        raise SeqzooError(f"option {name} must be >= {low}, got {value!r}")
    return number


def _make_batches(args) -> list[dict]:
    source, split, indices, batch_size = args
    return [source.get_batch(split, i, batch_size) for i in indices]


class FixedData:
    """A fixed data set cut from a generator: ``train_batches`` training batches (batch ``s`` of a run is
    ``s mod train_batches``) and ``eval_batches`` validation and test batches, all generated once (in
    ``workers`` processes) and shared by every run. Passes ``vocab_size`` and ``seq_len`` through."""

    def __init__(self, source, *, batch_size: int, train_batches: int, eval_batches: int, workers: int = 1):
        self.source, self.batch_size = source, batch_size
        self.vocab_size, self.seq_len = source.vocab_size, source.seq_len
        self.splits = {split: self._generate(split, count, workers)
                       for split, count in (("train", train_batches), ("val", eval_batches), ("test", eval_batches))}

    def _generate(self, split: str, count: int, workers: int) -> list[dict]:
        if workers <= 1 or count < 2 * workers:
            return _make_batches((self.source, split, range(count), self.batch_size))
        parts = [(self.source, split, range(w, count, workers), self.batch_size) for w in range(workers)]
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_make_batches, parts))
        out = [None] * count
        for w, batches in enumerate(results):
            out[w::workers] = batches
        return out

    def get_batch(self, split: str, index: int, batch_size: int) -> dict[str, torch.Tensor]:
        if split not in self.splits:
            raise SeqzooError(f"unknown split {split!r}; valid: train, val, test")
        if batch_size != self.batch_size:
            raise SeqzooError(f"this fixed data set has batches of {self.batch_size}, asked for {batch_size}")
        batches = self.splits[split]
        return batches[index % len(batches)]

    def majority_rate(self, split: str = "test") -> float:
        """Accuracy of always answering the most frequent label of ``split``."""
        labels = torch.cat([b["targets"][b["loss_mask"]] for b in self.splits[split]]).numpy()
        return float(np.bincount(labels).max() / len(labels))


def model_config(mixer: str, vocab_size: int, d_model: int, n_layers: int) -> ModelConfig:
    return ModelConfig(vocab_size=vocab_size, d_model=d_model, n_layers=n_layers, mixer=mixer)


def train_config(*, steps: int, batch_size: int, lr: float, device: str, precision: str, seed: int = 0,
                 weight_decay: float = WEIGHT_DECAY) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, weight_decay=weight_decay,
                       warmup_steps=max(1, steps // 10), eval_every=0, eval_batches=1, device=device,
                       precision=precision, checkpoint_every=10**9, keep_checkpoints=1, progress=False,
                       log_every=max(1, steps // 10))


def step_seconds(cfg: ModelConfig, data, *, batch_size: int, device: str, precision: str,
                 probe_steps: int = PROBE_STEPS) -> float:
    """Seconds per training step (forward, backward, AdamW) of a fresh model on the first training batch of
    ``data``: one warm-up step (allocations, kernel compilation), then ``probe_steps`` timed."""
    torch.manual_seed(0)
    model = CausalLM(cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    batch = {k: v.to(device) for k, v in data.get_batch("train", 0, batch_size).items()}

    def one_step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model.loss(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    one_step()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(probe_steps):
        one_step()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / probe_steps


def common_steps(per_step: dict[str, float], *, runs_per_mixer: int, budget: float, cap: int,
                 eval_cost_steps: float) -> int:
    """The largest common step count such that every mixer's ``runs_per_mixer`` runs (each ``steps`` training
    steps plus about ``eval_cost_steps`` steps' worth of evaluation) fit in ``budget`` seconds; at most ``cap``."""
    total = sum(per_step.values()) * runs_per_mixer
    steps = int(budget / total - eval_cost_steps) if total > 0 else cap
    return max(1, min(cap, steps))


def train_and_score(cfg: ModelConfig, data, *, steps: int, batch_size: int, lr: float, device: str,
                    precision: str, eval_batches: int, splits=("val", "test"), seed: int = 0,
                    weight_decay: float = WEIGHT_DECAY, build=CausalLM) -> dict:
    """Train a fresh model ``build(cfg)`` on ``data``; accuracy (at the scored positions) on each of ``splits``,
    parameters, state size and time. A diverged run scores 0 on every split and says so."""
    torch.manual_seed(seed)
    model = build(cfg)
    tc = train_config(steps=steps, batch_size=batch_size, lr=lr, device=device, precision=precision, seed=seed,
                      weight_decay=weight_decay)
    start = time.perf_counter()
    out = {"lr": lr, "steps": steps, "parameters": model.num_parameters(),
           "state_size": model.state_size(getattr(data, "seq_len", 64))}
    with tempfile.TemporaryDirectory(prefix="seqzoo-repro-") as out_dir:
        try:
            Trainer(model, data, tc, out_dir).fit()
        except SeqzooError as e:
            out["diverged"] = str(e)
    out["train_seconds"] = time.perf_counter() - start
    for split in splits:
        if "diverged" in out:
            out[split] = 0.0
            continue
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
            metrics = token_accuracy(model, data, split=split, batches=eval_batches, batch_size=batch_size)
        out[split] = float(metrics["accuracy"])
        out[f"{split}_loss"] = float(metrics["loss"])
    return out


def build_task(name: str, *, listops_min: int, listops_max: int, side: int, distractors: int, seed: int):
    if name == "listops":
        return ListOps(min_length=listops_min, max_length=listops_max, seed=seed)
    if name == "pathfinder":
        return Pathfinder(side=side, distractors=distractors, seed=seed)
    raise SeqzooError(f"unknown LRA task {name!r}; valid: {', '.join(TASKS)}")


def best_by_validation(runs: list[dict]) -> dict:
    """The run with the highest validation accuracy (ties: the smaller learning rate)."""
    return max(runs, key=lambda r: (r["val"], -r["lr"]))


@register_repro("lra", title="Long Range Arena: A Benchmark for Efficient Transformers", arxiv="2011.04006",
                claim="On LRA's generated tasks (ListOps, Pathfinder) the S4 family beats vanilla attention by a "
                      "wide margin (LRA/S4 tables: ListOps 59.5 vs 36.37, Pathfinder 94.0 vs 71.40).")
def run(quick: bool, *, device="cpu", precision="fp32", threads=1, mixers=None, tasks=None, steps=None,
        budget_seconds=None, batch_size=None, lrs=None, d_model=None, n_layers=None, listops_min=None,
        listops_max=None, pathfinder_side=None, pathfinder_distractors=None, train_batches=None,
        eval_batches=None, workers=1, seed=0) -> ReproResult:
    if device not in ("cpu", "cuda"):
        raise SeqzooError(f"lra: device {device!r} is not valid; valid: cpu, cuda")
    if precision not in ("fp32", "bf16"):
        raise SeqzooError(f"lra: precision {precision!r} is not valid; valid: fp32, bf16")
    if quick:
        defaults = dict(mixers=["attention", "s4d"], steps=3, batch_size=4, lrs=[3e-3], d_model=16, n_layers=1,
                        listops_min=8, listops_max=24, side=12, distractors=0, eval_batches=2)
    elif device == "cpu":
        defaults = dict(mixers=list(CPU_MIXERS), steps=120, batch_size=32, lrs=[1e-3, 3e-3], d_model=64,
                        n_layers=2, listops_min=32, listops_max=128, side=16, distractors=1, eval_batches=8)
    else:                                       # the LRA lengths; steps come from budget_seconds when it is set
        defaults = dict(mixers=list(ALL_MIXERS), steps=5000, batch_size=32, lrs=[1e-3, 3e-3], d_model=128,
                        n_layers=4, listops_min=500, listops_max=2000, side=32, distractors=2, eval_batches=16)
    names = as_list(mixers) if mixers is not None else defaults["mixers"]
    for name in names:
        mixer_entry(name)                       # unknown names fail before any work
    task_names = as_list(tasks) if tasks is not None else list(TASKS)
    for name in task_names:
        if name not in TASKS:
            raise SeqzooError(f"unknown LRA task {name!r}; valid: {', '.join(TASKS)}")
    max_steps = as_number("steps", steps) if steps is not None else defaults["steps"]
    batch = as_number("batch_size", batch_size) if batch_size is not None else defaults["batch_size"]
    lr_grid = as_list(lrs, float) if lrs is not None else defaults["lrs"]
    width = as_number("d_model", d_model) if d_model is not None else defaults["d_model"]
    depth = as_number("n_layers", n_layers) if n_layers is not None else defaults["n_layers"]
    lo = as_number("listops_min", listops_min) if listops_min is not None else defaults["listops_min"]
    hi = as_number("listops_max", listops_max) if listops_max is not None else defaults["listops_max"]
    side = as_number("pathfinder_side", pathfinder_side, low=12) if pathfinder_side is not None else defaults["side"]
    distractors = (as_number("pathfinder_distractors", pathfinder_distractors, low=0)
                   if pathfinder_distractors is not None else defaults["distractors"])
    n_eval = as_number("eval_batches", eval_batches) if eval_batches is not None else defaults["eval_batches"]
    budget = as_number("budget_seconds", budget_seconds, float, low=1) if budget_seconds is not None else None
    n_workers, seed, threads = as_number("workers", workers), as_number("seed", seed, low=0), \
        as_number("threads", threads)
    cap_train = as_number("train_batches", train_batches) if train_batches is not None else \
        (None if device == "cpu" or quick else 1000)

    result = ReproResult("lra")
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    start = time.perf_counter()
    try:
        for task_name in task_names:
            task_start = time.perf_counter()
            source = build_task(task_name, listops_min=lo, listops_max=hi, side=side, distractors=distractors,
                                seed=seed)
            probe = FixedData(source, batch_size=batch, train_batches=1, eval_batches=1)
            batch_gen_seconds = (time.perf_counter() - task_start) / 3
            task_steps, per_step = max_steps, {}
            if budget is not None:
                for name in names:
                    per_step[name] = step_seconds(model_config(name, source.vocab_size, width, depth), probe,
                                                  batch_size=batch, device=device, precision=precision)
                planned_batches = (cap_train or max_steps) + 2 * n_eval
                generation = batch_gen_seconds * planned_batches / n_workers
                remaining = budget / len(task_names) - (time.perf_counter() - task_start) - generation
                task_steps = common_steps(per_step, runs_per_mixer=len(lr_grid), budget=0.8 * remaining,
                                          cap=max_steps, eval_cost_steps=2 * n_eval / 3)
                print(f"[lra] {task_name}: step seconds " + ", ".join(f"{k} {v:.3f}" for k, v in per_step.items())
                      + f" -> {task_steps} steps per run", file=sys.stderr, flush=True)
            n_train = min(task_steps, cap_train) if cap_train is not None else task_steps
            data = FixedData(source, batch_size=batch, train_batches=n_train, eval_batches=n_eval,
                             workers=n_workers)
            rows = {}
            for name in names:
                cfg = model_config(name, source.vocab_size, width, depth)
                runs = []
                for lr in lr_grid:
                    row = train_and_score(cfg, data, steps=task_steps, batch_size=batch, lr=lr, device=device,
                                          precision=precision, eval_batches=n_eval, seed=seed)
                    runs.append(row)
                    print(f"[lra] {task_name} {name} lr={lr:g}: val {row['val']:.3f} test {row['test']:.3f} "
                          f"({row['train_seconds']:.0f} s)", file=sys.stderr, flush=True)
                rows[name] = {"best": best_by_validation(runs), "runs": runs}
            result.details[task_name] = {
                "seq_len": source.seq_len, "steps": task_steps, "train_batches": n_train,
                "train_examples": n_train * batch, "eval_examples": n_eval * batch,
                "majority_rate": data.majority_rate("test"), "step_seconds": per_step,
                "batch_generation_seconds": batch_gen_seconds,
                "mixers": rows, "seconds": time.perf_counter() - task_start}
    finally:
        torch.set_num_threads(old_threads)
    wall = time.perf_counter() - start

    hardware = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {threads} thread(s)"
    lra_protocol = lo == 500 and hi == 2000 and side == 32
    result.details["setup"] = {
        "device": device, "hardware": hardware, "precision": precision, "mixers": names, "tasks": task_names,
        "batch_size": batch, "lrs": lr_grid, "d_model": width, "n_layers": depth, "listops_length": [lo, hi],
        "pathfinder_side": side, "pathfinder_distractors": distractors, "eval_batches": n_eval,
        "budget_seconds": budget, "max_steps": max_steps, "weight_decay": WEIGHT_DECAY, "seed": seed,
        "readout": "causal, class at a final query token", "torch": torch.__version__, "wall_seconds": wall}
    for task_name in task_names:
        info = result.details[task_name]
        table = [f"{task_name} (length {info['seq_len']}, {info['steps']} steps × {batch}, "
                 f"{info['train_examples']} training examples, test majority class {info['majority_rate']:.3f}):"]
        for name, entry in info["mixers"].items():
            best = entry["best"]
            table.append(f"  {name:18s} test {best['test']:.3f} (val {best['val']:.3f}, lr {best['lr']:g}, "
                         f"{best['parameters']} params, state {best['state_size']})"
                         + (" DIVERGED" if "diverged" in best else ""))
        result.notes.append("\n".join(table))
        family = [n for n in S4_FAMILY if n in info["mixers"]]
        if "attention" in info["mixers"] and family:
            top = max(family, key=lambda n: info["mixers"][n]["best"]["test"])
            s4_acc, att = info["mixers"][top]["best"]["test"], info["mixers"]["attention"]["best"]["test"]
            published = PUBLISHED[task_name]
            result.check(f"{task_name}: best S4-family test accuracy ≥ attention + {MARGIN:.2f}",
                         f"{top} {s4_acc:.3f} vs attention {att:.3f}",
                         f"S4 family ≫ attention (published: S4 {published['s4 (state-spaces/s4)']} % vs "
                         f"Transformer {published['transformer (LRA)']} %)", s4_acc >= att + MARGIN)
        else:
            result.notes.append(f"{task_name}: attention and an S4-family mixer are both needed for the check")
    if not lra_protocol:
        result.notes.append(f"deviation from the LRA protocol: ListOps length {lo}–{hi} (LRA 500–2000), "
                            f"Pathfinder {side}×{side} (LRA 32×32), a small causal model and a short budget")
    result.notes.append(f"wall time {wall:.0f} s on {hardware}")
    if quick:
        result.notes.append("quick mode: a smoke run, its checks are not meant to hold")
    return result


__all__ = ["ALL_MIXERS", "FixedData", "PUBLISHED", "best_by_validation", "common_steps", "run", "step_seconds",
           "train_and_score"]
