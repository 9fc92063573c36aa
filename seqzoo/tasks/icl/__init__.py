"""In-context learning tasks: regression over function classes (Garg et al.; Akyürek et al.; Yadlowsky et al.),
reference learners (OLS, ridge, gradient descent, k-NN, averaging) and von Oswald et al.'s linear self-attention
that performs a gradient step."""

from .learners import LEARNERS, averaging, gd, knn, ols, prefix_predictions, ridge, tune_gd_lr
from .lsa_gd import LinearSelfAttention, LSARegressor, gd_construction
from .mixtures import MIXTURE_CLASSES, MixtureICL, bayes_linear
from .regression import FUNCTION_CLASSES, Blend, ICLRegression, Prompts

__all__ = ["Blend", "FUNCTION_CLASSES", "ICLRegression", "LEARNERS", "LSARegressor", "LinearSelfAttention",
           "MIXTURE_CLASSES", "MixtureICL", "Prompts", "bayes_linear", "averaging", "gd", "gd_construction", "knn", "ols", "prefix_predictions", "ridge",
           "tune_gd_lr"]
