"""Training: one trainer for every model (AdamW groups, warm-up + cosine, clipping, bf16 autocast on GPU,
optional ``torch.compile``, evaluation, JSONL metrics, atomic safetensors checkpoints, exact resume and data
parallelism through ``torchrun``)."""

from .checkpoint import (Checkpoint, checkpoint_dir, checkpoint_info, latest_checkpoint, load_checkpoint,
                         load_model_state, save_checkpoint)
from .config import TrainConfig
from .optim import build_optimizer, build_scheduler, lr_factor, param_groups
from .trainer import Trainer, read_metrics

__all__ = ["TrainConfig", "Trainer", "read_metrics", "param_groups", "build_optimizer", "build_scheduler",
           "lr_factor", "Checkpoint", "save_checkpoint", "load_checkpoint", "latest_checkpoint", "load_model_state",
           "checkpoint_info", "checkpoint_dir"]
