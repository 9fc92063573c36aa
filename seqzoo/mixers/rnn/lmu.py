"""Legendre Memory Unit in its parallelisable linear form, as used by LMUFormer.

Papers:

* "Legendre Memory Units: Continuous-Time Representation in Recurrent Neural Networks", Voelker, Kajić &
  Eliasmith, NeurIPS 2019 — the LegT memory (a linear delay system whose state holds the Legendre coefficients
  of a sliding window of its input).
* "Parallelizing Legendre Memory Unit Training", Chilkuri & Eliasmith, ICML 2021, arXiv 2102.11417 — drop the
  nonlinear feedback into the memory so the memory is an LTI system, computable as a convolution.
* "LMUFormer: Low Complexity Yet Powerful Spiking Model With Legendre Memory Units", Liu et al., ICLR 2024,
  arXiv 2402.04882 — this parallel LMU as the token mixer of a transformer-like block
  (see :mod:`seqzoo.models.lmuformer`).

Memory (order ``d``, window ``θ`` in steps), continuous LegT system ``θ ṁ = A m + B u`` written with θ folded in:

    A_ij = (2i+1)/θ · (−1            if i < j
                       (−1)^{i−j+1}  if i ≥ j)          B_i = (2i+1)/θ · (−1)^i          i, j = 0 … d−1

Zero-order hold with step 1:  Ā = exp(A),  B̄ = A⁻¹(Ā − I) B  (computed together as the exponential of the
augmented matrix [[A, B], [0, 0]], so no inverse is formed). Per time step, with ``n`` memory inputs:

    u_t = f_u(W_u x_t)                  (LMUFormer: W_u: D → 1, f_u = ReLU;  ``per_channel``: u_t = x_t, n = D)
    m_t = Ā m_{t−1} + B̄ u_t              (one LegT memory of order d per input channel of u)
    h_t = f_h(W_h [m_t; x_t])            (= W_m m_t + W_x x_t; LMUFormer: f_h = ReLU, hidden size D)
    y_t = W_o h_t                        (LMUFormer's 1×1 projection; its BatchNorm lives in the model)

Parallel form (``impl="fft"``): with the impulse response ``H_j = Ā^j B̄`` (``j = 0 … T−1``) and an incoming
state ``m_0``,

    m_t = Σ_{j=0}^{t−1} H_j u_{t−j}  +  Ā^t m_0          (t = 1 … T)

the first term a causal convolution done with real FFTs of length ≥ 2T, the second the free response of the
incoming state (both sequences of powers are built by doubling: [v, Āv] → [v, Āv, Ā²v, Ā³v] → …, log₂T
matrix products). The final state is ``m_T``, the last row, so splitting a sequence anywhere and threading the
state gives the same outputs (chunk invariance). ``impl="recurrent"`` steps the recurrence and is the reference.

Delay property (why it is a *memory*): ``u(t − θ') ≈ Σ_i P̃_i(θ'/θ) m_i(t)`` for 0 ≤ θ' ≤ θ, with the shifted
Legendre polynomials ``P̃_i(r) = P_i(2r − 1)`` (:func:`shifted_legendre`); see :func:`delay_decoder`.

What was checked against the LMUFormer reference code (zeyuliu1037/LMUFormer, ``src/blocks/lmu_cell.py``):
the A/B formulas above; ZOH with dt = 1 (there through scipy's ``cont2discrete``); ``u = ReLU(Linear(D → 1))``;
``h = ReLU(Linear([m; x]))``; FFT convolution with padding to 2T; memory order = D and θ = 128 in its speech
config. The state is ``{"m": [B, n, d]}`` in float32 (float64 for float64 inputs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...core.errors import SeqzooError
from ...core.mixer import Mixer
from ...core.registry import register_mixer
from ...core.state import State, state_dtype

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "tanh": torch.tanh, "identity": lambda t: t}


# -- the LegT system ------------------------------------------------------------------------------------------------
def legt_matrices(order: int, theta: float) -> tuple[Tensor, Tensor]:
    """Continuous-time LegT ``(A [d, d], B [d])`` of the LMU (float64), with the window θ folded in."""
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise SeqzooError(f"LMU order must be a positive int, got {order!r}")
    if not float(theta) > 0:
        raise SeqzooError(f"LMU theta (window in steps) must be > 0, got {theta!r}")
    q = torch.arange(order, dtype=torch.float64)
    rate = (2 * q + 1) / float(theta)
    i, j = q[:, None], q[None, :]
    sign = torch.where(i < j, torch.full_like(i - j, -1.0), (-1.0) ** (i - j + 1))
    return rate[:, None] * sign, rate * (-1.0) ** q


def zoh_discretize(a: Tensor, b: Tensor, dt: float = 1.0) -> tuple[Tensor, Tensor]:
    """Zero-order hold: ``Ā = exp(dt·A)``, ``B̄ = A⁻¹(Ā − I)B``, read off ``exp(dt·[[A, B], [0, 0]])``."""
    d = a.shape[0]
    aug = torch.zeros(d + 1, d + 1, dtype=torch.float64)
    aug[:d, :d] = a
    aug[:d, d] = b
    e = torch.linalg.matrix_exp(dt * aug)
    return e[:d, :d].clone(), e[:d, d].clone()


def shifted_legendre(order: int, r) -> Tensor:
    """``P̃_i(r) = P_i(2r − 1)`` for i = 0 … order−1 (float64, shape ``r.shape + (order,)``), by the three-term
    recurrence ``(n+1) P_{n+1}(x) = (2n+1) x P_n(x) − n P_{n−1}(x)`` (the explicit binomial sum cancels badly
    for orders above ~30)."""
    x = 2 * torch.as_tensor(r, dtype=torch.float64) - 1
    values = [torch.ones_like(x), x]
    for n in range(1, order - 1):
        values.append(((2 * n + 1) * x * values[n] - n * values[n - 1]) / (n + 1))
    return torch.stack(values[:order], dim=-1)


def delay_decoder(order: int, delay_fraction) -> Tensor:
    """Weights ``w`` with ``u(t − θ'·) ≈ w · m_t`` for ``θ' = delay_fraction · θ`` (the LMU delay property)."""
    return shifted_legendre(order, delay_fraction)


def power_sequence(a: Tensor, v: Tensor, length: int) -> Tensor:
    """``[v, A v, A² v, …, A^{length−1} v]`` as ``v.shape[:-1] + (length, d)``, by doubling (log₂ length
    products): the sequence so far is multiplied by ``A^{len}`` and appended, then ``A^{len}`` is squared."""
    seq = v.unsqueeze(-2)
    power = a
    while seq.shape[-2] < length:
        seq = torch.cat([seq, seq @ power.transpose(-1, -2)], dim=-2)
        if seq.shape[-2] < length:
            power = power @ power
    return seq[..., :length, :]


def kernel_spectrum(kernel: Tensor) -> Tensor:
    """The real FFT ``[d, T + 1]`` of ``kernel [T, d]`` at length 2T, as :func:`causal_fft_conv` uses it."""
    return torch.fft.rfft(kernel.T.contiguous(), n=2 * kernel.shape[0], dim=-1)


def causal_fft_conv(u: Tensor, kernel: Tensor | None = None, kernel_f: Tensor | None = None) -> Tensor:
    """``out[b, t, c, :] = Σ_{j≤t} kernel[j, :] · u[b, t−j, c]`` for ``u [B, T, C]``, ``kernel [T, d]`` →
    ``[B, T, C, d]``, with real FFTs of length 2T (so the circular convolution does not wrap). The transforms run
    along the last, contiguous axis (much faster than along axis 0 on CPU); ``kernel_f`` may pass the kernel's
    spectrum instead of ``kernel`` when it is cached."""
    length = u.shape[1]
    n_fft = 2 * length
    if kernel_f is None:
        kernel_f = kernel_spectrum(kernel)                                 # [d, F]
    u_f = torch.fft.rfft(u.transpose(1, 2), n=n_fft, dim=-1)               # [B, C, F]
    out = torch.fft.irfft(u_f.unsqueeze(2) * kernel_f, n=n_fft, dim=-1)    # [B, C, d, 2T]
    return out[..., :length].permute(0, 3, 1, 2)                            # [B, T, C, d]


# -- the mixer ------------------------------------------------------------------------------------------------------
@register_mixer("lmu", paper="Parallelizing Legendre Memory Unit Training (LMU: Voelker et al. 2019; as used "
                             "by LMUFormer, arXiv 2402.04882)", arxiv="2102.11417")
class LMU(Mixer):
    """Legendre Memory Unit, parallel linear form (Chilkuri & Eliasmith 2021, arXiv 2102.11417; LMUFormer, arXiv
    2402.04882): ``u_t = f_u(W_u x_t)``, LegT memory ``m_t = Ā m_{t−1} + B̄ u_t``, ``h_t = f_h(W_h [m_t; x_t])``,
    ``y_t = W_o h_t``; FFT-convolution and recurrent forms agree.

    Options: ``order`` (d, memory order per input; None = d_model as in LMUFormer); ``theta`` (window in steps);
    ``memory_inputs`` (n, width of the encoder output u; LMUFormer: 1); ``per_channel`` (u = x: one memory per
    channel, no encoder); ``input_activation`` / ``activation`` (f_u / f_h: relu, gelu, tanh, identity);
    ``impl`` in ``IMPLS`` or ``"auto"`` (= fft).
    """

    IMPLS: tuple[str, ...] = ("recurrent", "fft")
    constant_state = True

    def __init__(self, d_model: int, order: int | None = None, theta: float = 128.0, memory_inputs: int = 1,
                 per_channel: bool = False, input_activation: str = "relu", activation: str = "relu",
                 impl: str = "auto"):
        super().__init__(d_model)
        order = d_model if order is None else order
        a, b = legt_matrices(order, theta)
        self.order, self.theta = order, float(theta)
        if impl != "auto" and impl not in self.IMPLS:
            raise SeqzooError(f"impl {impl!r} is not valid for lmu; valid: auto, {', '.join(self.IMPLS)}")
        self.impl = "fft" if impl == "auto" else impl
        for name, act in (("input_activation", input_activation), ("activation", activation)):
            if act not in ACTIVATIONS:
                raise SeqzooError(f"lmu {name} {act!r} is not valid; valid: {', '.join(ACTIVATIONS)}")
        self.input_activation, self.activation = input_activation, activation
        self.per_channel = bool(per_channel)
        if self.per_channel:
            self.memory_inputs = d_model
            self.u_proj = None
        else:
            if isinstance(memory_inputs, bool) or not isinstance(memory_inputs, int) or memory_inputs < 1:
                raise SeqzooError(f"lmu memory_inputs must be a positive int, got {memory_inputs!r}")
            self.memory_inputs = memory_inputs
            self.u_proj = nn.Linear(d_model, memory_inputs)
        # Ā, B̄ are fixed (not trained): kept in float64 outside the module's buffers so that .to(bf16) cannot
        # round them, and cast per call to the state dtype.
        self._a_bar, self._b_bar = zoh_discretize(a, b)
        self._cache: dict = {}
        self.h_proj = nn.Linear(self.memory_inputs * order + d_model, d_model)
        self.o_proj = nn.Linear(d_model, d_model)

    # -- fixed system, cast and cached per (dtype, device) --------------------------------------------------------
    def system(self, dtype: torch.dtype, device=None) -> tuple[Tensor, Tensor]:
        """``(Ā, B̄)`` in ``dtype`` on ``device``."""
        key = ("system", dtype, str(device))
        if key not in self._cache:
            self._cache[key] = (self._a_bar.to(device=device, dtype=dtype), self._b_bar.to(device=device, dtype=dtype))
        return self._cache[key]

    def impulse_response(self, length: int, dtype: torch.dtype, device=None) -> Tensor:
        """``H [length, d]`` with ``H_j = Ā^j B̄`` (cached for the last few lengths)."""
        key = ("H", length, dtype, str(device))
        if key not in self._cache:
            if len(self._cache) > 16:
                self._cache = {k: v for k, v in self._cache.items() if k[0] == "system"}
            a_bar, b_bar = self.system(dtype, device)
            self._cache[key] = power_sequence(a_bar, b_bar, length)
        return self._cache[key]

    def kernel_spectrum(self, length: int, dtype: torch.dtype, device=None) -> Tensor:
        """The FFT of :meth:`impulse_response` used by the parallel form (cached beside it; Ā and B̄ are fixed)."""
        key = ("Hf", length, dtype, str(device))
        if key not in self._cache:
            self._cache[key] = kernel_spectrum(self.impulse_response(length, dtype, device))
        return self._cache[key]

    # -- pieces (used by the model and the property tests) -------------------------------------------------------
    def encode(self, x: Tensor) -> Tensor:
        """The memory input ``u [B, T, n]`` (in the state dtype)."""
        u = x if self.u_proj is None else ACTIVATIONS[self.input_activation](self.u_proj(x))
        return u.to(state_dtype(x.dtype))

    def memory(self, u: Tensor, m0: Tensor, impl: str | None = None) -> tuple[Tensor, Tensor]:
        """LegT memory of ``u [B, T, n]`` from state ``m0 [B, n, d]``: ``(m [B, T, n, d], m_T [B, n, d])``."""
        impl = impl or self.impl
        a_bar, b_bar = self.system(u.dtype, u.device)
        if impl == "recurrent":
            m, out = m0, []
            for t in range(u.shape[1]):
                m = m @ a_bar.T + u[:, t, :, None] * b_bar
                out.append(m)
            return torch.stack(out, dim=1), m
        length = u.shape[1]
        m = causal_fft_conv(u, kernel_f=self.kernel_spectrum(length, u.dtype, u.device))
        if m0.requires_grad or bool((m0 != 0).any()):  # the free response Ā^t m0, t = 1 … T
            m = m + power_sequence(a_bar, m0 @ a_bar.T, length).transpose(1, 2)
        return m, m[:, -1]

    def readout(self, m: Tensor, x: Tensor) -> Tensor:
        """``y = W_o f_h(W_h [m; x])`` with ``m [B, T, n, d]`` flattened and cast to the dtype of ``x``."""
        flat = m.flatten(2).to(x.dtype)
        h = ACTIVATIONS[self.activation](self.h_proj(torch.cat([flat, x], dim=-1)))
        return self.o_proj(h)

    # -- contract -------------------------------------------------------------------------------------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None) -> State:
        dtype = state_dtype(dtype if dtype is not None else torch.get_default_dtype())
        return {"m": torch.zeros(batch_size, self.memory_inputs, self.order, device=device, dtype=dtype)}

    def state_size(self, seq_len: int) -> int:
        return self.memory_inputs * self.order

    def _mix(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        if "m" not in state:
            raise SeqzooError("lmu state lacks 'm'; expected keys: m (use init_state or a returned state)")
        m0 = state["m"].to(state_dtype(x.dtype))
        m, m_last = self.memory(self.encode(x), m0)
        return self.readout(m, x), {"m": m_last}

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, order={self.order}, theta={self.theta:g}, "
                f"memory_inputs={self.memory_inputs}, per_channel={self.per_channel}, impl={self.impl!r}")


__all__ = ["LMU", "legt_matrices", "zoh_discretize", "shifted_legendre", "delay_decoder", "power_sequence",
           "causal_fft_conv", "kernel_spectrum"]
