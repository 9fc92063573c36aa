"""Reproduction of SSA: "The Information Pathways Hypothesis: Transformers are Dynamic Self-Ensembles" (Hussain,
Zaki and Subramanian, KDD 2023, arXiv 2306.01705).

Claim checked at small scale: training a causal LM with stochastically sub-sampled attention (``ssa_attention``:
every sample and head attends within one of 4 random groups of positions, locally biased) uses less attention
memory and less time per step than dense attention, and after a short dense fine-tune (the paper's pathway
consolidation) reaches about the same validation loss with dense attention at inference.

Setup: byte-level LMs on the built-in corpus (``ByteCorpus.from_source("kjv", 512)``), 2 layers, d = 64, 4 heads,
long windows (T = 512) so that attention dominates the cost. Both models get the same number of optimiser steps:

* dense: the ``"attention"`` mixer for all steps;
* SSA: ``ssa_attention`` (fraction 0.25) for 90 % of the steps, then dense attention for the last 10 % (a fresh
  AdamW warm-up/cosine at the lr where the first phase ended, on the following batches).

Measured:

* **memory**: bytes of activations saved for the backward pass in one training step (autograd's saved tensors,
  parameters excluded, each storage counted once), and the attention score entries per query;
* **time**: median process CPU time of a training step (forward, backward, AdamW) with one thread, which is what
  the step costs whatever else runs on the machine; wall times are reported beside it;
* **quality**: validation loss (nats/byte) with dense attention at inference, for SSA before and after the dense
  fine-tune, and of the paper's self-ensemble (mean predicted distribution of 4 sub-sampled passes) before it.

Dense attention is measured in both of its forms: ``math`` (the score matrix is materialised, as in the paper's
dense baseline) and ``sdpa`` (PyTorch's fused kernel, which never materialises it); the checks compare with
``math`` and the notes say how SSA fares against ``sdpa``.
"""

from __future__ import annotations

import math
import resource
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from ..mixers.attention.ssa import dense_attention, self_ensemble_log_probs
from ..models import CausalLM, ModelConfig
from ..tasks.text import ByteCorpus
from ..train import Trainer
from ..train.config import TrainConfig
from .base import ReproResult, register_repro


class _Shifted:
    """A batch source whose training batches start at ``offset`` (validation unchanged)."""

    def __init__(self, data, offset: int):
        self.data, self.offset, self.seq_len = data, offset, data.seq_len

    def get_batch(self, split: str, index: int, batch_size: int):
        return self.data.get_batch(split, index + (self.offset if split == "train" else 0), batch_size)


