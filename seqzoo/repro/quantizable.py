"""Reproduction of "Quantizable Transformers: Removing Outliers by Helping Attention Heads Do Nothing" (Bondarenko,
Nagel and Blankevoort, NeurIPS 2023, arXiv 2306.12929).

Claim checked at small scale: a language model pre-trained with the clipped softmax or with gated attention learns
smaller activation outliers (lower ∞-norm and kurtosis) than with the vanilla softmax, and so loses less when it
is quantised to W8A8, at equal floating-point quality.

Why outliers appear (paper §3): a head that wants to leave a token's residual unchanged puts its probability on
low-information tokens whose values are near zero; softmax never reaches exact zeros, so training keeps pushing
the logits apart, which the LayerNorm and FFN produce as a few huge hidden dimensions, growing with training.

Setup (fixed a priori, see ``docs/repro/quantizable.md``): byte-level causal LMs on the built-in KJV corpus with
the paper's OPT-style block -- pre-LayerNorm (with bias, weight decay on the LayerNorm gain as in the paper's
``--wd_LN_gamma`` scripts), MLP FFN, attention projections with biases -- trained with the same data, seed, steps
and optimiser (AdamW, weight decay 0.1, clipping 1.0). They differ only in the attention:

* vanilla: the ``"attention"`` mixer;
* clipped softmax: ``quantizable_attention`` with ``softmax="clipped"``, ``gate=False``, γ = −0.025, ζ = 1 (the
  paper's setting for T = 128; its OPT setting α = 12 at T = 512 gives about the same γ ≈ −0.023);
* gated attention: ``quantizable_attention`` with ``softmax="vanilla"``, ``gate=True``, gate init 0.25 (the
  paper's OPT setting, a conditional per-token linear gate per head).

Evaluation on fixed validation batches (the paper's Table 2 metrics): the FP32 loss; :class:`OutlierProbe` (mean
per-sequence ∞-norm, its maximum over the probed points, and the kurtosis averaged over the points); and the loss
under W8A8 post-training quantisation with :class:`ActivationQuantizer` (weights: symmetric per-tensor 8 bit;
activations: asymmetric per-tensor 8 bit, running min-max with momentum 0.9 over 16 training batches, at the input
and output of every linear layer and on the residual stream). The vanilla run is also probed at quarter points of
its training, to show whether its outliers grow with training length.

Thresholds, fixed before running: "clearly lower" outliers means at most 0.75× the vanilla model's max ∞-norm and
average kurtosis; the W8A8 loss increase must be smaller than vanilla's; the FP32 loss within 0.05 nats of it.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..core.mixer import set_optim
from ..models import CausalLM, ModelConfig
from ..models.quantization import ActivationQuantizer, OutlierProbe
from ..tasks.text import ByteCorpus
from ..train import Trainer
from ..train.checkpoint import checkpoint_dir, load_model_state
from ..train.config import TrainConfig
from .base import ReproResult, register_repro


@dataclass(frozen=True)
class Settings:
    """Everything that defines a run (the repro's defaults are fixed in :data:`FULL`)."""

    seq_len: int = 128
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    batch_size: int = 8
    steps: int = 1000
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.1
    gamma: float = -0.025
    gate_init: float = 0.25
    probes: int = 4  # the vanilla run is probed at steps/probes, 2·steps/probes, ...
    eval_batches: int = 8
    calib_batches: int = 16
    seed: int = 0
    device: str = "cpu"
    corpus: str = "kjv"  # a built-in corpus name or a path to UTF-8 text (ByteCorpus.from_source)
    bos: bool = True  # every sequence starts with a fixed begin-of-sequence token (as OPT's </s>, BERT's [CLS])


FULL = Settings()
QUICK = Settings(seq_len=32, d_model=32, n_layers=2, batch_size=4, steps=4, warmup_steps=1, probes=2,
                 eval_batches=1, calib_batches=2)
VARIANTS = ("vanilla", "clipped", "gated")


BOS = 0  # the NUL byte, which never occurs in the text, is the begin-of-sequence token


class WithBOS:
    """Byte windows with a fixed begin-of-sequence token in front: inputs ``[BOS, x_0 … x_{T−2}]``, targets
    ``[x_0 … x_{T−1}]`` (the byte windows of ``corpus`` are one byte shorter than ``seq_len``)."""

    def __init__(self, corpus: ByteCorpus):
        self.corpus = corpus
        self.seq_len = corpus.seq_len + 1

    def get_batch(self, split: str, index: int, batch_size: int) -> dict[str, torch.Tensor]:
        batch = self.corpus.get_batch(split, index, batch_size)
        bos = torch.full((batch_size, 1), BOS, dtype=batch["inputs"].dtype)
        return {"inputs": torch.cat([bos, batch["inputs"]], dim=1),
                "targets": torch.cat([batch["inputs"][:, :1], batch["targets"]], dim=1)}


def load_data(s: Settings):
    """The byte corpus of ``s``, with a BOS token in front of every window when ``s.bos``."""
    if s.bos:
        return WithBOS(ByteCorpus.from_source(s.corpus, s.seq_len - 1))
    return ByteCorpus.from_source(s.corpus, s.seq_len)


def variant_mixer(name: str, s: Settings) -> tuple[str, dict]:
    """Mixer name and options of one variant (every variant has attention biases, as OPT and BERT do)."""
    if name == "vanilla":
        return "attention", {"bias": True, "n_heads": s.n_heads}
    if name == "clipped":
        return "quantizable_attention", {"bias": True, "n_heads": s.n_heads, "softmax": "clipped", "gate": False,
                                         "gamma": s.gamma, "zeta": 1.0, "max_seq_len": s.seq_len}
    if name == "gated":
        return "quantizable_attention", {"bias": True, "n_heads": s.n_heads, "softmax": "vanilla", "gate": True,
                                         "gate_init": s.gate_init, "max_seq_len": s.seq_len}
    raise ValueError(f"unknown variant {name!r}; valid: {', '.join(VARIANTS)}")


def build_model(name: str, s: Settings) -> CausalLM:
    """A byte-level :class:`CausalLM` with the paper's OPT-style block: every RMSNorm becomes a LayerNorm (gain
    and bias) whose gain is weight-decayed like the other weights, and the FFN is the MLP (GELU) with biases."""
    mixer, opts = variant_mixer(name, s)
    torch.manual_seed(s.seed)
    model = CausalLM(ModelConfig(vocab_size=256, d_model=s.d_model, n_layers=s.n_layers, mixer=mixer,
                                 mixer_options={mixer: opts}, ffn="mlp"))
    parents = [model, *model.blocks]
    for parent in parents:
        for attr, child in list(parent.named_children()):
            if isinstance(child, nn.RMSNorm):
                ln = nn.LayerNorm(s.d_model, eps=model.cfg.norm_eps)
                set_optim(ln.weight, weight_decay=s.weight_decay)
                setattr(parent, attr, ln)
    return model


def train(model: CausalLM, data, s: Settings, on_checkpoint=None) -> float:
    """Train with the seqzoo trainer (warm-up + cosine); ``on_checkpoint(step, model)`` is called for each of the
    ``s.probes`` evenly spaced checkpoints (the last is the final model). Returns the training seconds."""
    every = s.steps // s.probes if on_checkpoint is not None else s.steps
    cfg = TrainConfig(steps=s.steps, batch_size=s.batch_size, lr=s.lr, seed=s.seed, weight_decay=s.weight_decay,
                      warmup_steps=s.warmup_steps, eval_every=0, eval_batches=1, checkpoint_every=every,
                      keep_checkpoints=s.probes + 1, progress=False, log_every=max(1, s.steps // 10),
                      device=s.device, precision="fp32")
    with tempfile.TemporaryDirectory(prefix="seqzoo-quantizable-") as out_dir:
        start = time.perf_counter()
        Trainer(model, data, cfg, out_dir).fit()
        seconds = time.perf_counter() - start
        if on_checkpoint is not None:
            final = {k: v.detach().clone() for k, v in model.state_dict().items()}
            for step in range(every, s.steps + 1, every):
                load_model_state(checkpoint_dir(out_dir, step), model)
                on_checkpoint(step, model)
            model.load_state_dict(final)
    return seconds


@torch.no_grad()
def _loss(model: CausalLM, batches: list[dict]) -> float:
    model.eval()
    device = next(model.parameters()).device
    total = 0.0
    for batch in batches:
        logits, _ = model(batch["inputs"].to(device))
        total += float(F.cross_entropy(logits.flatten(0, 1).float(), batch["targets"].to(device).flatten()))
    return total / len(batches)


@torch.no_grad()
def outliers(model: CausalLM, val: list[dict]) -> dict[str, float]:
    """The paper's Table 2 outlier metrics on the validation batches (see :class:`OutlierProbe`)."""
    model.eval()
    device = next(model.parameters()).device
    with OutlierProbe(model) as probe:
        for batch in val:
            model(batch["inputs"].to(device))
    return probe.summary()


@torch.no_grad()
def evaluate(model: CausalLM, val: list[dict], calibration: list[dict], bits: int = 8) -> dict[str, float]:
    """FP32 loss, outlier statistics and the loss under W``bits``A``bits`` post-training quantisation."""
    device = next(model.parameters()).device
    fp = _loss(model, val)
    stats = outliers(model, val)
    quant = ActivationQuantizer(model, bits, weight_bits=bits, linear_outputs=True, momentum=0.9)
    quant.calibrate(b["inputs"].to(device) for b in calibration)
    with quant.enabled():
        q = _loss(model, val)
    return {"fp_loss": fp, "w8a8_loss": q, "w8a8_gap": q - fp, **stats}


def compare(s: Settings, variants=VARIANTS, log=print) -> dict[str, dict]:
    """Train and evaluate each variant under settings ``s``; the vanilla run is also probed during training."""
    data = load_data(s)
    val = [data.get_batch("val", i, s.batch_size) for i in range(s.eval_batches)]
    calibration = [data.get_batch("train", 10**6 + i, s.batch_size) for i in range(s.calib_batches)]
    stats: dict[str, dict] = {}
    for name in variants:
        model = build_model(name, s)
        curve = []

        def probe(step, m, _curve=curve):
            _curve.append({"step": step, "fp_loss": _loss(m, val), **outliers(m, val)})
            log(f"  {name} step {step}: loss {_curve[-1]['fp_loss']:.4f}, max inf-norm "
                f"{_curve[-1]['max_inf_norm']:.2f}, kurtosis avg {_curve[-1]['avg_kurtosis']:.1f} "
                f"max {_curve[-1]['max_kurtosis']:.1f}")

        seconds = train(model, data, s, probe if name == "vanilla" else None)
        stats[name] = {**evaluate(model, val, calibration), "train_seconds": seconds, "curve": curve}
        r = stats[name]
        log(f"{name}: fp32 {r['fp_loss']:.4f}, w8a8 {r['w8a8_loss']:.4f} ({r['w8a8_gap']:+.4f}), max inf-norm "
            f"{r['max_inf_norm']:.2f}, kurtosis avg {r['avg_kurtosis']:.1f} max {r['max_kurtosis']:.1f}, "
            f"{seconds:.0f} s")
    return stats


@register_repro("quantizable", title="Quantizable Transformers: Removing Outliers by Helping Attention Heads Do "
                "Nothing", arxiv="2306.12929",
                claim="clipped softmax and gated attention give smaller activation outliers and a smaller loss "
                      "increase under W8A8 quantisation than vanilla softmax, at equal FP quality")
def run(quick: bool = False, device: str = "cpu", corpus: str = "kjv", steps: int | str | None = None,
        settings: Settings | None = None) -> ReproResult:
    """``device``/``corpus``/``steps`` (also as ``--set key=value``) override the fixed settings, e.g. to repeat
    the comparison longer on a GPU; the checked claim is the default CPU run."""
    s = settings or (QUICK if quick else FULL)
    s = replace(s, device=device, corpus=corpus)
    if steps not in (None, ""):
        s = replace(s, steps=int(steps), warmup_steps=max(1, int(steps) // 10))
    stats = compare(s, log=(lambda *a: None) if quick else print)

    result = ReproResult("quantizable")
    ref = stats["vanilla"]
    curve = ref["curve"]
    grew = len(curve) >= 2 and curve[-1]["max_inf_norm"] > curve[0]["max_inf_norm"] \
        and curve[-1]["avg_kurtosis"] > curve[0]["avg_kurtosis"]
    result.check("vanilla: outliers grow with training (max inf-norm and avg kurtosis, first vs last probe)",
                 " -> ".join(f"{p['max_inf_norm']:.1f}/{p['avg_kurtosis']:.1f}" for p in curve),
                 "both increase", grew)
    for name in ("clipped", "gated"):
        r = stats[name]
        result.check(f"{name}: max inf-norm vs vanilla", f"{r['max_inf_norm']:.2f} vs {ref['max_inf_norm']:.2f}",
                     "clearly lower (<= 0.75x vanilla)", r["max_inf_norm"] <= 0.75 * ref["max_inf_norm"])
        result.check(f"{name}: avg kurtosis vs vanilla", f"{r['avg_kurtosis']:.1f} vs {ref['avg_kurtosis']:.1f}",
                     "clearly lower (<= 0.75x vanilla)", r["avg_kurtosis"] <= 0.75 * ref["avg_kurtosis"])
        result.check(f"{name}: W8A8 loss increase vs vanilla", f"{r['w8a8_gap']:+.4f} vs {ref['w8a8_gap']:+.4f} "
                     f"nats/byte", "smaller than vanilla's", r["w8a8_gap"] < ref["w8a8_gap"])
        result.check(f"{name}: FP32 val loss vs vanilla", f"{r['fp_loss']:.4f} vs {ref['fp_loss']:.4f}",
                     "equal or better (within 0.05)", r["fp_loss"] <= ref["fp_loss"] + 0.05)
    for name, r in stats.items():
        result.notes.append(f"{name}: fp32 {r['fp_loss']:.4f}, w8a8 {r['w8a8_loss']:.4f}, max inf-norm "
                            f"{r['max_inf_norm']:.2f} (ffn {r['max_ffn_inf_norm']:.2f}, residual "
                            f"{r['max_residual_inf_norm']:.2f}), max |a| {r['max_abs']:.2f}, kurtosis avg "
                            f"{r['avg_kurtosis']:.1f} max {r['max_kurtosis']:.1f}, trained in "
                            f"{r['train_seconds']:.0f} s")
    result.details = {"stats": stats, "settings": s.__dict__}
    return result
