"""A deterministic synthetic "physics" of protein sequences: per-residue secondary structure, overall content and a
solubility class, computed from the sequence alone, so that forward tasks have exact labels at any scale and an
inverse design can be scored in closed loop (re-run the physics on the designed sequence).

Used by the reproduction of "Generative Pretrained Autoregressive Transformer Graph Neural Network applied to the
Analysis and Discovery of Novel Proteins" (Buehler 2023, arXiv 2305.04934), whose real labels (DSSP on folded
structures, measured solubility) are out of reach offline. This is a stand-in, not a structure predictor.

The rule (fixed before any model was trained):

* Propensities: Chou & Fasman (1978) helix ``Pα(a)`` and sheet ``Pβ(a)`` as commonly tabulated; hydropathy:
  Kyte & Doolittle (1982) ``KD(a)``.
* Window averages over the 5 residues centred on i (truncated at the ends):
  ``ᾱ_i = mean_{|j−i|≤2} Pα(s_j)``, ``β̄_i = mean_{|j−i|≤2} Pβ(s_j)``.
* Label ``H`` if ``ᾱ_i > 1.03`` and ``ᾱ_i ≥ β̄_i``; else ``E`` if ``β̄_i > 1.05`` and ``β̄_i > ᾱ_i``; else ``C``
  (the Chou–Fasman nucleation thresholds).
* Minimum element lengths: maximal runs of ``H`` shorter than 4 and of ``E`` shorter than 3 become ``C``.
* Content: the fractions ``(f_H, f_E, f_C)`` of the labels (they sum to 1).
* Solubility: GRAVY ``= mean_i KD(s_i)``; class 1 ("soluble") if GRAVY < ``SOLUBLE_GRAVY`` else 0.
  ``SOLUBLE_GRAVY`` is the median GRAVY of :func:`random_protein` sequences (estimated once on 20,000 of them).

Synthetic proteins (:func:`random_protein`): length ``L ~ U{20 … 60}``; the sequence is a run of segments of
length ``U{3 … 10}``, each of a type helix/sheet/coil drawn with per-protein weights ``w ~ Dirichlet(1, 1, 1)``;
residues of a segment are drawn from ``p(a) ∝ exp(κ s_t(a))`` with ``κ = 4``, ``s_H = Pα − 1``, ``s_E = Pβ − 1``,
``s_C = 1 − (Pα + Pβ)/2``. This gives a wide spread of contents (all-helix to all-sheet) for the inverse task.
"""

from __future__ import annotations

import math
import random

from ...core.errors import SeqzooError
from .sequences import AMINO_ACIDS, validate_protein

HELIX_PROPENSITY = {"A": 1.42, "R": 0.98, "N": 0.67, "D": 1.01, "C": 0.70, "Q": 1.11, "E": 1.51, "G": 0.57,
                    "H": 1.00, "I": 1.08, "L": 1.21, "K": 1.16, "M": 1.45, "F": 1.13, "P": 0.57, "S": 0.77,
                    "T": 0.83, "W": 1.08, "Y": 0.69, "V": 1.06}
SHEET_PROPENSITY = {"A": 0.83, "R": 0.93, "N": 0.89, "D": 0.54, "C": 1.19, "Q": 1.10, "E": 0.37, "G": 0.75,
                    "H": 0.87, "I": 1.60, "L": 1.30, "K": 0.74, "M": 1.05, "F": 1.38, "P": 0.55, "S": 0.75,
                    "T": 1.19, "W": 1.37, "Y": 1.47, "V": 1.70}
HYDROPATHY = {"A": 1.8, "R": -4.5, "N": -3.5, "D": -3.5, "C": 2.5, "Q": -3.5, "E": -3.5, "G": -0.4, "H": -3.2,
              "I": 4.5, "L": 3.8, "K": -3.9, "M": 1.9, "F": 2.8, "P": -1.6, "S": -0.8, "T": -0.7, "W": -0.9,
              "Y": -1.3, "V": 4.2}

SS_CLASSES = "HEC"
WINDOW_HALF = 2
HELIX_THRESHOLD, SHEET_THRESHOLD = 1.03, 1.05
MIN_HELIX, MIN_SHEET = 4, 3
SOLUBLE_GRAVY = 0.06  # median GRAVY of random_protein (0.057 on 20,000 sequences, seed 0)
MIN_LENGTH, MAX_LENGTH = 20, 60
SEGMENT_MIN, SEGMENT_MAX = 3, 10
KAPPA = 4.0


