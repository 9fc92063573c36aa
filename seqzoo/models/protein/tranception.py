"""Tranception: an autoregressive protein language model scored in both directions, with inference-time retrieval.

Paper: "Tranception: protein fitness prediction with autoregressive transformers and inference-time retrieval",
Notin, Dias, Frazer, Marchena-Hurtado, Gomez, Marks and Gal, ICML 2022, arXiv 2205.13760.

Model. A :class:`~seqzoo.models.CausalLM` over 21 tokens (the 20 amino acids and a separator ``<sep>`` that opens
and closes every sequence) whose layers use the registered ``tranception`` mixer
(:mod:`seqzoo.mixers.attention.tranception`: convolutional head groups and grouped ALiBi). ``mixer="attention"``
gives the vanilla-GPT baseline with the same width, depth, heads and FFN. Training minimises next-token
cross-entropy on ``<sep> x_1 … x_L <sep>``, each sequence reversed with probability 1/2 (as in the paper), so the
same network models both directions.

Scores. For a sequence ``x`` read in direction ``d`` (left-to-right, or right-to-left: ``x`` reversed), with
``c(t)`` the wild-type column of residue ``t`` (None for an inserted residue):

    log P_d(x) = Σ_{t=1}^{L} ℓ_t + (1 − α) log p_AR(<sep> | x),
    ℓ_t = (1 − α) log p_AR(x_t | x_<t) + α log f_{c(t)}(x_t)     if retrieval is on and c(t) is not None
    ℓ_t = log p_AR(x_t | x_<t)                                    otherwise (inserted residues, no retrieval)

(α = 0 without retrieval; the end token has no MSA column, so its prior term is log 1 = 0), where ``f`` is the
MSA prior of :mod:`seqzoo.tasks.protein.msa_prior` (no renormalisation after the fusion, as in the official
code). The end token is the one deliberate difference from the official code, which keeps it at full AR weight;
here α = 1 then gives exactly the site-independent closed form. The official code also averages log-likelihoods per
token where we sum them (the same ranking for substitutions). The fitness score of a mutant is the
log-likelihood ratio averaged over the two directions:

    score(mut) = ½ Σ_{d ∈ {→, ←}} [ log P_d(mut) − log P_d(wt) ]

``bidirectional=False`` keeps only the left-to-right term. α = 0 is the pure AR score; at α = 1 every AR term but
those of inserted residues vanishes, leaving exactly ``Σ_i [log f_i(mut_i) − log f_i(wt_i)]`` for substitutions
and deletions. Long proteins would need sliding windows (the paper's 1,024-token windows); this
implementation scores whole sequences and says so in an error past ``max_length``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ...core.errors import SeqzooError
from ...tasks.protein.mutations import align_to_wild_type, apply_mutant
from ...tasks.protein.sequences import AA_INDEX, AMINO_ACIDS, validate_protein
from ..causal_lm import CausalLM
from ..config import ModelConfig

SEP = len(AMINO_ACIDS)  # token id of <sep>
VOCAB = SEP + 1


@dataclass
class ProteinLMConfig:
    """Shape of a protein LM: ``mixer`` is ``"tranception"`` or any registered causal mixer (``"attention"`` =
    vanilla GPT); ``mixer_options`` go to that mixer; ``ffn`` as in :class:`~seqzoo.models.ModelConfig`."""

    mixer: str = "tranception"
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    ffn: str = "mlp"
    mixer_options: dict = field(default_factory=dict)
    max_length: int = 1024

    def model_config(self) -> ModelConfig:
        options = {"n_heads": self.n_heads, **self.mixer_options}
        return ModelConfig(vocab_size=VOCAB, d_model=self.d_model, n_layers=self.n_layers, mixer=self.mixer,
                           mixer_options={self.mixer: options}, ffn=self.ffn, tie_embeddings=True)


def encode(seq: str, reverse: bool = False) -> list[int]:
    """Token ids ``<sep> x … <sep>`` of a validated sequence (reversed residues when ``reverse``)."""
    ids = [AA_INDEX[a] for a in validate_protein(seq)]
    return [SEP] + (ids[::-1] if reverse else ids) + [SEP]


class ProteinLM(nn.Module):
    """A causal LM over amino acids (:class:`ProteinLMConfig`), with ``loss(batch)`` for the trainer and
    per-position log-probabilities for scoring."""

    def __init__(self, cfg: ProteinLMConfig):
        super().__init__()
        self.cfg = cfg
        self.lm = CausalLM(cfg.model_config())

    def forward(self, inputs: Tensor, state=None):
        return self.lm(inputs, state)

    def loss(self, batch: dict) -> Tensor:
        return self.lm.loss(batch)

    def num_parameters(self) -> int:
        return self.lm.num_parameters()

    @torch.no_grad()
    def residue_log_probs(self, seqs: list[str], *, reverse: bool = False, batch_size: int = 256) -> list[Tensor]:
        """For each sequence (read reversed when ``reverse``), ``[len + 1]`` float64 log-probabilities of its
        residues in reading order followed by the end ``<sep>``."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        out: list[Tensor] = []
        try:
            for start in range(0, len(seqs), batch_size):
                chunk = [encode(s, reverse) for s in seqs[start:start + batch_size]]
                width = max(len(c) for c in chunk)
                if width - 2 > self.cfg.max_length:
                    raise SeqzooError(f"a sequence of {width - 2} residues exceeds max_length="
                                      f"{self.cfg.max_length}; sliding-window scoring is not implemented")
                ids = torch.full((len(chunk), width), SEP, dtype=torch.long)
                for k, c in enumerate(chunk):
                    ids[k, :len(c)] = torch.tensor(c)
                ids = ids.to(device)
                logits, _ = self(ids[:, :-1])
                logp = torch.log_softmax(logits.double(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1).cpu()
                out.extend(logp[k, :len(c) - 1] for k, c in enumerate(chunk))
        finally:
            self.train(was_training)
        return out


class ProteinFamilyData:
    """Batches of a protein family for :class:`~seqzoo.train.Trainer` (``get_batch(split, index, batch_size)``,
    deterministic): inputs ``<sep> x``, targets ``x <sep>``, each row reversed with probability ``reverse_prob``;
    rows of different lengths are right-padded with ``<sep>`` and masked out of the loss."""

    def __init__(self, seqs: list[str], *, val_fraction: float = 0.05, reverse_prob: float = 0.5, seed: int = 0):
        if not seqs:
            raise SeqzooError("the training family is empty; give at least one protein sequence")
        seqs = [validate_protein(s, f"training sequence {k + 1}") for k, s in enumerate(seqs)]
        order = list(range(len(seqs)))
        random.Random(seed).shuffle(order)
        n_val = int(round(val_fraction * len(seqs))) if len(seqs) > 1 else 0
        self.splits = {"val": [seqs[i] for i in order[:n_val]] or [seqs[order[0]]],
                       "train": [seqs[i] for i in order[n_val:]]}
        self.reverse_prob = reverse_prob
        self.seed = seed
        self.seq_len = max(len(s) for s in seqs) + 1

    def get_batch(self, split: str, index: int, batch_size: int) -> dict:
        if split not in self.splits:
            raise SeqzooError(f"unknown split {split!r}; valid: train, val")
        pool = self.splits[split]
        rng = random.Random(f"{self.seed}:{split}:{index}")
        rows = [encode(pool[rng.randrange(len(pool))], rng.random() < self.reverse_prob) for _ in range(batch_size)]
        width = max(len(r) for r in rows)
        ids = torch.full((batch_size, width), SEP, dtype=torch.long)
        mask = torch.zeros(batch_size, width - 1, dtype=torch.bool)
        for k, r in enumerate(rows):
            ids[k, :len(r)] = torch.tensor(r)
            mask[k, :len(r) - 1] = True
        return {"inputs": ids[:, :-1], "targets": ids[:, 1:], "loss_mask": mask}


class FitnessScorer:
    """Zero-shot fitness of mutants of ``wild_type``: bidirectional log-likelihood ratios of ``model`` fused with
    the MSA log-prior ``log_prior [L, 20]`` (optional) at weight ``alpha`` (module docstring)."""

    def __init__(self, model: ProteinLM | None, wild_type: str, *, log_prior: Tensor | None = None,
                 alpha: float = 0.6, bidirectional: bool = True, batch_size: int = 256):
        self.wild_type = validate_protein(wild_type, "wild-type sequence")
        if not 0.0 <= float(alpha) <= 1.0:
            raise SeqzooError(f"alpha must lie in [0, 1], got {alpha}")
        if log_prior is not None and tuple(log_prior.shape) != (len(self.wild_type), len(AMINO_ACIDS)):
            raise SeqzooError(f"the MSA prior has shape {list(log_prior.shape)}; expected "
                              f"[{len(self.wild_type)}, {len(AMINO_ACIDS)}] for this wild type")
        if model is None and (log_prior is None or alpha != 1.0):
            raise SeqzooError("without a model only the site-independent score (a prior with alpha = 1) exists")
        self.model = model
        self.log_prior = None if log_prior is None else log_prior.double().cpu()
        self.alpha = float(alpha) if log_prior is not None else 0.0
        self.bidirectional = bidirectional
        self.batch_size = batch_size
        # per-direction cache of AR log-probabilities by sequence; scorers of one model may share it
        self.ar_cache: dict[bool, dict[str, Tensor]] = {}

    def sequence_log_prob(self, seqs: list[str], columns: list[list[int | None]], reverse: bool) -> list[float]:
        """``log P_d(x)`` of each sequence in direction ``reverse`` with retrieval fusion (module docstring)."""
        a = self.alpha
        inserted = any(c is None for cols in columns for c in cols)
        if self.model is not None and (a < 1.0 or inserted):
            cache = self.ar_cache.setdefault(reverse, {})
            todo = sorted({s for s in seqs if s not in cache})
            for s, lp in zip(todo, self.model.residue_log_probs(todo, reverse=reverse, batch_size=self.batch_size)):
                cache[s] = lp
            ar = [cache[s] for s in seqs]
        else:
            ar = [torch.zeros(len(s) + 1, dtype=torch.float64) for s in seqs]
        out = []
        for s, cols, lp in zip(seqs, columns, ar):
            residues, cols = (s[::-1], cols[::-1]) if reverse else (s, cols)
            total = (1.0 - a) * float(lp[-1])  # the end token (no MSA column: its prior term is log 1 = 0)
            for t, (res, col) in enumerate(zip(residues, cols)):
                if col is None or self.log_prior is None:
                    total += float(lp[t])
                else:
                    total += (1.0 - a) * float(lp[t]) + a * float(self.log_prior[col, AA_INDEX[res]])
            out.append(total)
        return out

    def score_sequences(self, seqs: list[str], columns: list[list[int | None]] | None = None) -> list[float]:
        """Scores of full mutated sequences (column maps by alignment to the wild type when not given)."""
        seqs = [validate_protein(s, f"mutated sequence {k + 1}") for k, s in enumerate(seqs)]
        if columns is None:
            columns = [align_to_wild_type(s, self.wild_type) for s in seqs]
        wt_cols = list(range(len(self.wild_type)))
        directions = (False, True) if self.bidirectional else (False,)
        scores = [0.0] * len(seqs)
        for reverse in directions:
            wt = self.sequence_log_prob([self.wild_type], [wt_cols], reverse)[0]
            for k, value in enumerate(self.sequence_log_prob(seqs, columns, reverse)):
                scores[k] += (value - wt) / len(directions)
        return scores

    def score(self, mutants: list[str]) -> list[float]:
        """Scores of mutant strings (``A12G:C30F``, indels ``A12del``, ``A12insGS``) of the wild type."""
        applied = [apply_mutant(self.wild_type, m) for m in mutants]
        return self.score_sequences([s for s, _ in applied], [c for _, c in applied])


__all__ = ["FitnessScorer", "ProteinFamilyData", "ProteinLM", "ProteinLMConfig", "SEP", "VOCAB", "encode"]
