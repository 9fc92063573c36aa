"""Pretraining data mixtures of function classes for in-context regression, out-of-distribution probes, and
per-class reference learners (Bayes posterior means where they have a closed form).

Paper: "Pretraining Data Mixtures Enable Narrow Model Selection Capabilities in Transformer Models", Yadlowsky,
Doshi and Tripuraneni, 2023, arXiv 2311.00871 (after Garg et al. 2022, arXiv 2208.01066). A transformer is
pretrained on prompts (x_1, f(x_1), …, x_n, f(x_n)) whose function f is drawn from a *mixture* of function
classes; the question is whether it identifies the class in context and then learns within it (model
selection), and what it does on functions outside the mixture (convex combinations of classes, sinusoids of
unseen frequency).

Classes (x ~ N(0, I_d), or U(−1, 1)^d), each normalised here so that E f(x)² = 1 (``normalise=True``, so the
classes weigh alike in a mixture's squared loss and the normalised error is the plain squared error):

* ``linear``         f(x) = wᵀx / √(d m₂),          w ~ N(0, I_d)                       (m₂ = E x_i²)
* ``sparse_linear``  f(x) = wᵀx / √(s m₂),          w ~ N(0, I_d) kept on a uniformly random support of size s
* ``relu_nn``        f(x) = √(2/h) Σ_j a_j ReLU(u_jᵀx) / √(d m₂)   (2-layer ReLU network, h hidden units)
* ``decision_tree``  a random depth-``depth`` tree on signs of coordinates, leaves ~ N(0, 1)
* ``sinusoid``       f(x) = √2 sin(ω vᵀx + φ),      v uniform on the sphere, ω ~ U[ω_lo, ω_hi], φ ~ U[0, 2π)
                     (E f² = 1 exactly, whatever the distribution of x)

(the first four are :class:`~seqzoo.tasks.icl.regression.FunctionSampler`'s, rescaled). A mixture
``{class: weight}`` draws each prompt's class independently with probabilities weight / Σ weights; a
:class:`~seqzoo.tasks.icl.regression.Blend` gives every prompt f = α f_a + (1 − α) f_b with f_a, f_b drawn
independently, E f² = α² + (1 − α)² (Yadlowsky et al.'s out-of-distribution convex combinations); a sinusoid
with ``frequency`` outside the pretraining range is the other out-of-distribution probe.

Reference learners. For the *linear-type* classes — a weight vector w ~ N(0, v_S I) on a support S drawn from a
finite list of supports with prior weights π_S (dense: S = all d coordinates, v = 1/(d m₂); sparse: the C(d, s)
supports of size s, each π/C(d, s), v = 1/(s m₂)) — the Bayes posterior mean, which minimises the expected
squared error on the class (or on the mixture), is exact: with the k examples X, y, noise variance σ² (plus a
tiny ``jitter`` for noiseless prompts, the σ → 0 limit),

    Σ_S = v_S X_S X_Sᵀ + σ² I_k,   log p(y | S) = −½ yᵀ Σ_S⁻¹ y − ½ log det Σ_S − (k/2) log 2π,
    E[f(x_q) | y, S] = v_S x_{q,S}ᵀ X_Sᵀ Σ_S⁻¹ y,   p(S | y) ∝ π_S p(y | S),
    ŷ(x_q) = Σ_S p(S | y) E[f(x_q) | y, S]                                          (:func:`bayes_linear`).

So the dense class's reference is ridge/OLS, the sparse class's is model averaging over supports (beating OLS
for k < d), and a dense + sparse mixture's is the model-selection oracle. Classes without a closed-form
posterior (ReLU networks, trees, sinusoids) get plain baselines (3-NN and OLS), which are not optimal.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from torch import Tensor

from ...core.errors import SeqzooError, choice_error
from .learners import knn, ols, prefix_predictions
from .regression import Blend, ICLRegression, Prompts

MIXTURE_CLASSES = ("linear", "sparse_linear", "relu_nn", "decision_tree", "sinusoid")
LINEAR_CLASSES = ("linear", "sparse_linear")
MAX_SUPPORTS = 5000


def _check(name: str) -> None:
    if name not in MIXTURE_CLASSES:
        raise choice_error("function class", name, MIXTURE_CLASSES)


class MixtureICL(ICLRegression):
    """In-context regression prompts whose functions come from a mixture of normalised function classes (see the
    module docstring); the batches, tokens, curriculum and evaluation are :class:`ICLRegression`'s.

    ``function``: a class name, a mixture ``{class: weight}`` or a :class:`Blend`. ``frequency = (ω_lo, ω_hi)``
    is the sinusoids' frequency range. ``normalise=False`` keeps the raw scales of the regression module."""

    CLASSES = MIXTURE_CLASSES

    def __init__(self, *, d: int = 5, n_points: int = 11, function="linear", noise_std: float = 0.0,
                 sparsity: int = 2, hidden: int = 100, depth: int = 4, frequency: tuple = (0.5, 2.0),
                 normalise: bool = True, x_distribution: str = "normal", curriculum=None, seed: int = 0):
        if (not isinstance(frequency, (tuple, list)) or len(frequency) != 2
                or not all(isinstance(v, (int, float)) for v in frequency) or not 0 <= frequency[0] <= frequency[1]):
            raise SeqzooError(f"frequency must be (low, high) with 0 <= low <= high, got {frequency!r}")
        self.frequency = (float(frequency[0]), float(frequency[1]))
        self.normalise = bool(normalise)
        super().__init__(d=d, n_points=n_points, function=function, noise_std=noise_std, sparsity=sparsity,
                         hidden=hidden, depth=depth, x_distribution=x_distribution, curriculum=curriculum, seed=seed)

    # -- one class ------------------------------------------------------------------------------------------------
    def class_scale(self, kind: str) -> float:
        """E f² of one class as sampled (1 when normalised)."""
        if self.normalise or kind == "sinusoid":
            return 1.0
        return self.sampler.scale(kind, self.x_distribution)

    def draw(self, kind: str, rng: np.random.Generator, xs: np.ndarray) -> np.ndarray:
        """One function of ``kind`` per row of ``xs [B, n, d]``, evaluated there: ``[B, n]``."""
        _check(kind)
        if kind == "sinusoid":
            B, _, d = xs.shape
            v = rng.standard_normal((B, d))
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            omega = rng.uniform(self.frequency[0], self.frequency[1], (B, 1))
            phase = rng.uniform(0.0, 2 * math.pi, (B, 1))
            return math.sqrt(2.0) * np.sin(omega * np.einsum("bnd,bd->bn", xs, v) + phase)
        values = self.sampler(kind, rng, xs)
        if self.normalise:
            values = values / math.sqrt(self.sampler.scale(kind, self.x_distribution))
        return values

    # -- reference learners ---------------------------------------------------------------------------------------
    def second_moment(self) -> float:
        return 1.0 if self.x_distribution == "normal" else 1.0 / 3.0

    def linear_components(self, mixture: dict | None = None) -> list[tuple[tuple, float, float]]:
        """(support, prior weight, weight variance v_S) of every support of the linear-type classes of
        ``mixture`` (default: this task's), for :func:`bayes_linear`."""
        mixture = self.function if mixture is None else self._parse(mixture)
        if isinstance(mixture, Blend) or any(k not in LINEAR_CLASSES for k in mixture):
            raise SeqzooError(f"the Bayes reference exists for mixtures of {', '.join(LINEAR_CLASSES)} only, "
                              f"got {mixture!r}; use the 3-NN/OLS baselines for other classes")
        m2 = self.second_moment()
        components = []
        for kind, weight in mixture.items():
            size = self.d if kind == "linear" else self.sampler.sparsity
            variance = 1.0 / (size * m2) if self.normalise else 1.0
            supports = [tuple(range(self.d))] if kind == "linear" else list(itertools.combinations(range(self.d), size))
            if len(supports) > MAX_SUPPORTS:
                raise SeqzooError(f"{len(supports)} supports of size {size} in d={self.d} exceed {MAX_SUPPORTS}; "
                                  f"the exact Bayes reference needs a smaller d or sparsity")
            components.extend((s, weight / len(supports), variance) for s in supports)
        return components

    def reference_predictions(self, prompts: Prompts, kind, *, jitter: float = 1e-6) -> dict[str, Tensor]:
        """Reference learners' predictions ``[B, n]`` at every prefix for prompts of ``kind`` (a class name, a
        mixture dict or a Blend): ``bayes`` (exact posterior mean, linear-type classes and their mixtures only),
        ``ols`` and ``knn3`` always."""
        out = {"ols": prefix_predictions(ols, prompts.xs, prompts.ys),
               "knn3": prefix_predictions(knn, prompts.xs, prompts.ys, neighbors=3)}
        parsed = self._parse(kind)
        if not isinstance(parsed, Blend) and all(k in LINEAR_CLASSES for k in parsed):
            out["bayes"] = bayes_linear(prompts.xs, prompts.ys, self.linear_components(parsed),
                                        noise_var=self.noise_std ** 2 + jitter)
        return out


