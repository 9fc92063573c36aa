"""Spiking neurons for the spiking LMUFormer: LIF dynamics and surrogate gradients.

Paper: "LMUFormer: Low Complexity Yet Powerful Spiking Model With Legendre Memory Units", Liu et al., ICLR 2024,
arXiv 2402.04882 — its spiking variant replaces the ReLU/GELU activations by leaky integrate-and-fire neurons
(τ = 2, threshold 1, hard reset to 0, reset detached from the graph; in the reference code spikingjelly's
``MultiStepLIFNode``, whose default surrogate is a sigmoid with α = 4). Sequence positions are the neurons'
time steps, so a LIF layer is a (nonlinear) recurrence over the sequence and carries its membrane as state.

Leaky integrate-and-fire, per neuron, with β = 1 − 1/τ:

    charge:  v_t = β v_{t−1} + (1 − β) I_t       (``decay_input=True``, spikingjelly's form with v_reset = 0)
             v_t = β v_{t−1} + I_t               (``decay_input=False``)
    fire:    s_t = H(v_t − ϑ)                    (H: Heaviside, H(0) = 1)
    reset:   v_t ← v_t (1 − s_t)                 (``reset="hard"``, to 0)     or   v_t ← v_t − ϑ s_t   ("subtract")

The Heaviside step has zero gradient almost everywhere, so training uses a surrogate derivative in the backward
pass (forward stays exactly the step), with x = v − ϑ:

    "sigmoid":       α σ(αx)(1 − σ(αx))                      (α = 4; spikingjelly's default)
    "atan":          (α/2) / (1 + (π α x / 2)²)              (α = 2; the derivative of arctan(π α x / 2)/π + ½)
    "fast_sigmoid":  1 / (1 + α|x|)²                         (α = 10; SuperSpike's fast sigmoid)

``detach_reset=True`` (LMUFormer's setting) stops gradients through the reset term.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..core.errors import SeqzooError

SURROGATE_ALPHA = {"sigmoid": 4.0, "atan": 2.0, "fast_sigmoid": 10.0}


def surrogate_grad(x: Tensor, kind: str, alpha: float) -> Tensor:
    """The surrogate derivative dH/dx at ``x`` (see the module docstring)."""
    if kind == "sigmoid":
        s = torch.sigmoid(alpha * x)
        return alpha * s * (1 - s)
    if kind == "atan":
        return (alpha / 2) / (1 + (math.pi / 2 * alpha * x) ** 2)
    if kind == "fast_sigmoid":
        return 1.0 / (1 + alpha * x.abs()) ** 2
    raise SeqzooError(f"unknown surrogate {kind!r}; valid: {', '.join(SURROGATE_ALPHA)}")


class _Spike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, kind: str, alpha: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.kind, ctx.alpha = kind, alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (x,) = ctx.saved_tensors
        return grad_out * surrogate_grad(x, ctx.kind, ctx.alpha), None, None


def spike(x: Tensor, surrogate: str = "sigmoid", alpha: float | None = None) -> Tensor:
    """Heaviside step ``H(x)`` (1 where x ≥ 0) whose backward pass uses the surrogate derivative."""
    if surrogate not in SURROGATE_ALPHA:
        raise SeqzooError(f"unknown surrogate {surrogate!r}; valid: {', '.join(SURROGATE_ALPHA)}")
    return _Spike.apply(x, surrogate, SURROGATE_ALPHA[surrogate] if alpha is None else float(alpha))


class LIF(nn.Module):
    """A layer of leaky integrate-and-fire neurons over the sequence dimension (see the module docstring).

    ``forward(current [B, T, ...], v [B, ...] | None) -> (spikes [B, T, ...], v_T)``; the membrane ``v`` is the
    state, so feeding a sequence in pieces and threading ``v`` gives the same spikes as one call.
    """

    def __init__(self, tau: float = 2.0, threshold: float = 1.0, reset: str = "hard", decay_input: bool = True,
                 detach_reset: bool = True, surrogate: str = "sigmoid", alpha: float | None = None):
        super().__init__()
        if not tau >= 1.0:
            raise SeqzooError(f"LIF tau must be >= 1 (β = 1 − 1/τ in [0, 1)), got {tau!r}")
        if reset not in ("hard", "subtract"):
            raise SeqzooError(f"LIF reset {reset!r} is not valid; valid: hard, subtract")
        if surrogate not in SURROGATE_ALPHA:
            raise SeqzooError(f"unknown surrogate {surrogate!r}; valid: {', '.join(SURROGATE_ALPHA)}")
        self.tau, self.threshold, self.reset = float(tau), float(threshold), reset
        self.decay_input, self.detach_reset = bool(decay_input), bool(detach_reset)
        self.surrogate, self.alpha = surrogate, alpha

    @property
    def beta(self) -> float:
        return 1.0 - 1.0 / self.tau

    def forward(self, current: Tensor, v: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if v is None:
            v = torch.zeros_like(current[:, 0])
        v = v.to(current.dtype)
        gain = 1.0 - self.beta if self.decay_input else 1.0
        spikes = []
        for t in range(current.shape[1]):
            v = self.beta * v + gain * current[:, t]
            s = spike(v - self.threshold, self.surrogate, self.alpha)
            s_reset = s.detach() if self.detach_reset else s
            v = v * (1 - s_reset) if self.reset == "hard" else v - self.threshold * s_reset
            spikes.append(s)
        return torch.stack(spikes, dim=1), v

    def extra_repr(self) -> str:
        return (f"tau={self.tau:g}, threshold={self.threshold:g}, reset={self.reset!r}, "
                f"decay_input={self.decay_input}, surrogate={self.surrogate!r}")


__all__ = ["LIF", "spike", "surrogate_grad", "SURROGATE_ALPHA"]
