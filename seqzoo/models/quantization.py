"""Activation-outlier probes and INT8 fake quantisation for evaluating models.

Used to measure the claim of "Quantizable Transformers: Removing Outliers by Helping Attention Heads Do Nothing"
(Bondarenko, Nagel and Blankevoort, NeurIPS 2023, arXiv 2306.12929): transformers learn strong activation outliers
that break per-tensor INT8 quantisation. Nothing here changes a model's weights; everything works through forward
hooks that are removed again when the context ends.

**Outlier probe** (:class:`OutlierProbe`). At the points the paper's evaluation scripts probe -- every
residual-stream point (the output of each :class:`~seqzoo.models.Block`), every FFN output, every attention (mixer)
output, the outputs of the normalisation layers in front of the mixer and the FFN, and the final norm -- it
records, over the batches seen:

* the ∞-norm ``max |a|`` of each sequence's activations (``a`` flattened over time and channels), its mean over
  sequences and its maximum;
* the (Pearson, non-excess) kurtosis of each sequence's activations, averaged over sequences::

      kurt(a) = E[(a − μ)⁴] / σ⁴        (3 for a Gaussian; large when a few entries dominate)

  This is how the paper's evaluation scripts measure kurtosis and ∞-norms (per sequence, then averaged).

**Fake quantisation** (:class:`ActivationQuantizer`): per-tensor asymmetric uniform quantisation of activations
with a static range estimated on calibration batches -- the min and max over all of them, or (``momentum=m``, the
paper's setting m = 0.9 over 16 batches) a running min-max ``lo ← m·lo + (1 − m)·min(x)`` (same for ``hi``).
With ``b`` bits, range ``[lo, hi]`` widened to contain 0::

      s = (hi − lo) / (2^b − 1),   z = round(−lo / s),
      q(x) = clamp(round(x / s) + z, 0, 2^b − 1),   x̂ = (q(x) − z) · s

so 0 is exactly representable, values on the grid ``(i − z) · s`` are unchanged, and any ``x`` in ``[lo, hi]`` is
moved by at most ``s / 2``. Quantised points: the input of every ``nn.Linear`` (attention projections, FFN
layers, the output head unless skipped), optionally its output (``linear_outputs``; the paper quantises both), and
the residual stream (embedding output and every block output). Weights can be fake-quantised too
(``weight_bits``), per tensor and symmetric as in the paper: ``s = max|W| / (2^(b−1) − 1)``,
``Ŵ = clamp(round(W / s), −2^(b−1), 2^(b−1) − 1) · s``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from ..core.errors import SeqzooError
from .causal_lm import Block


# -- statistics -------------------------------------------------------------------------------------------------------
def kurtosis(x: Tensor, dim: int = -1) -> Tensor:
    """Pearson kurtosis ``E[(x − μ)⁴] / σ⁴`` along ``dim`` (population moments, float64); 3 for a Gaussian."""
    x = x.double()
    centred = x - x.mean(dim=dim, keepdim=True)
    var = centred.pow(2).mean(dim=dim)
    return centred.pow(4).mean(dim=dim) / var.pow(2).clamp_min(1e-300)


# -- quantisation -----------------------------------------------------------------------------------------------------
def _check_bits(bits) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
        raise SeqzooError(f"bits must be an int in [2, 16], got {bits!r}")
    return bits


def quant_params(lo: float, hi: float, bits: int = 8) -> tuple[float, int]:
    """Scale ``s`` and zero point ``z`` of asymmetric ``bits``-bit quantisation of ``[lo, hi]`` (widened to hold 0)."""
    levels = 2 ** _check_bits(bits) - 1
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi < lo:
        raise SeqzooError(f"quantisation range needs lo <= hi, got lo={lo}, hi={hi}")
    scale = (hi - lo) / levels
    if scale <= 0.0:  # an all-zero tensor: any positive scale represents it exactly
        return 1.0, 0
    zero = int(min(max(round(-lo / scale), 0), levels))
    return scale, zero


def fake_quantize_symmetric(w: Tensor, bits: int = 8) -> Tensor:
    """Symmetric per-tensor ``bits``-bit fake quantisation with ``s = max|w| / (2^(bits−1) − 1)`` (same dtype)."""
    top = 2 ** (_check_bits(bits) - 1) - 1
    scale = float(w.abs().max()) / top
    if scale <= 0.0:
        return w.clone()
    return (torch.clamp(torch.round(w / scale), -top - 1, top) * scale).to(w.dtype)


def fake_quantize(x: Tensor, lo: float, hi: float, bits: int = 8) -> Tensor:
    """Quantise ``x`` to ``bits``-bit integers on the asymmetric grid of ``[lo, hi]`` and map it back (same dtype)."""
    scale, zero = quant_params(lo, hi, bits)
    q = torch.clamp(torch.round(x / scale) + zero, 0, 2 ** bits - 1)
    return ((q - zero) * scale).to(x.dtype)


# -- hook helpers -----------------------------------------------------------------------------------------------------
def _first_tensor(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def _replace_first(out, new: Tensor):
    if isinstance(out, tuple):
        return (new,) + out[1:]
    if isinstance(out, list):
        return [new] + out[1:]
    return new


def residual_points(model: nn.Module) -> dict[str, nn.Module]:
    """Modules whose output is the residual stream: embeddings and every :class:`Block`."""
    points = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Embedding, Block)):
            points[name] = module
    return points


class OutlierProbe(contextlib.AbstractContextManager):
    """Record ∞-norms and kurtosis of the residual stream (block outputs), the FFN and mixer outputs and the
    normalisation-layer outputs of a model.

    ``with OutlierProbe(model) as probe: model(inputs)`` (any number of forward calls), then
    :meth:`summary`. Names are ``"<block>"`` for a block's output, ``"<block>.ffn"`` / ``"<block>.mixer"`` for
    its FFN / mixer output, ``"<block>.ffn_norm"`` / ``"<block>.mixer_norm"`` for its norms and ``"norm"`` for a
    final norm of the model.
    """

    def __init__(self, model: nn.Module):
        self.points: dict[str, nn.Module] = {}
        for name, module in model.named_modules():
            if isinstance(module, Block):
                self.points[name] = module
                for part in ("mixer_norm", "mixer", "ffn_norm", "ffn"):
                    if getattr(module, part, None) is not None:
                        self.points[f"{name}.{part}"] = getattr(module, part)
        if self.points and isinstance(getattr(model, "norm", None), nn.Module):
            self.points["norm"] = model.norm
        if not self.points:
            raise SeqzooError(f"{type(model).__name__} has no seqzoo Block to probe; give a CausalLM-like model")
        self.stats: dict[str, dict[str, float]] = {}
        self._handles: list = []

    def __enter__(self) -> "OutlierProbe":
        for name, module in self.points.items():
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def record(module, args, out):
            a = _first_tensor(out).detach()
            rows = a.reshape(a.shape[0], -1)
            inf = rows.abs().amax(dim=1).double()
            kurt = kurtosis(rows, dim=1)
            s = self.stats.setdefault(name, {"sequences": 0, "inf_sum": 0.0, "max_abs": 0.0, "kurt_sum": 0.0})
            s["sequences"] += rows.shape[0]
            s["inf_sum"] += float(inf.sum())
            s["max_abs"] = max(s["max_abs"], float(inf.max()))
            s["kurt_sum"] += float(kurt.sum())

        return record

    def per_layer(self) -> dict[str, dict[str, float]]:
        """``{name: {"inf_norm": mean ∞-norm, "max_abs": max |a|, "kurtosis": mean kurtosis}}``."""
        out = {}
        for name, s in self.stats.items():
            n = max(s["sequences"], 1)
            out[name] = {"inf_norm": s["inf_sum"] / n, "max_abs": s["max_abs"], "kurtosis": s["kurt_sum"] / n}
        return out

    def summary(self) -> dict[str, float]:
        """Aggregates over all probed points (the paper's Table 2 metrics): the largest mean ∞-norm (overall, of
        the FFN outputs, of the residual stream), the largest |activation| seen, and the average and maximum
        kurtosis."""
        layers = self.per_layer()
        if not layers:
            raise SeqzooError("OutlierProbe saw no forward pass; run the model inside the `with` block")
        ffn = [v for k, v in layers.items() if k.endswith(".ffn")]
        res = [v for k, v in layers.items() if isinstance(self.points.get(k), Block)]
        kurt = [v["kurtosis"] for v in layers.values()]
        return {"max_inf_norm": max(v["inf_norm"] for v in layers.values()),
                "max_ffn_inf_norm": max((v["inf_norm"] for v in ffn), default=0.0),
                "max_residual_inf_norm": max((v["inf_norm"] for v in res), default=0.0),
                "max_abs": max(v["max_abs"] for v in layers.values()),
                "avg_kurtosis": sum(kurt) / len(kurt), "max_kurtosis": max(kurt)}


class ActivationQuantizer:
    """Per-tensor asymmetric min-max fake quantisation of a model's activations (and optionally weights).

    Usage::

        quant = ActivationQuantizer(model, bits=8)
        quant.calibrate(calibration_input_batches)    # static ranges: min and max over the batches
        with quant.enabled():
            loss = model.loss(batch)                   # every quantised point now goes through fake_quantize

    Points: the input of every ``nn.Linear`` (named ``"<linear>:in"``), with ``linear_outputs`` also its output
    (``"<linear>:out"``), and the output of every embedding and :class:`Block` (the residual stream,
    ``"<module>:out"``). ``skip`` holds module names left in full precision (e.g. ``("head",)`` for an FP32 output
    head). ``weight_bits`` also fake-quantises every ``nn.Linear`` weight, per tensor and symmetric, while enabled
    (the weights are restored on exit). ``momentum`` None keeps the min and max over all calibration batches; a
    value in [0, 1) uses the running min-max estimator with that momentum.
    """

    def __init__(self, model: nn.Module, bits: int = 8, *, skip: Iterable[str] = (), weight_bits: int | None = None,
                 linear_outputs: bool = False, momentum: float | None = None):
        self.model = model
        self.bits = _check_bits(bits)
        self.weight_bits = None if weight_bits is None else _check_bits(weight_bits)
        if momentum is not None and (isinstance(momentum, bool) or not isinstance(momentum, (int, float))
                                     or not 0.0 <= momentum < 1.0):
            raise SeqzooError(f"momentum must be None (global min-max) or a number in [0, 1), got {momentum!r}")
        self.momentum = momentum
        self.linear_outputs = bool(linear_outputs)
        skip = set(skip)
        self.linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and n not in skip}
        self.outputs = {n: m for n, m in residual_points(model).items() if n not in skip}
        self.ranges: dict[str, tuple[float, float]] = {}

    # every point is hooked the same way; ``act`` sees (point name, tensor) and returns the tensor to use
    def _install(self, act) -> list:
        handles = []
        for name, lin in self.linears.items():
            def pre(module, args, _name=f"{name}:in"):
                return (act(_name, args[0]),) + tuple(args[1:])
            handles.append(lin.register_forward_pre_hook(pre))
            if self.linear_outputs:
                def lin_out(module, args, out, _name=f"{name}:out"):
                    return act(_name, out)
                handles.append(lin.register_forward_hook(lin_out))
        for name, module in self.outputs.items():
            def post(module, args, out, _name=f"{name}:out"):
                return _replace_first(out, act(_name, _first_tensor(out)))
            handles.append(module.register_forward_hook(post))
        return handles

    @torch.no_grad()
    def calibrate(self, inputs: Iterable[Tensor]) -> dict[str, tuple[float, float]]:
        """Run the model (eval mode) on each input batch and estimate the range of every point: the min and max
        over all batches, or their running (exponential moving) average with ``momentum``."""
        ranges: dict[str, tuple[float, float]] = {}
        m = self.momentum

        def observe(name: str, x: Tensor) -> Tensor:
            lo, hi = float(x.min()), float(x.max())
            old = ranges.get(name)
            if old is None:
                ranges[name] = (lo, hi)
            elif m is None:
                ranges[name] = (min(old[0], lo), max(old[1], hi))
            else:
                ranges[name] = (m * old[0] + (1.0 - m) * lo, m * old[1] + (1.0 - m) * hi)
            return x

        was_training = self.model.training
        self.model.eval()
        handles = self._install(observe)
        try:
            for batch in inputs:
                self.model(batch)
        finally:
            for h in handles:
                h.remove()
            self.model.train(was_training)
        if not ranges:
            raise SeqzooError("calibration saw no batch; give at least one input batch")
        self.ranges = ranges
        return ranges

    @contextlib.contextmanager
    def enabled(self):
        """Within the block, quantised points pass through :func:`fake_quantize` with the calibrated ranges."""
        if not self.ranges:
            raise SeqzooError("ActivationQuantizer is not calibrated; call calibrate(batches) first")

        def quantize(name: str, x: Tensor) -> Tensor:
            if name not in self.ranges:
                raise SeqzooError(f"no calibrated range for {name!r}; calibrate on inputs that reach it")
            lo, hi = self.ranges[name]
            return fake_quantize(x, lo, hi, self.bits)

        saved = {}
        handles = self._install(quantize)
        try:
            if self.weight_bits is not None:
                with torch.no_grad():
                    for name, lin in self.linears.items():
                        w = lin.weight
                        if id(w) not in saved:
                            saved[id(w)] = (w, w.detach().clone())
                            w.copy_(fake_quantize_symmetric(w, self.weight_bits))
            yield self
        finally:
            for h in handles:
                h.remove()
            with torch.no_grad():
                for w, original in saved.values():
                    w.copy_(original)


__all__ = ["kurtosis", "quant_params", "fake_quantize", "fake_quantize_symmetric", "OutlierProbe", "ActivationQuantizer", "residual_points"]
