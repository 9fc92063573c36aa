"""Model configuration (a dataclass loaded from the ``[model]`` table of a TOML config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..core.errors import SeqzooError
from ..core.registry import list_mixers


@dataclass
class ModelConfig:
    """Shape of a :class:`~seqzoo.models.CausalLM`.

    ``mixer`` is one registered mixer name for every layer, or a list used as a repeating pattern over the layers
    (``["deltanet", "attention"]`` with 4 layers gives D, A, D, A), so hybrids are configuration.
    ``mixer_options`` maps a mixer name to keyword options for it, e.g. ``{attention = {window = 64}}``.
    ``input_dim``/``output_dim`` switch the token embedding/head to linear adapters for continuous data.
    """

    vocab_size: int = 256
    d_model: int = 128
    n_layers: int = 4
    mixer: str | list[str] = "attention"
    mixer_options: dict = field(default_factory=dict)
    ffn: Literal["glu", "mlp", "moe", "none"] = "glu"
    ffn_hidden: int | None = None  # default: 8/3·d_model rounded to 8 for GLU, 4·d_model for MLP
    # sparse mixture-of-experts FFN (ffn = "moe"; seqzoo/models/moe.py): routed experts, experts per token, a
    # sigmoid-gated shared expert, the load-balancing loss weight α and the capacity factor (None = no limit)
    moe_experts: int = 8
    moe_top_k: int = 2
    moe_shared_expert: bool = True
    moe_aux_weight: float = 0.02
    moe_capacity_factor: float | None = None
    tie_embeddings: bool = True
    input_dim: int | None = None
    output_dim: int | None = None
    norm_eps: float = 1e-5
    init_std: float = 0.02

    def layer_mixers(self) -> list[str]:
        pattern = [self.mixer] if isinstance(self.mixer, str) else list(self.mixer)
        if not pattern or self.n_layers % len(pattern):
            raise SeqzooError(f"model.mixer pattern of length {len(pattern)} must divide n_layers={self.n_layers}")
        return [pattern[i % len(pattern)] for i in range(self.n_layers)]

    def ffn_options(self) -> dict:
        """Keyword options for :func:`~seqzoo.models.layers.build_ffn` (only the MoE FFN takes any)."""
        if self.ffn != "moe":
            return {}
        return {"n_experts": self.moe_experts, "top_k": self.moe_top_k, "shared_expert": self.moe_shared_expert,
                "aux_weight": self.moe_aux_weight, "capacity_factor": self.moe_capacity_factor}

    def validate(self) -> None:
        for key in ("vocab_size", "d_model", "n_layers"):
            if getattr(self, key) <= 0:
                raise SeqzooError(f"model.{key} must be positive, got {getattr(self, key)}")
        if self.ffn == "moe":
            if self.moe_experts <= 0 or not 1 <= self.moe_top_k <= self.moe_experts:
                raise SeqzooError(f"model.moe_top_k={self.moe_top_k} must lie in 1 … moe_experts "
                                  f"(moe_experts={self.moe_experts} must be positive)")
            if self.moe_aux_weight < 0:
                raise SeqzooError(f"model.moe_aux_weight must be non-negative, got {self.moe_aux_weight}")
            if self.moe_capacity_factor is not None and self.moe_capacity_factor <= 0:
                raise SeqzooError(f"model.moe_capacity_factor must be positive or None, got {self.moe_capacity_factor}")
        valid = list_mixers()
        for name in self.layer_mixers():
            if name not in valid:
                raise SeqzooError(f"unknown mixer {name!r} in model.mixer; valid: {', '.join(valid)}")
        for name, opts in self.mixer_options.items():
            if name not in valid:
                raise SeqzooError(f"model.mixer_options names unknown mixer {name!r}; valid: {', '.join(valid)}")
            if not isinstance(opts, dict):
                raise SeqzooError(f"model.mixer_options.{name} must be a table of options, got {opts!r}")
