"""Fitness assays in the ProteinGym format, the offline ``mavenn`` assays, Spearman's ρ and a scatter plot.

ProteinGym (Notin et al., the benchmark introduced with Tranception, arXiv 2205.13760) stores one deep mutational
scan per CSV with columns ``mutant`` (e.g. ``A12G:C30F``), ``mutated_sequence`` and ``DMS_score`` (higher = fitter);
indel assays may leave ``mutant`` out. Models are compared by Spearman's rank correlation between their scores and
``DMS_score``:

    ρ = Pearson( rank(x), rank(y) )        (ties get their average rank)

``mavenn`` 1.1.4 (installed with ``pip install --no-deps mavenn==1.1.4``; never downloaded at run time) ships
published assays as ``mavenn/examples/datasets/*.csv.gz`` with columns ``set``, ``dist``, ``y``, ``x``:
GB1 (``gb1``, Olson et al. 2014, the assay of ProteinGym's SPG1_STRSG_Olson_2014; 55 residues, singles and
doubles), TDP-43 (``tdp43``, Bolognesi et al. 2019) and Aβ42 (``amyloid``, Seuma et al. 2021). They are converted
to the ProteinGym columns (plus ``set`` and ``dist``); the wild type is the per-position most common residue of
the single mutants (each single differs from it at one position).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from ...core.errors import SeqzooError, choice_error
from .mutations import apply_mutant, mutant_from_sequences
from .sequences import validate_protein

MAVENN_ASSAYS = {"gb1": "gb1_data.csv.gz", "tdp43": "tdp43_data.csv.gz", "amyloid": "amyloid_data.csv.gz"}


def rankdata(values) -> np.ndarray:
    """Ranks 1 … n with ties given their average rank (float64)."""
    x = np.asarray(values, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    start = 0
    while start < len(x):
        stop = start + 1
        while stop < len(x) and sorted_x[stop] == sorted_x[start]:
            stop += 1
        ranks[order[start:stop]] = (start + stop + 1) / 2.0  # mean of ranks start+1 … stop
        start = stop
    return ranks


def spearman(x, y) -> float:
    """Spearman's ρ of two equal-length sequences (NaN when either is constant or shorter than 2)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise SeqzooError(f"spearman needs two 1-D arrays of the same length, got {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise SeqzooError("spearman got NaN or infinite values; drop them first")
    if len(x) < 2:
        return float("nan")
    rx, ry = rankdata(x), rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else float("nan")


