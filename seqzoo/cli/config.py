"""The run configuration of ``seqzoo train``: ``[model]``, ``[data]``, ``[train]`` and ``[sample]`` tables."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.errors import SeqzooError
from ..models.config import ModelConfig
from ..train.config import TrainConfig


@dataclass
class DataConfig:
    """``source``: a built-in corpus name (``kjv``) or a path to a UTF-8 text file or folder."""

    source: str = "kjv"
    seq_len: int = 128
    val_fraction: float = 0.05
    seed: int = 0

    def validate(self) -> None:
        if self.seq_len < 2:
            raise SeqzooError(f"data.seq_len must be >= 2, got {self.seq_len}")


@dataclass
class SampleConfig:
    """Text generated after training (and the defaults of ``seqzoo generate``)."""

    prompt: str = "And God said"
    max_new_tokens: int = 200
    temperature: float = 0.8
    top_k: int | None = None
    top_p: float | None = 0.95
    seed: int = 0


@dataclass
class RunConfig:
    name: str = "run"
    out_dir: str = ""  # default: runs/<name>
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def run_dir(self) -> str:
        return self.out_dir or f"runs/{self.name}"
