"""In-context language learning (ICLL): random DFA languages, REGBENCH-style (Akyürek et al., ICML 2024,
arXiv 2401.12973): the DFA sampler and validity oracle, in-context n-gram baselines and the batch source."""

from .data import ICLL, SEPARATOR, ICLLSample
from .dfa import DFA, RandomDFASampler
from .ngram import ngram_predict, ngram_probabilities

__all__ = ["DFA", "ICLL", "ICLLSample", "RandomDFASampler", "SEPARATOR", "ngram_predict", "ngram_probabilities"]