def load_assay(path, wild_type: str | None = None):
    """Read a ProteinGym CSV into a DataFrame with ``mutant``, ``mutated_sequence``, ``DMS_score`` and
    ``n_mutations``; with ``wild_type``, every mutant string is checked against it and ``mutated_sequence`` is
    filled in (or checked) from it. Bad files, columns or values are one-line errors."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise SeqzooError(f"assay CSV {str(p)!r} does not exist")
    try:
        df = pd.read_csv(p)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise SeqzooError(f"assay CSV {str(p)!r} could not be parsed: {str(e).splitlines()[0]}") from None
    return check_assay(df, wild_type, source=str(p))


def check_assay(df, wild_type: str | None = None, *, source: str = "assay"):
    """Validate (and complete) an assay DataFrame; see :func:`load_assay`."""
    import pandas as pd

    if "DMS_score" not in df.columns or not ({"mutant", "mutated_sequence"} & set(df.columns)):
        raise SeqzooError(f"{source} has columns {list(df.columns)}; a ProteinGym assay needs DMS_score and "
                          "mutant and/or mutated_sequence")
    if len(df) == 0:
        raise SeqzooError(f"{source} has no rows")
    df = df.copy()
    scores = pd.to_numeric(df["DMS_score"], errors="coerce")
    bad = np.flatnonzero(~np.isfinite(scores.to_numpy(dtype=np.float64)))
    if len(bad):
        raise SeqzooError(f"{source}: row {bad[0] + 2} has DMS_score {df['DMS_score'].iloc[bad[0]]!r}; "
                          "scores must be finite numbers")
    df["DMS_score"] = scores.astype(np.float64)
    wt = validate_protein(wild_type, "wild-type sequence") if wild_type is not None else None
    if "mutant" in df.columns:
        df["mutant"] = df["mutant"].fillna("").astype(str)
    seqs, mutants, counts = [], [], []
    for k in range(len(df)):
        row = df.iloc[k]
        where = f"{source}: row {k + 2}"
        given = row["mutated_sequence"] if "mutated_sequence" in df.columns else None
        if "mutated_sequence" in df.columns:
            if not isinstance(given, str):
                raise SeqzooError(f"{where} has no mutated_sequence")
            given = validate_protein(given, f"{where} mutated_sequence")
        mutant = row["mutant"] if "mutant" in df.columns else None
        if mutant is not None and wt is not None:
            try:
                seq, _ = apply_mutant(wt, mutant)
            except SeqzooError as e:
                raise SeqzooError(f"{where}: {e}") from None
            if given is not None and given != seq:
                raise SeqzooError(f"{where}: mutated_sequence does not equal the wild type with {mutant!r} applied")
            given = seq
        elif mutant is not None:
            from .mutations import parse_mutant

            try:
                parse_mutant(mutant)
            except SeqzooError as e:
                raise SeqzooError(f"{where}: {e}") from None
        elif wt is not None and len(given) == len(wt):
            mutant = mutant_from_sequences(wt, given)
        seqs.append(given)
        mutants.append(mutant)
        counts.append(_count(mutant, given, wt))
    if "mutated_sequence" not in df.columns or wt is not None:
        if any(s is None for s in seqs):
            raise SeqzooError(f"{source} has no mutated_sequence column; give the wild type to build it")
        df["mutated_sequence"] = seqs
    df["mutant"] = mutants
    df["n_mutations"] = counts
    return df.reset_index(drop=True)


def _count(mutant, seq, wt) -> int:
    if isinstance(mutant, str):
        from .mutations import count_mutations

        return count_mutations(mutant)
    if wt is not None and seq is not None and len(seq) == len(wt):
        return sum(a != b for a, b in zip(seq, wt))
    return -1  # unknown (indel given only as a sequence)


def mavenn_dataset_dir() -> Path | None:
    """The ``mavenn/examples/datasets`` folder, or None when mavenn is not installed (never imports mavenn,
    whose import needs TensorFlow)."""
    spec = importlib.util.find_spec("mavenn")
    if spec is None or spec.origin is None:
        return None
    path = Path(os.path.dirname(spec.origin)) / "examples" / "datasets"
    return path if path.is_dir() else None


def infer_wild_type(seqs: list[str]) -> str:
    """Per-position most common residue of equal-length sequences (the wild type of a set of single mutants)."""
    import collections

    if not seqs or len({len(s) for s in seqs}) != 1:
        raise SeqzooError("infer_wild_type needs a non-empty list of sequences of one length")
    return "".join(collections.Counter(col).most_common(1)[0][0] for col in zip(*seqs))


def load_mavenn(name: str, split: str | None = None):
    """``(assay DataFrame, wild type)`` of a mavenn assay (``gb1``, ``tdp43``, ``amyloid``) in ProteinGym columns
    plus ``set`` (training/validation/test) and ``dist``; error when mavenn is not installed."""
    import pandas as pd

    if name not in MAVENN_ASSAYS:
        raise choice_error("mavenn assay", name, MAVENN_ASSAYS)
    folder = mavenn_dataset_dir()
    if folder is None:
        raise SeqzooError("mavenn is not installed; install its data with pip install --no-deps mavenn==1.1.4")
    raw = pd.read_csv(folder / MAVENN_ASSAYS[name], usecols=["set", "dist", "y", "x"])
    raw = raw[raw["x"].map(lambda s: isinstance(s, str) and "*" not in s)]
    singles = raw.loc[raw["dist"] == 1, "x"].tolist()
    wt = infer_wild_type(singles if singles else raw["x"].tolist())
    raw = raw[raw["x"].str.len() == len(wt)]
    if split is not None:
        valid = sorted(set(raw["set"].astype(str)))
        if split not in valid:
            raise SeqzooError(f"unknown split {split!r} of mavenn assay {name}; valid: {', '.join(valid)}")
        raw = raw[raw["set"] == split]
    df = pd.DataFrame({"mutant": [mutant_from_sequences(wt, s) for s in raw["x"]],
                       "mutated_sequence": raw["x"].to_numpy(), "DMS_score": raw["y"].astype(float).to_numpy(),
                       "set": raw["set"].to_numpy(), "dist": raw["dist"].to_numpy()})
    df["n_mutations"] = df["mutant"].map(lambda m: 0 if not m else m.count(":") + 1)
    return df.reset_index(drop=True), wt


def scatter_plot(predicted, true, path, *, title: str = "", groups=None) -> Path:
    """Write a PNG scatter of predicted vs true fitness (coloured by ``groups`` when given) with ρ in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    predicted, true = np.asarray(predicted, float), np.asarray(true, float)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    if groups is None:
        ax.scatter(true, predicted, s=6, alpha=0.5)
    else:
        groups = np.asarray(groups)
        for g in sorted(set(groups.tolist())):
            sel = groups == g
            ax.scatter(true[sel], predicted[sel], s=6, alpha=0.5,
                       label=f"{g} (ρ = {spearman(predicted[sel], true[sel]):.3f})")
        ax.legend(fontsize=8)
    ax.set_xlabel("true fitness")
    ax.set_ylabel("predicted score")
    ax.set_title(f"{title} ρ = {spearman(predicted, true):.3f}".strip(), fontsize=9)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


__all__ = ["MAVENN_ASSAYS", "check_assay", "infer_wild_type", "load_assay", "load_mavenn", "mavenn_dataset_dir",
           "rankdata", "scatter_plot", "spearman"]
