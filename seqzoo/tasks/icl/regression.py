"""In-context regression: prompts of (x, f(x)) pairs drawn from a function class, predicted at every x.

Papers:
* "What Can Transformers Learn In-Context? A Case Study of Simple Function Classes", Garg, Tsipras, Liang and
  Valiant, 2022, arXiv 2208.01066 — the task, its function classes and the normalised squared error.
* "What learning algorithm is in-context learning? Investigations with linear models", Akyürek, Schuurmans,
  Andreas, Ma and Zhou, 2022, arXiv 2211.15661 — the (x̃, ỹ) token format and the noisy variant.
* "Pretraining Data Mixtures Enable Narrow Model Selection Capabilities in Transformer Models", Yadlowsky, Doshi
  and Tripuraneni, 2023, arXiv 2311.00871 — mixtures of function classes in pretraining, and out-of-distribution
  functions (convex combinations of two classes) at evaluation.

A prompt is ``(x_1, y_1, …, x_n, y_n)`` with x_i ~ N(0, I_d) (or U(−1, 1)^d, von Oswald et al.'s choice) and

    y_i = f(x_i) + σ ε_i,   ε_i ~ N(0, 1),

for one function f per prompt, drawn from a class:

* ``linear``:         f(x) = wᵀx,                          w ~ N(0, I_d)                        E f² = d
* ``sparse_linear``:  f(x) = wᵀx, w ~ N(0, I_d) with all but ``sparsity`` random coordinates zeroed   E f² = s
* ``relu_nn``:        f(x) = √(2/h) Σ_j a_j ReLU(u_jᵀx),    u_j ~ N(0, I_d), a_j ~ N(0, 1), h hidden     E f² = d
* ``decision_tree``:  a full binary tree of ``depth``; each inner node tests x[c] > 0 for a random coordinate c,
                      leaves hold values ~ N(0, 1)                                              E f² = 1

(E f² for x ~ N(0, I_d); a third of it, except for trees, for x ~ U(−1, 1)^d; it is the squared error of always
predicting 0.) A *mixture* (a dict ``{class:
weight}``) draws each prompt's class at random with those weights (Yadlowsky et al.'s pretraining mixtures); a
:class:`Blend` gives every prompt f = α f_a + (1 − α) f_b with f_a, f_b drawn independently (their
out-of-distribution functions), E f² = α² E f_a² + (1 − α)² E f_b². In- and out-of-distribution evaluation of one
trained model is a second :class:`ICLRegression` (same d and n_points, another ``function``) whose
:meth:`ICLRegression.evaluate_model` is called on that model.

Tokens (Akyürek et al.): x_i becomes x̃_i = (x_i, 0) and y_i becomes ỹ_i = (0, …, 0, y_i), both of dimension
d + 1, interleaved as x̃_1, ỹ_1, …, x̃_n, ỹ_n (length 2n). At x̃_i the model predicts y_i from the i − 1 examples
before it: targets are y_i at the x̃ positions and the loss mask selects those positions only (a model's loss
is the mean over all prefixes, as in Garg et al.).

Metric: the *normalised squared error* at k in-context examples, E[(ŷ(x_{k+1}) − y_{k+1})²] / E f², which is
(ŷ − y)²/d for linear regression as in Garg et al. (1 is the error of predicting 0).
:meth:`ICLRegression.evaluate_model` reports it for every k, its mean, ``r2`` = 1 − mean error (the arena's score,
higher is better) and the same curves for the reference learners OLS and ridge (λ = σ², the Bayes posterior mean
for w ~ N(0, I); equal to OLS when σ = 0) on the same prompts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ...core.errors import SeqzooError, choice_error

FUNCTION_CLASSES = ("linear", "sparse_linear", "relu_nn", "decision_tree")
SPLITS = {"train": 0, "val": 1, "test": 2}
X_DISTRIBUTIONS = ("normal", "uniform")


@dataclass(frozen=True)
class Blend:
    """Every prompt's function is ``alpha · f_a + (1 − alpha) · f_b`` (an out-of-distribution probe)."""

    a: str
    b: str
    alpha: float


