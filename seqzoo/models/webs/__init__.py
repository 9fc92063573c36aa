"""Generators of 3D spider-web graphs (Lu, Lee and Buehler, PNAS 2023, arXiv 2304.05137): the conditional
autoregressive graph transformer (Model 3) and the two conditional analog diffusion models (Models 1 and 2), with
training, generation, evaluation and checkpoints. Data, tokenizer and features: :mod:`seqzoo.tasks.webs`."""

from .categorical import GraphWebCatTransformer
from .diffusion import GraphDiffusion, alpha_bar
from .graph_transformer import GraphWebTransformer
from .training import GENERATORS, WebGenerator, build_generator, evaluate_control, load_generator, save_generator, \
    train_generator

__all__ = ["GENERATORS", "GraphDiffusion", "GraphWebCatTransformer", "GraphWebTransformer", "WebGenerator",
           "alpha_bar", "build_generator",
           "evaluate_control", "load_generator", "save_generator", "train_generator"]
