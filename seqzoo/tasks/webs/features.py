"""The 14 geometric design features of a web graph (the conditioning vector) and the R² of design control.

Paper: "Modeling and design of heterogeneous hierarchical bioinspired spider web structures using generative deep
learning and additive manufacturing", Lu, Lee and Buehler, PNAS 2023, arXiv 2304.05137. The models are conditioned
on 14 scalar geometric targets; the paper names node count, average edge length and average node degree among them
("and others"). Its exact list is stored inside its data file, which is not available here, so the other eleven
below are our choice of plain geometric descriptors of a 3D graph:

    n_nodes             N
    n_edges             |E|
    mean_degree         2|E| / N
    max_degree          max_i deg(i)
    mean_edge_length    ℓ̄ = (1/|E|) Σ_(i,j)∈E ‖p_i − p_j‖
    std_edge_length     standard deviation of the edge lengths
    total_edge_length   Σ_(i,j)∈E ‖p_i − p_j‖        (silk used)
    extent_x/y/z        max − min of each coordinate
    radius_of_gyration  sqrt((1/N) Σ_i ‖p_i − p̄‖²)
    flatness            sqrt(λ_3 / λ_1) of the position covariance (0 = planar sheet, 1 = isotropic tangle)
    normal_z            |n_z|, n the covariance eigenvector of λ_3 (1 = horizontal sheet, 0 = vertical orb)
    leaf_fraction       fraction of degree-1 nodes (anchor / hanging threads)

A graph with no nodes has all features 0 (so a failed generation still scores). Design control is scored per
feature as R² = 1 − Σ_k (y_k − ŷ_k)² / Σ_k (y_k − ȳ)², y the target and ŷ the feature of the generated graph.
"""

from __future__ import annotations

import numpy as np

from ...core.errors import SeqzooError
from .graph import WebGraph

FEATURE_NAMES = ("n_nodes", "n_edges", "mean_degree", "max_degree", "mean_edge_length", "std_edge_length",
                 "total_edge_length", "extent_x", "extent_y", "extent_z", "radius_of_gyration", "flatness",
                 "normal_z", "leaf_fraction")
N_FEATURES = len(FEATURE_NAMES)


def web_features(graph: WebGraph) -> np.ndarray:
    """The 14 features of ``graph`` as a float64 vector in the order of :data:`FEATURE_NAMES`."""
    n = graph.n_nodes
    out = np.zeros(N_FEATURES)
    if n == 0:
        return out
    deg = graph.degrees()
    lengths = graph.edge_lengths()
    centred = graph.pos - graph.pos.mean(0)
    eigval, eigvec = np.linalg.eigh(centred.T @ centred / n)      # ascending
    eigval = np.clip(eigval, 0.0, None)
    out[0], out[1] = n, graph.n_edges
    out[2], out[3] = 2.0 * graph.n_edges / n, deg.max()
    if len(lengths):
        out[4], out[5], out[6] = lengths.mean(), lengths.std(), lengths.sum()
    out[7:10] = graph.pos.max(0) - graph.pos.min(0)
    out[10] = np.sqrt((centred ** 2).sum(1).mean())
    out[11] = np.sqrt(eigval[0] / eigval[2]) if eigval[2] > 1e-12 else 0.0
    out[12] = abs(eigvec[2, 0]) if eigval[2] > 1e-12 else 0.0
    out[13] = float(np.mean(deg == 1))
    return out


def feature_matrix(graphs) -> np.ndarray:
    return np.stack([web_features(g) for g in graphs]) if len(graphs) else np.zeros((0, N_FEATURES))


def check_conditions(cond, where: str = "condition") -> np.ndarray:
    """``cond`` as a float64 ``[B, 14]`` array; a one-line error for the wrong number of features or NaNs."""
    arr = np.asarray(cond, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != N_FEATURES:
        got = arr.shape[-1] if arr.ndim >= 1 else 0
        raise SeqzooError(f"{where} must have {N_FEATURES} features per web ({', '.join(FEATURE_NAMES)}), got "
                          f"{got}")
    if not np.isfinite(arr).all():
        raise SeqzooError(f"{where} holds NaN or inf; every design target must be a finite number")
    return arr


def r2_per_feature(target: np.ndarray, realised: np.ndarray) -> np.ndarray:
    """R² of ``realised`` against ``target`` for each column (NaN where the target does not vary)."""
    target, realised = np.asarray(target, float), np.asarray(realised, float)
    if target.shape != realised.shape:
        raise SeqzooError(f"targets {list(target.shape)} and realised features {list(realised.shape)} differ in shape")
    ss_res = ((target - realised) ** 2).sum(0)
    ss_tot = ((target - target.mean(0)) ** 2).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ss_tot > 1e-12, 1.0 - ss_res / np.where(ss_tot > 1e-12, ss_tot, 1.0), np.nan)


class FeatureScaler:
    """z-score of each feature with the training set's mean and standard deviation (stored in checkpoints)."""

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.where(np.asarray(std, dtype=np.float64) > 1e-8, np.asarray(std, dtype=np.float64), 1.0)

    @classmethod
    def fit(cls, features: np.ndarray) -> "FeatureScaler":
        return cls(features.mean(0), features.std(0))

    def transform(self, features) -> np.ndarray:
        return (check_conditions(features) - self.mean) / self.std

    def state(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}


__all__ = ["FEATURE_NAMES", "FeatureScaler", "N_FEATURES", "check_conditions", "feature_matrix", "r2_per_feature",
           "web_features"]