@dataclass
class Prompts:
    """A batch of prompts: ``xs [B, n, d]``, observed ``ys [B, n]``, noiseless ``fs [B, n]``, each prompt's
    ``scale = E f²`` ``[B]`` and its function class name."""

    xs: Tensor
    ys: Tensor
    fs: Tensor
    scale: Tensor
    kinds: list


def _check_class(name: str) -> None:
    if name not in FUNCTION_CLASSES:
        raise choice_error("function class", name, FUNCTION_CLASSES)


class FunctionSampler:
    """Draws functions of one class and evaluates them at given points (numpy, float64)."""

    def __init__(self, d: int, *, sparsity: int = 3, hidden: int = 100, depth: int = 4):
        if not 1 <= sparsity <= d:
            raise SeqzooError(f"sparsity must be in [1, d={d}], got {sparsity}")
        if hidden < 1 or depth < 1:
            raise SeqzooError(f"hidden and depth must be >= 1, got hidden={hidden}, depth={depth}")
        self.d, self.sparsity, self.hidden, self.depth = d, sparsity, hidden, depth

    def scale(self, kind: str, x_distribution: str = "normal") -> float:
        """E f(x)² for f drawn from ``kind`` and x ~ N(0, I_d) (or U(−1, 1)^d, where E x_i² = 1/3)."""
        second_moment = 1.0 if x_distribution == "normal" else 1.0 / 3.0
        return {"linear": self.d * second_moment, "sparse_linear": self.sparsity * second_moment,
                "relu_nn": self.d * second_moment, "decision_tree": 1.0}[kind]

    def __call__(self, kind: str, rng: np.random.Generator, xs: np.ndarray) -> np.ndarray:
        """Draw one function per row of ``xs [B, n, d]`` and return its values ``[B, n]``."""
        _check_class(kind)
        B, _, d = xs.shape
        if kind in ("linear", "sparse_linear"):
            w = rng.standard_normal((B, d))
            if kind == "sparse_linear":
                keep = np.argsort(rng.random((B, d)), axis=1)[:, :self.sparsity]
                mask = np.zeros((B, d), dtype=bool)
                np.put_along_axis(mask, keep, True, axis=1)
                w = w * mask
            return np.einsum("bnd,bd->bn", xs, w)
        if kind == "relu_nn":
            u = rng.standard_normal((B, self.hidden, d))
            a = rng.standard_normal((B, self.hidden))
            hidden = np.maximum(np.einsum("bnd,bhd->bnh", xs, u), 0.0)
            return math.sqrt(2.0 / self.hidden) * np.einsum("bnh,bh->bn", hidden, a)
        # decision tree: inner nodes 0 … 2^depth − 2 (children of i: 2i + 1, 2i + 2), then 2^depth leaves
        inner = 2 ** self.depth - 1
        coords = rng.integers(0, d, (B, inner))
        leaves = rng.standard_normal((B, inner + 1))
        node = np.zeros(xs.shape[:2], dtype=np.int64)
        rows = np.arange(B)[:, None]
        for _ in range(self.depth):
            c = coords[rows, node]
            go_right = np.take_along_axis(xs, c[..., None], axis=2)[..., 0] > 0
            node = 2 * node + 1 + go_right
        return leaves[rows, node - inner]