def _window_means(seq: str, table: dict[str, float]) -> list[float]:
    values = [table[a] for a in seq]
    out = []
    for i in range(len(values)):
        lo, hi = max(0, i - WINDOW_HALF), min(len(values), i + WINDOW_HALF + 1)
        out.append(sum(values[lo:hi]) / (hi - lo))
    return out


def _drop_short_runs(labels: list[str], label: str, min_len: int) -> None:
    i = 0
    while i < len(labels):
        if labels[i] != label:
            i += 1
            continue
        j = i
        while j < len(labels) and labels[j] == label:
            j += 1
        if j - i < min_len:
            labels[i:j] = ["C"] * (j - i)
        i = j


def secondary_structure(seq: str) -> str:
    """Per-residue ``H``/``E``/``C`` string of ``seq`` under the synthetic physics (see the module docstring)."""
    seq = validate_protein(seq)
    alpha, beta = _window_means(seq, HELIX_PROPENSITY), _window_means(seq, SHEET_PROPENSITY)
    labels = []
    for a, b in zip(alpha, beta):
        if a > HELIX_THRESHOLD and a >= b:
            labels.append("H")
        elif b > SHEET_THRESHOLD and b > a:
            labels.append("E")
        else:
            labels.append("C")
    _drop_short_runs(labels, "H", MIN_HELIX)
    _drop_short_runs(labels, "E", MIN_SHEET)
    return "".join(labels)


def check_ss(ss: str, what: str = "secondary structure") -> str:
    """Validate an ``H``/``E``/``C`` string (one-line error naming the first bad character)."""
    if not isinstance(ss, str) or not ss:
        raise SeqzooError(f"{what} must be a non-empty string of {SS_CLASSES}, got {ss!r}")
    for i, c in enumerate(ss):
        if c not in SS_CLASSES:
            raise SeqzooError(f"{what} has {c!r} at position {i + 1}; valid: {SS_CLASSES}")
    return ss


def content(ss: str) -> tuple[float, float, float]:
    """Fractions ``(f_H, f_E, f_C)`` of a secondary-structure string."""
    check_ss(ss)
    n = len(ss)
    return ss.count("H") / n, ss.count("E") / n, ss.count("C") / n


def sequence_content(seq: str) -> tuple[float, float, float]:
    """Content of ``seq`` under the physics: ``content(secondary_structure(seq))``."""
    return content(secondary_structure(seq))


def gravy(seq: str) -> float:
    """Mean Kyte–Doolittle hydropathy."""
    seq = validate_protein(seq)
    return sum(HYDROPATHY[a] for a in seq) / len(seq)


def solubility_class(seq: str) -> int:
    """1 ("soluble") if GRAVY < ``SOLUBLE_GRAVY``, else 0."""
    return int(gravy(seq) < SOLUBLE_GRAVY)


def _type_distribution(kind: str) -> list[float]:
    scores = []
    for a in AMINO_ACIDS:
        pa, pb = HELIX_PROPENSITY[a], SHEET_PROPENSITY[a]
        s = {"H": pa - 1.0, "E": pb - 1.0, "C": 1.0 - (pa + pb) / 2}[kind]
        scores.append(math.exp(KAPPA * s))
    total = sum(scores)
    return [s / total for s in scores]


_TYPE_DIST = {kind: _type_distribution(kind) for kind in SS_CLASSES}


def random_protein(rng: random.Random, min_length: int = MIN_LENGTH, max_length: int = MAX_LENGTH) -> str:
    """A synthetic protein from the segment generator (module docstring), using only ``rng``."""
    if not 1 <= min_length <= max_length:
        raise SeqzooError(f"need 1 <= min_length <= max_length, got {min_length}, {max_length}")
    length = rng.randint(min_length, max_length)
    weights = [rng.gammavariate(1.0, 1.0) for _ in SS_CLASSES]
    out: list[str] = []
    while len(out) < length:
        kind = rng.choices(SS_CLASSES, weights=weights)[0]
        seg = rng.randint(SEGMENT_MIN, SEGMENT_MAX)
        out.extend(rng.choices(AMINO_ACIDS, weights=_TYPE_DIST[kind], k=seg))
    return "".join(out[:length])


def uniform_random_protein(rng: random.Random, length: int) -> str:
    """``length`` residues drawn uniformly from the 20 amino acids (the random baseline of the inverse task)."""
    return "".join(rng.choices(AMINO_ACIDS, k=length))


__all__ = ["HELIX_PROPENSITY", "SHEET_PROPENSITY", "HYDROPATHY", "SS_CLASSES", "SOLUBLE_GRAVY", "check_ss", "content",
           "gravy", "random_protein", "secondary_structure", "sequence_content", "solubility_class",
           "uniform_random_protein"]