def bayes_linear(xs: Tensor, ys: Tensor, components: list[tuple[tuple, float, float]], *,
                 noise_var: float = 1e-6) -> Tensor:
    """Posterior-mean predictions ``[B, n]`` at every prefix under a prior that draws a support S with weight π_S
    and w_S ~ N(0, v_S I) (see the module docstring); column k uses the first k examples (0 at k = 0)."""
    if noise_var <= 0:
        raise SeqzooError(f"noise_var must be > 0 (add a jitter for noiseless prompts), got {noise_var}")
    if not components:
        raise SeqzooError("bayes_linear needs at least one (support, weight, variance) component")
    xs, ys = xs.double(), ys.double()
    B, n, _ = xs.shape
    log_prior = torch.tensor([math.log(w) if w > 0 else -math.inf for _, w, _ in components], dtype=torch.float64)
    preds = [xs.new_zeros(B)]
    for k in range(1, n):
        X, y, xq = xs[:, :k], ys[:, :k], xs[:, k]
        log_lik, means = [], []
        for support, _, variance in components:
            idx = list(support)
            XS = X[:, :, idx]                                                     # [B, k, s]
            cov = variance * XS @ XS.transpose(1, 2) + noise_var * torch.eye(k, dtype=torch.float64)
            chol = torch.linalg.cholesky(cov)
            alpha = torch.cholesky_solve(y.unsqueeze(-1), chol)                   # Σ⁻¹ y, [B, k, 1]
            log_det = 2 * torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(-1)
            log_lik.append(-0.5 * (y.unsqueeze(1) @ alpha).reshape(B) - 0.5 * log_det - 0.5 * k * math.log(2 * math.pi))
            cross = (XS @ xq[:, idx].unsqueeze(-1)).squeeze(-1)                   # X_S x_{q,S}, [B, k]
            means.append(variance * (cross * alpha.squeeze(-1)).sum(-1))
        post = torch.softmax(torch.stack(log_lik, 1) + log_prior, dim=1)         # [B, components]
        preds.append((post * torch.stack(means, 1)).sum(1))
    return torch.stack(preds, 1)


__all__ = ["LINEAR_CLASSES", "MIXTURE_CLASSES", "MixtureICL", "bayes_linear"]