class ICLRegression:
    """In-context regression prompts as a batch source (see the module docstring); deterministic per seed.

    ``function`` is a class name, a mixture ``{class: weight}`` or a :class:`Blend`. ``curriculum = (start,
    every)`` zeroes the input coordinates past ``start + index // every`` in training batch ``index`` (Garg et al.'s
    curriculum over dimensions; a pure function of the step, so resumed runs see the same data; ``scale`` keeps
    describing the full-d distribution). ``n_points`` examples per
    prompt give sequences of ``2 · n_points`` tokens of dimension ``d + 1``. Batches: ``inputs [B, 2n, d+1]``,
    ``targets [B, 2n, 1]`` (y_i at x̃_i, 0 elsewhere), ``loss_mask [B, 2n]`` (the x̃ positions).
    """

    vocab_size = 1  # continuous task: CausalLM(input_dim=d + 1, output_dim=1); vocab_size is unused
    output_dim = 1

    def __init__(self, *, d: int = 5, n_points: int = 11, function="linear", noise_std: float = 0.0,
                 sparsity: int = 3, hidden: int = 100, depth: int = 4, x_distribution: str = "normal",
                 curriculum: tuple[int, int] | None = None, seed: int = 0):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (d, n_points)) or d < 1 or n_points < 1:
            raise SeqzooError(f"ICL regression needs d >= 1 and n_points >= 1, got d={d}, n_points={n_points}")
        if not isinstance(noise_std, (int, float)) or noise_std < 0:
            raise SeqzooError(f"noise_std must be >= 0, got {noise_std}")
        if x_distribution not in X_DISTRIBUTIONS:
            raise choice_error("x distribution", x_distribution, X_DISTRIBUTIONS)
        self.d, self.n_points, self.noise_std, self.seed = d, n_points, float(noise_std), seed
        self.x_distribution = x_distribution
        self.sampler = FunctionSampler(d, sparsity=sparsity, hidden=hidden, depth=depth)
        self.function = self._parse(function)
        if curriculum is not None:
            if (not isinstance(curriculum, (tuple, list)) or len(curriculum) != 2
                    or not all(isinstance(v, int) and v >= 1 for v in curriculum)):
                raise SeqzooError(f"curriculum must be (start_dims, steps_per_dim) positive integers, "
                                  f"got {curriculum!r}")
            curriculum = tuple(curriculum)
        self.curriculum = curriculum
        self.input_dim = d + 1
        self.seq_len = 2 * n_points

    def active_dims(self, index: int) -> int:
        """Input dimensions in use in training batch ``index``: all of them without a curriculum, else
        ``start + index // every`` up to d (validation and test prompts always use all d)."""
        if self.curriculum is None:
            return self.d
        start, every = self.curriculum
        return min(self.d, start + index // every)

    CLASSES = FUNCTION_CLASSES  # the function classes this source accepts (MixtureICL widens it)

    @classmethod
    def _parse(cls, function):
        def check(name):
            if name not in cls.CLASSES:
                raise choice_error("function class", name, cls.CLASSES)

        if isinstance(function, Blend):
            check(function.a)
            check(function.b)
            if not 0.0 <= function.alpha <= 1.0:
                raise SeqzooError(f"Blend alpha must be in [0, 1], got {function.alpha}")
            return function
        if isinstance(function, str):
            check(function)
            return {function: 1.0}
        if isinstance(function, dict) and function:
            for name, weight in function.items():
                check(name)
                if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
                    raise SeqzooError(f"mixture weight of {name!r} must be a number >= 0, got {weight!r}")
            total = float(sum(function.values()))
            if total <= 0:
                raise SeqzooError("mixture weights must not all be 0")
            return {k: float(v) / total for k, v in function.items() if v > 0}
        raise SeqzooError(f"function must be a class name, a {{class: weight}} mixture or a Blend, got {function!r}; "
                          f"classes: {', '.join(cls.CLASSES)}")

    # -- sampling -------------------------------------------------------------------------------------------------
    def draw(self, kind: str, rng: np.random.Generator, xs: np.ndarray) -> np.ndarray:
        """One function of class ``kind`` per row of ``xs [B, n, d]``, evaluated there: ``[B, n]``."""
        return self.sampler(kind, rng, xs)

    def class_scale(self, kind: str) -> float:
        """E f² of class ``kind`` as drawn (the normaliser of the reported error)."""
        return self.sampler.scale(kind, self.x_distribution)

    def sample(self, split: str, index: int, batch_size: int, *, n_points: int | None = None) -> Prompts:
        """The prompts of batch ``index`` of ``split`` (float64 tensors)."""
        if split not in SPLITS:
            raise choice_error("split", split, SPLITS)
        n = n_points or self.n_points
        rng = np.random.default_rng([self.seed, SPLITS[split], index])
        if self.x_distribution == "normal":
            xs = rng.standard_normal((batch_size, n, self.d))
        else:
            xs = rng.uniform(-1.0, 1.0, (batch_size, n, self.d))
        if split == "train" and self.curriculum is not None:
            xs[..., self.active_dims(index):] = 0.0   # Garg et al.'s curriculum: the last coordinates stay 0
        if isinstance(self.function, Blend):
            b = self.function
            fs = b.alpha * self.draw(b.a, rng, xs) + (1 - b.alpha) * self.draw(b.b, rng, xs)
            scale = np.full(batch_size,
                            b.alpha ** 2 * self.class_scale(b.a) + (1 - b.alpha) ** 2 * self.class_scale(b.b))
            kinds = [f"{b.alpha:g}·{b.a}+{1 - b.alpha:g}·{b.b}"] * batch_size
        else:
            names = list(self.function)
            choice = rng.choice(len(names), size=batch_size, p=[self.function[k] for k in names])
            fs = np.zeros((batch_size, n))
            scale = np.zeros(batch_size)
            for j, name in enumerate(names):
                rows = np.flatnonzero(choice == j)
                if len(rows):
                    fs[rows] = self.draw(name, rng, xs[rows])
                    scale[rows] = self.class_scale(name)
            kinds = [names[j] for j in choice]
        ys = fs + self.noise_std * rng.standard_normal(fs.shape)
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
        return Prompts(t(xs), t(ys), t(fs), t(scale), kinds)

    def encode(self, prompts: Prompts, dtype=torch.float32) -> dict[str, Tensor]:
        """Interleaved tokens x̃_1, ỹ_1, …, x̃_n, ỹ_n with targets y_i at the x̃ positions."""
        xs, ys = prompts.xs, prompts.ys
        B, n, d = xs.shape
        inputs = torch.zeros(B, 2 * n, d + 1, dtype=torch.float64)
        inputs[:, 0::2, :d] = xs
        inputs[:, 1::2, d] = ys
        targets = torch.zeros(B, 2 * n, 1, dtype=torch.float64)
        targets[:, 0::2, 0] = ys
        mask = torch.zeros(B, 2 * n, dtype=torch.bool)
        mask[:, 0::2] = True
        return {"inputs": inputs.to(dtype), "targets": targets.to(dtype), "loss_mask": mask}

    def get_batch(self, split: str, index: int, batch_size: int) -> dict[str, Tensor]:
        return self.encode(self.sample(split, index, batch_size))

    # -- evaluation -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, model, prompts: Prompts) -> Tensor:
        """A sequence model's predictions ``[B, n]`` of y_i at every x̃_i (float64)."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        out, _ = model(self.encode(prompts)["inputs"].to(device))
        model.train(was_training)
        return out[:, 0::2, 0].double().cpu()

    def normalised_error(self, prompts: Prompts, preds: Tensor) -> Tensor:
        """(ŷ − y)² / E f² averaged over prompts, ``[n]``: entry k is the error of the prediction made after k
        in-context examples."""
        return ((preds - prompts.ys) ** 2 / prompts.scale[:, None]).mean(0)

    def evaluate_model(self, model, *, batches: int = 8, batch_size: int = 64, split: str = "val") -> dict:
        """Normalised error vs k of ``model`` and of OLS and ridge (λ = σ²) on the same prompts."""
        from .learners import ols, prefix_predictions, ridge

        curves = {"model": [], "ols": [], "ridge": []}
        for index in range(batches):
            p = self.sample(split, index, batch_size)
            curves["model"].append(self.normalised_error(p, self.predict(model, p)))
            curves["ols"].append(self.normalised_error(p, prefix_predictions(ols, p.xs, p.ys)))
            lam = self.noise_std ** 2
            curves["ridge"].append(self.normalised_error(
                p, prefix_predictions(ridge, p.xs, p.ys, lam=lam) if lam > 0 else prefix_predictions(ols, p.xs, p.ys)))
        mean = {k: torch.stack(v).mean(0) for k, v in curves.items()}
        nse = float(mean["model"].mean())
        return {"r2": 1.0 - nse, "nse": nse, "loss": nse, "error_by_k": mean["model"].tolist(),
                "ols_by_k": mean["ols"].tolist(), "ridge_by_k": mean["ridge"].tolist(),
                "icl_d": self.d, "noise_std": self.noise_std}


__all__ = ["Blend", "FUNCTION_CLASSES", "FunctionSampler", "ICLRegression", "Prompts"]
