"""Spider-web graph generation (Lu, Lee and Buehler, PNAS 2023, arXiv 2304.05137): procedural 3D webs, their 14
design features, the node-token graph tokenizer, assembly along curves, export and plots.

Models (the conditional AR graph transformer and the two diffusion generators) live in
:mod:`seqzoo.models.webs`; the CLI is ``seqzoo webs``; the reproduction is ``seqzoo repro spider-web-graphgen``.
"""

from .assembly import assemble, build_curve
from .export import export_web, read_graphml, write_graphml, write_obj, write_ply
from .features import FEATURE_NAMES, N_FEATURES, FeatureScaler, feature_matrix, r2_per_feature, web_features
from .graph import WebGraph, make_graph, same_graph
from .procedural import random_web, web_dataset
from .tokenizer import WebTokenizer

__all__ = ["FEATURE_NAMES", "N_FEATURES", "FeatureScaler", "WebGraph", "WebTokenizer", "assemble", "build_curve",
           "export_web", "feature_matrix", "make_graph", "r2_per_feature", "random_web", "read_graphml", "same_graph",
           "web_dataset", "web_features", "write_graphml", "write_obj", "write_ply"]