def _fit(model: CausalLM, data, *, steps: int, batch_size: int, lr: float, warmup: int, seed: int) -> None:
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, warmup_steps=warmup, eval_every=steps,
                      eval_batches=1, checkpoint_every=10**9, keep_checkpoints=1, progress=False,
                      log_every=max(1, steps // 10), device="cpu")
    with tempfile.TemporaryDirectory(prefix="seqzoo-repro-ssa-") as out_dir:
        Trainer(model, data, cfg, out_dir).fit()


@torch.no_grad()
def _val_loss(model: CausalLM, data, batches: int, batch_size: int, ensemble: int = 0) -> float:
    """Mean next-byte cross-entropy on fixed validation batches (dense attention; or a sub-sampled ensemble)."""
    model.eval()
    total = 0.0
    for i in range(batches):
        batch = data.get_batch("val", i, batch_size)
        if ensemble:
            log_probs = self_ensemble_log_probs(model, batch["inputs"], ensemble)
        else:
            log_probs = torch.log_softmax(model(batch["inputs"])[0].float(), dim=-1)
        total += float(F.nll_loss(log_probs.flatten(0, 1), batch["targets"].flatten()))
    return total / batches


def saved_activation_bytes(model: CausalLM, batch: dict) -> int:
    """Bytes autograd keeps for the backward pass of ``model.loss(batch)`` (parameters excluded, each storage once)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model.loss(batch)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(storages.values())


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def step_costs(models: dict[str, CausalLM], batch: dict, steps: int) -> dict[str, dict[str, float]]:
    """Median CPU and wall seconds of a training step (one thread) for each model, interleaving the models step
    by step so that a change of machine load affects all of them alike."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    optims = {name: torch.optim.AdamW(m.parameters(), lr=1e-4) for name, m in models.items()}
    cpu: dict[str, list[float]] = {name: [] for name in models}
    wall: dict[str, list[float]] = {name: [] for name in models}
    try:
        for i in range(steps + 1):
            for name, model in models.items():
                model.train()
                c0, w0 = _cpu_seconds(), time.perf_counter()
                model.loss(batch).backward()
                optims[name].step()
                optims[name].zero_grad(set_to_none=True)
                if i:  # the first step warms up allocator and caches
                    cpu[name].append(_cpu_seconds() - c0)
                    wall[name].append(time.perf_counter() - w0)
    finally:
        torch.set_num_threads(threads)
    return {name: {"cpu_s": statistics.median(cpu[name]), "wall_s": statistics.median(wall[name])}
            for name in models}


@register_repro("ssa", title="The Information Pathways Hypothesis: Transformers are Dynamic Self-Ensembles",
                arxiv="2306.01705",
                claim="stochastically sub-sampled attention cuts training memory and time per step at roughly "
                      "equal quality (dense attention at inference)")
def run(quick: bool = False) -> ReproResult:
    seq_len, d_model, layers, batch_size = (64, 32, 1, 4) if quick else (512, 64, 2, 8)
    steps, timing_steps, eval_batches, ensemble = (4, 2, 1, 2) if quick else (600, 6, 16, 4)
    lr, fraction, seed = 2e-3, 0.25, 0
    finetune = max(1, steps // 10)
    data = ByteCorpus.from_source("kjv", seq_len)
    base = dict(vocab_size=256, d_model=d_model, n_layers=layers)

    def build(mixer: str, **opts) -> CausalLM:
        torch.manual_seed(seed)
        return CausalLM(ModelConfig(**base, mixer=mixer, mixer_options={mixer: opts} if opts else {}))

    result = ReproResult("ssa")
    # -- cost of one training step --------------------------------------------------------------------------------
    probe = {"dense (math)": build("attention", impl="math"), "dense (sdpa)": build("attention", impl="sdpa"),
             "ssa": build("ssa_attention", fraction=fraction)}
    batch = data.get_batch("train", 10**6, batch_size)
    memory = {name: saved_activation_bytes(m, batch) / 2**20 for name, m in probe.items()}
    costs = step_costs(probe, batch, timing_steps)
    ssa_layer = probe["ssa"].blocks[0].mixer
    gathered = ssa_layer.last_gather["keys_per_query"]
    del probe

    # -- training: same number of steps --------------------------------------------------------------------------
    t0 = time.perf_counter()
    dense = build("attention")
    _fit(dense, data, steps=steps, batch_size=batch_size, lr=lr, warmup=max(1, steps // 10), seed=seed)
    ssa = build("ssa_attention", fraction=fraction)
    first = steps - finetune
    _fit(ssa, data, steps=first, batch_size=batch_size, lr=lr, warmup=max(1, first // 10), seed=seed)
    loss_ssa_raw = _val_loss(ssa, data, eval_batches, batch_size)
    loss_ensemble = _val_loss(ssa, data, eval_batches, batch_size, ensemble=ensemble)
    with dense_attention(ssa):  # the paper's short dense fine-tune
        _fit(ssa, _Shifted(data, first), steps=finetune, batch_size=batch_size, lr=lr * 0.1,
             warmup=max(1, finetune // 10), seed=seed + 1)
    loss_dense = _val_loss(dense, data, eval_batches, batch_size)
    loss_ssa = _val_loss(ssa, data, eval_batches, batch_size)
    train_wall = time.perf_counter() - t0

    dm, dc = memory["dense (math)"], costs["dense (math)"]["cpu_s"]
    result.check("saved activation memory per step, SSA vs dense (math)", f"{memory['ssa']:.1f} MiB vs {dm:.1f} MiB "
                 f"({memory['ssa'] / dm:.2f}x)", "lower (paper: 4-8x less attention memory)", memory["ssa"] < dm)
    result.check("attention scores per query, SSA vs dense", f"{gathered} vs {seq_len}",
                 f"{fraction:g} of the keys", gathered < seq_len)
    result.check("CPU time per training step, SSA vs dense (math)",
                 f"{costs['ssa']['cpu_s']:.3f} s vs {dc:.3f} s ({costs['ssa']['cpu_s'] / dc:.2f}x)",
                 "lower", costs["ssa"]["cpu_s"] < dc)
    result.check("validation loss (dense inference), SSA + dense fine-tune vs dense",
                 f"{loss_ssa:.4f} vs {loss_dense:.4f} nats/byte", "roughly equal (within 0.05)",
                 loss_ssa <= loss_dense + 0.05)
    sdpa = costs["dense (sdpa)"]
    result.notes.append(f"fused SDPA dense attention (never materialises scores): {memory['dense (sdpa)']:.1f} MiB "
                        f"saved, {sdpa['cpu_s']:.3f} CPU s/step; SSA is {costs['ssa']['cpu_s'] / sdpa['cpu_s']:.2f}x "
                        f"its time and {memory['ssa'] / memory['dense (sdpa)']:.2f}x its memory")
    result.notes.append(f"SSA before the dense fine-tune: val loss {loss_ssa_raw:.4f} (dense inference), "
                        f"{loss_ensemble:.4f} ({ensemble}-pass sub-sampled self-ensemble)")
    result.notes.append(f"median wall s/step (1 thread): " + ", ".join(f"{k} {v['wall_s']:.3f}" for k, v in
                                                                       costs.items()))
    result.details = {"memory_mib": memory, "step_costs": costs, "gathered_keys": gathered, "seq_len": seq_len,
                      "val_loss": {"dense": loss_dense, "ssa_finetuned": loss_ssa, "ssa_before_finetune":
                                   loss_ssa_raw, f"ssa_ensemble_{ensemble}": loss_ensemble},
                      "steps": steps, "finetune_steps": finetune, "train_wall_s": train_wall,
                      "bits_per_byte": {"dense": loss_dense / math.log(2), "ssa_finetuned": loss_ssa / math.log(2)}}
    return result
