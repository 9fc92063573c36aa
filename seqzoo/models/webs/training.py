"""Training, generation, evaluation and checkpoints for the three spider-web generators.

Paper: "Modeling and design of heterogeneous hierarchical bioinspired spider web structures using generative deep
learning and additive manufacturing", Lu, Lee and Buehler, PNAS 2023, arXiv 2304.05137.

Generators (``GENERATORS``), each = tokenizer variant + model:

* ``transformer``       — Model 3, :class:`GraphWebTransformer` on full tokens (xyz + adjacency row), with the
  Gaussian coordinate head (sampled coordinates; see the model's docstring for why);
* ``transformer-mse``   — the same with the paper's plain MSE head (deterministic generation);
* ``diffusion-sparse``  — Model 1, :class:`GraphDiffusion` on sparse tokens (xyz + 5 neighbour indices);
* ``diffusion-full``    — Model 2, :class:`GraphDiffusion` on full tokens;
* ``transformer-cat``   — Model 3 with the MSE flag/coordinate head and a categorical neighbour head (a parent
  edge per node, softmax over earlier nodes, plus Bernoulli extra edges; :class:`GraphWebCatTransformer`).

Training: AdamW (β = 0.9, 0.99, weight decay 0.01), linear warm-up then cosine decay to 10 %, gradient clipping at
1, minibatches drawn with a seeded generator. The conditions are the 14 features of each training web (exactly
what it realises), standardised with the training set's mean/std. Design control is measured by generating for
held-out targets, decoding, recomputing the 14 features and taking R² per feature
(:func:`~seqzoo.tasks.webs.features.r2_per_feature`), with the condition and with it dropped.
Checkpoints are :mod:`seqzoo.train.checkpoint` directories (safetensors + JSON, written atomically) whose config
holds the generator name, model options, tokenizer settings and feature scaler.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...core.errors import SeqzooError, choice_error
from ...tasks.webs.features import FEATURE_NAMES, N_FEATURES, FeatureScaler, check_conditions, feature_matrix, \
    r2_per_feature
from ...tasks.webs.graph import WebGraph
from ...tasks.webs.tokenizer import WebTokenizer
from .categorical import GraphWebCatTransformer
from .diffusion import GraphDiffusion
from .graph_transformer import GraphWebTransformer

# name -> (tokenizer variant, fixed model options)
GENERATORS = {"transformer": ("full", {"head": "gaussian"}), "transformer-mse": ("full", {"head": "mse"}),
              "diffusion-sparse": ("sparse", {}), "diffusion-full": ("full", {}),
              "transformer-cat": ("full", {"head": "categorical"})}
DEFAULTS = {name: {"lr": 1e-3} for name in GENERATORS}


@dataclass
class WebGenerator:
    name: str
    model: torch.nn.Module
    tokenizer: WebTokenizer
    scaler: FeatureScaler

    def config(self) -> dict:
        return {"kind": "web-generator", "generator": self.name, "model": self.model.options,
                "tokenizer": self.tokenizer.config(), "scaler": self.scaler.state()}

    def conditions(self, targets) -> torch.Tensor:
        p = next(self.model.parameters())
        return torch.as_tensor(self.scaler.transform(targets), dtype=p.dtype, device=p.device)

    @torch.no_grad()
    def generate_tokens(self, targets, *, cond_scale: float = 1.0, drop_condition: bool = False, seed: int = 0,
                        steps: int = 50, batch_size: int = 256) -> np.ndarray:
        cond = self.conditions(check_conditions(targets, "design targets"))
        self.model.eval()
        gen = torch.Generator(device=cond.device).manual_seed(seed)
        out = []
        for start in range(0, cond.shape[0], batch_size):
            c = cond[start:start + batch_size]
            if isinstance(self.model, GraphDiffusion):
                out.append(self.model.generate(c, steps=steps, cond_scale=cond_scale, drop_condition=drop_condition,
                                               generator=gen))
            else:
                out.append(self.model.generate(c, cond_scale=cond_scale, drop_condition=drop_condition,
                                               generator=gen))
        return torch.cat(out).double().cpu().numpy() if out else np.zeros((0, self.tokenizer.max_nodes,
                                                                          self.tokenizer.token_dim))

    def generate(self, targets, **kwargs) -> list[WebGraph]:
        """Webs for ``targets [B, 14]`` (raw feature units)."""
        return self.tokenizer.decode_batch(self.generate_tokens(targets, **kwargs))


def build_generator(name: str, scaler: FeatureScaler, *, max_nodes: int = 32, coord_scale: float = 2.5,
                    order: str = "bfs", **model_options) -> WebGenerator:
    if name not in GENERATORS:
        raise choice_error("web generator", name, GENERATORS)
    variant, fixed = GENERATORS[name]
    tokenizer = WebTokenizer(max_nodes, variant, coord_scale=coord_scale, order=order)
    cls = GraphWebTransformer if name.startswith("transformer") else GraphDiffusion
    if name == "transformer-cat":
        cls = GraphWebCatTransformer
        model_options.setdefault("max_degree", tokenizer.max_degree)
    try:
        model = cls(tokenizer.token_dim, max_nodes, N_FEATURES, **{**fixed, **model_options})
    except TypeError as e:
        raise SeqzooError(f"bad model option for {name}: {e}") from None
    return WebGenerator(name, model, tokenizer, scaler)


def training_tensors(gen: WebGenerator, graphs) -> tuple[torch.Tensor, torch.Tensor]:
    p = next(gen.model.parameters())
    tokens = torch.as_tensor(gen.tokenizer.encode_batch(graphs), dtype=p.dtype, device=p.device)
    return tokens, gen.conditions(feature_matrix(graphs))


def lr_at(step: int, total: int, warmup: int, min_ratio: float = 0.1) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train_generator(gen: WebGenerator, graphs, *, steps: int, batch_size: int = 64, lr: float | None = None,
                    seed: int = 0, warmup: int = 100, log=None, log_every: int = 200) -> dict:
    """Train ``gen.model`` on ``graphs`` for ``steps`` minibatch steps; returns the loss history."""
    if steps < 1 or batch_size < 1:
        raise SeqzooError(f"steps and batch_size must be positive, got {steps} and {batch_size}")
    if len(graphs) == 0:
        raise SeqzooError("training needs at least one web")
    lr = DEFAULTS[gen.name]["lr"] if lr is None else lr
    torch.manual_seed(seed)
    tokens, cond = training_tensors(gen, graphs)
    model = gen.model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
    gen_rng = torch.Generator(device=tokens.device).manual_seed(seed)
    history, start, running = [], time.perf_counter(), []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * lr_at(step, steps, min(warmup, steps))
        idx = torch.randint(0, tokens.shape[0], (batch_size,), generator=gen_rng, device=tokens.device)
        loss = model.loss(tokens[idx], cond[idx], generator=gen_rng)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running.append(float(loss.detach()))
        if (step + 1) % log_every == 0 or step + 1 == steps:
            history.append({"step": step + 1, "loss": float(np.mean(running)), "seconds": time.perf_counter() - start})
            running = []
            if log:
                log(f"{gen.name} step {step + 1}/{steps} loss {history[-1]['loss']:.4f} "
                    f"({history[-1]['seconds']:.0f}s)")
    model.eval()
    return {"history": history, "train_seconds": time.perf_counter() - start, "steps": steps, "lr": lr,
            "batch_size": batch_size, "n_train": len(graphs)}


def evaluate_control(gen: WebGenerator, targets: np.ndarray, *, seed: int = 0, steps: int = 50,
                     cond_scale: float = 1.0) -> dict:
    """R² per feature of generated webs against ``targets``, with the condition and with it dropped."""
    result = {}
    for label, drop in (("conditional", False), ("unconditional", True)):
        graphs = gen.generate(targets, cond_scale=cond_scale, drop_condition=drop, seed=seed, steps=steps)
        realised = feature_matrix(graphs)
        r2 = r2_per_feature(targets, realised)
        result[label] = {"r2": dict(zip(FEATURE_NAMES, [None if np.isnan(v) else float(v) for v in r2])),
                         "realised": realised, "graphs": graphs,
                         "empty_fraction": float(np.mean([g.n_nodes == 0 for g in graphs]))}
    return result


def save_generator(gen: WebGenerator, path, *, metrics: dict | None = None, step: int = 0) -> Path:
    from ...train.checkpoint import save_checkpoint

    return save_checkpoint(Path(path), model=gen.model, step=step, config=gen.config(), metrics=metrics or {},
                           update_latest=False)


def load_generator(path) -> WebGenerator:
    from ...train.checkpoint import checkpoint_info, load_model_state

    p = Path(path)
    ckpt = p / "checkpoint" if (p / "checkpoint").is_dir() else p
    if not ckpt.exists():
        raise SeqzooError(f"no web generator at {str(p)!r}; train one with seqzoo webs train --out DIR")
    info = checkpoint_info(ckpt)
    cfg = info["config"] or {}
    if cfg.get("kind") != "web-generator":
        raise SeqzooError(f"{str(p)!r} is not a web generator checkpoint (train one with seqzoo webs train)")
    tok = cfg["tokenizer"]
    gen = build_generator(cfg["generator"], FeatureScaler(cfg["scaler"]["mean"], cfg["scaler"]["std"]),
                          max_nodes=tok["max_nodes"], coord_scale=tok["coord_scale"], order=tok["order"],
                          **cfg["model"])
    load_model_state(ckpt, gen.model)
    gen.model.eval()
    return gen


__all__ = ["DEFAULTS", "GENERATORS", "WebGenerator", "build_generator", "evaluate_control", "load_generator",
           "save_generator", "train_generator", "training_tensors"]
