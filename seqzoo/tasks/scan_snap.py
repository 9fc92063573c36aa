"""Scan and Snap: the synthetic "sequence class" data and the 1-layer transformer of Tian et al., with probes of
its attention over training (entropy, per-token attention, the query–key logits).

Paper: "Scan and Snap: Understanding Training Dynamics and Token Composition in 1-layer Transformer", Tian, Wang,
Chen and Du, NeurIPS 2023, arXiv 2305.16380.

Data ("sequence classes"). There are K classes, one per next token n ∈ {0 … K−1}. Class n has a query token
m = ψ(n) = n mod Q (Q queries, so K/Q classes share each query and must be told apart by their context). The
contextual vocabulary has C *common tokens* (CT, shared by every class) and D *distinct tokens* (DT) per class
(each occurring in that class only), M = C + K·D tokens in all. A sequence of class n is T − 1 contextual tokens
drawn i.i.d. from

    P(l | n) = p_c / C                      for a common token l,
    P(l | n) = (1 − p_c) · r_j / Σ_i r_i    for the j-th distinct token of class n (r_j = 1 / (j + 1)),

followed by the query ψ(n); the target is n. There is no positional information.

Model (the paper's reparameterisation of a 1-layer transformer with orthonormal token embeddings): a query–key
logit table Z ∈ R^{Q×M} and a decoder Y ∈ R^{K×M}. For contextual tokens x_1 … x_{T−1} and query m,

    c_l = exp(z_{m, x_l}) / Σ_l' exp(z_{m, x_l'})          (attention of the query over the context)
    f   = Σ_l c_l e_{x_l},   f̃ = f / ‖f‖₂                  (attended one-hot embeddings, ℓ2-normalised)
    logits = Y f̃,   loss = cross-entropy(logits, n),

trained by plain SGD with separate learning rates η_Y (decoder) and η_Z (attention) from Z = 0, Y = 0 (uniform
attention at initialisation). The paper normalises f by LayerNorm in its experiments and by ℓ2 in its analysis;
ℓ2 is used here.

What the theory predicts (for long sequences and η_Y ≫ η_Z): starting from uniform attention, the logits z_{m,l}
of common tokens fall and those of distinct tokens rise ("scan"); among distinct tokens the ones that co-occur
more often with their class (larger P(l|n)) end with more attention; the growth of the logits then slows sharply
and the attention freezes ("snap"), sparse but not one-hot. The attention entropy H(c) = −Σ_l c_l log c_l
therefore starts at log(T − 1) and decreases over training.

Probes: :func:`attention_entropy` (per-row entropy of attention maps, with an optional mask of excluded
positions), :func:`token_attention` (the attention mass each token type receives in a sequence) and
:func:`train_scan_snap`, which records the loss, the mean attention entropy on a fixed probe batch and the logit
table Z at chosen steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.errors import SeqzooError, choice_error

SPLITS = {"train": 0, "val": 1, "test": 2}


def _positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SeqzooError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


class SequenceClasses:
    """Tian et al.'s sequence-class data (see the module docstring); deterministic per ``(seed, split, index)``.

    Batches: ``context [B, T−1]`` contextual token ids in 0 … M−1, ``query [B]`` in 0 … Q−1, ``target [B]``
    (the class) in 0 … K−1."""

    def __init__(self, *, n_classes: int = 8, n_queries: int = 2, n_distinct: int = 10, n_common: int = 10,
                 common_prob: float = 0.5, seq_len: int = 128, seed: int = 0):
        self.n_classes = _positive_int("n_classes", n_classes)
        self.n_queries = _positive_int("n_queries", n_queries)
        self.n_distinct = _positive_int("n_distinct", n_distinct, 2)
        self.n_common = _positive_int("n_common", n_common, 0)
        self.seq_len = _positive_int("seq_len", seq_len, 2)
        if self.n_queries > self.n_classes:
            raise SeqzooError(f"n_queries must be <= n_classes={n_classes}, got {n_queries}")
        if not isinstance(common_prob, (int, float)) or not 0.0 <= common_prob < 1.0:
            raise SeqzooError(f"common_prob must be in [0, 1), got {common_prob!r}")
        if common_prob > 0 and self.n_common == 0:
            raise SeqzooError("common_prob > 0 needs n_common >= 1")
        self.common_prob = float(common_prob)
        self.seed = seed
        self.vocab_size = self.n_common + self.n_classes * self.n_distinct
        self.context_len = self.seq_len - 1
        self._cooc = torch.stack([self._class_distribution(n) for n in range(self.n_classes)])   # [K, M]
        self._cdf = np.cumsum(self._cooc.numpy(), axis=1)

    # -- structure ------------------------------------------------------------------------------------------------
    def query_of(self, n) -> Tensor:
        """ψ(n) = n mod Q."""
        return torch.as_tensor(n) % self.n_queries

    def common_tokens(self) -> Tensor:
        return torch.arange(self.n_common)

    def distinct_tokens(self, n: int) -> Tensor:
        """The distinct tokens of class ``n``, in order of decreasing co-occurrence P(l | n)."""
        start = self.n_common + n * self.n_distinct
        return torch.arange(start, start + self.n_distinct)

    def _class_distribution(self, n: int) -> Tensor:
        p = torch.zeros(self.vocab_size, dtype=torch.float64)
        if self.n_common:
            p[: self.n_common] = self.common_prob / self.n_common
        ranks = 1.0 / torch.arange(1, self.n_distinct + 1, dtype=torch.float64)
        p[self.distinct_tokens(n)] = (1.0 - self.common_prob) * ranks / ranks.sum()
        return p

    def cooccurrence(self, n: int | None = None) -> Tensor:
        """P(l | n) over the M contextual tokens, ``[M]`` (or ``[K, M]`` for every class when ``n`` is None)."""
        return self._cooc.clone() if n is None else self._cooc[n].clone()

    # -- sampling -------------------------------------------------------------------------------------------------
    def get_batch(self, split: str, index: int, batch_size: int) -> dict[str, Tensor]:
        if split not in SPLITS:
            raise choice_error("split", split, SPLITS)
        rng = np.random.default_rng([self.seed, SPLITS[split], index])
        target = rng.integers(0, self.n_classes, batch_size)
        u = rng.random((batch_size, self.context_len))
        context = np.empty((batch_size, self.context_len), dtype=np.int64)
        for n in np.unique(target):                                  # inverse-CDF sampling, one class at a time
            rows = target == n
            context[rows] = np.minimum(np.searchsorted(self._cdf[n], u[rows], side="right"), self.vocab_size - 1)
        target = torch.from_numpy(target).long()
        return {"context": torch.from_numpy(context).long(), "query": self.query_of(target), "target": target}


class ScanSnapModel(nn.Module):
    """The reparameterised 1-layer transformer: attention logits Z ``[Q, M]`` and decoder Y ``[K, M]``, both 0 at
    initialisation (uniform attention). ``forward(context, query) -> (logits [B, K], attention [B, T−1])``."""

    def __init__(self, n_queries: int, vocab_size: int, n_classes: int, *, dtype=torch.float64):
        super().__init__()
        self.Z = nn.Parameter(torch.zeros(n_queries, vocab_size, dtype=dtype))
        self.Y = nn.Parameter(torch.zeros(n_classes, vocab_size, dtype=dtype))

    @classmethod
    def for_data(cls, data: SequenceClasses, **kw) -> "ScanSnapModel":
        return cls(data.n_queries, data.vocab_size, data.n_classes, **kw)

    def attention(self, context: Tensor, query: Tensor) -> Tensor:
        return torch.softmax(self.Z[query.unsqueeze(1), context], dim=-1)

    def forward(self, context: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
        if context.dim() != 2 or query.shape != context.shape[:1]:
            raise SeqzooError(f"context must be [B, L] and query [B], got {list(context.shape)} and "
                              f"{list(query.shape)}")
        attn = self.attention(context, query)                                   # [B, L]
        f = token_attention(attn, context, self.Z.shape[1])                     # Σ_l c_l e_{x_l}, [B, M]
        f = f / f.norm(dim=-1, keepdim=True).clamp_min(1e-30)
        return f @ self.Y.t(), attn


def attention_entropy(attn: Tensor, mask: Tensor | None = None, *, atol: float = 1e-6) -> Tensor:
    """Entropy −Σ_l c_l log c_l (nats) of every attention row of ``attn [..., L]`` (0 log 0 = 0).

    ``mask`` (bool, same shape) marks the positions a row may attend to; masked-out positions must carry no weight.
    Rows must be non-negative and sum to 1 (within ``atol``)."""
    if mask is not None:
        if mask.shape != attn.shape:
            raise SeqzooError(f"mask must have the attention's shape {list(attn.shape)}, got {list(mask.shape)}")
        if bool((attn[~mask.bool()].abs() > atol).any()):
            raise SeqzooError("attention puts weight on masked-out positions; valid maps are 0 wherever mask is False")
    if bool((attn < -atol).any()) or not torch.allclose(attn.sum(-1), torch.ones_like(attn[..., 0]), atol=atol):
        raise SeqzooError("attention rows must be non-negative and sum to 1 (softmax outputs)")
    p = attn.clamp_min(0)
    return -torch.where(p > 0, p * p.clamp_min(1e-300).log(), torch.zeros_like(p)).sum(-1)


def token_attention(attn: Tensor, tokens: Tensor, vocab_size: int) -> Tensor:
    """Attention mass per token type: ``out[b, v] = Σ_{l: tokens[b, l] = v} attn[b, l]``, ``[B, vocab_size]``."""
    if attn.shape != tokens.shape:
        raise SeqzooError(f"attention {list(attn.shape)} and tokens {list(tokens.shape)} must have the same shape")
    out = attn.new_zeros(attn.shape[0], vocab_size)
    return out.scatter_add(1, tokens, attn)


@dataclass
class ScanSnapHistory:
    """What :func:`train_scan_snap` records: at each step in ``steps`` the training loss of that step, the mean
    attention entropy on the probe batch (over positions, and over token types) and a copy of Z."""

    steps: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    entropy: list = field(default_factory=list)
    token_entropy: list = field(default_factory=list)
    Z: list = field(default_factory=list)


def probe(model: ScanSnapModel, batch: dict[str, Tensor]) -> tuple[float, float]:
    """Mean attention entropy over positions and over token types (the mass per token) on ``batch``."""
    with torch.no_grad():
        attn = model.attention(batch["context"], batch["query"])
        per_token = token_attention(attn, batch["context"], model.Z.shape[1])
        return float(attention_entropy(attn).mean()), float(attention_entropy(per_token).mean())


def train_scan_snap(data: SequenceClasses, *, steps: int, lr_y: float, lr_z: float, batch_size: int = 128,
                    record: list[int] | None = None, probe_size: int = 256,
                    model: ScanSnapModel | None = None) -> tuple[ScanSnapModel, ScanSnapHistory]:
    """Plain SGD with learning rates ``lr_y`` (decoder) and ``lr_z`` (attention) for ``steps`` steps on the
    training split (batch ``s`` at step ``s``); records at the steps in ``record`` (default: 0 and the end)."""
    if lr_y < 0 or lr_z < 0:
        raise SeqzooError(f"learning rates must be >= 0, got lr_y={lr_y}, lr_z={lr_z}")
    model = model if model is not None else ScanSnapModel.for_data(data)
    opt = torch.optim.SGD([{"params": [model.Y], "lr": lr_y}, {"params": [model.Z], "lr": lr_z}])
    probe_batch = data.get_batch("val", 0, probe_size)
    record = sorted(set(record if record is not None else [0, steps]))
    history = ScanSnapHistory()
    last_loss = float("nan")
    for step in range(steps + 1):
        if step in record:
            entropy, token_entropy = probe(model, probe_batch)
            history.steps.append(step)
            history.loss.append(last_loss)
            history.entropy.append(entropy)
            history.token_entropy.append(token_entropy)
            history.Z.append(model.Z.detach().clone())
        if step == steps:
            break
        batch = data.get_batch("train", step, batch_size)
        logits, _ = model(batch["context"], batch["query"])
        loss = F.cross_entropy(logits, batch["target"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        last_loss = float(loss.detach())
    return model, history


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0 … n−1 with ties given their average rank."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(len(values), dtype=np.float64)
    for v in np.unique(values):
        tied = values == v
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a, b) -> float:
    """Spearman rank correlation of two 1-D sequences (Pearson correlation of their ranks, average ranks for
    ties; 0 when either is constant)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape or a.size < 2:
        raise SeqzooError(f"spearman needs two sequences of equal length >= 2, got {a.size} and {b.size}")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / np.sqrt((ra * ra).sum() * (rb * rb).sum()))


def uniform_entropy(length: int) -> float:
    return math.log(length)


__all__ = ["ScanSnapHistory", "ScanSnapModel", "SequenceClasses", "attention_entropy", "probe", "spearman",
           "token_attention", "train_scan_snap", "uniform_entropy"]
