"""Chain-of-thought tasks (Feng et al., NeurIPS 2023, arXiv 2305.15408): arithmetic over F_p answered directly or
with a step-by-step derivation."""

from .arithmetic import FORMATS, Arithmetic, apply, cot_length, derivation, evaluate, parse, random_expression, render

__all__ = ["Arithmetic", "FORMATS", "apply", "cot_length", "derivation", "evaluate", "parse", "random_expression",
           "render"]
