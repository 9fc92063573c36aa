"""Train a tiny CausalLM on a short text; used by the resume (SIGKILL) and data-parallel tests.

Runs alone or under ``python -m torch.distributed.run``. With ``--final PATH`` rank 0 writes the trained weights
there (safetensors). Thread count is fixed so CPU results are bit-for-bit reproducible across processes.
"""

from __future__ import annotations

import argparse
import os
import random
import sys

import torch

torch.set_num_threads(1)

import safetensors.torch  # noqa: E402  (after set_num_threads on purpose)

from seqzoo.models import CausalLM, ModelConfig  # noqa: E402
from seqzoo.tasks.text import ByteCorpus  # noqa: E402
from seqzoo.train import TrainConfig, Trainer  # noqa: E402


def tiny_text(n_words: int = 600, seed: int = 0) -> str:
    rng = random.Random(seed)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "its", "red", "ball", "."]
    return " ".join(rng.choice(words) for _ in range(n_words))


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("out_dir")
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--checkpoint-every", type=int, default=1)
    p.add_argument("--eval-every", type=int, default=0)
    p.add_argument("--mixer", default="attention")
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--final", default=None)
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--compile", action="store_true")
    args = p.parse_args(argv)

    torch.manual_seed(1234)
    model = CausalLM(ModelConfig(d_model=32, n_layers=2, mixer=args.mixer))
    data = ByteCorpus(tiny_text(), args.seq_len)
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=3e-3, warmup_steps=3, weight_decay=0.1,
                      eval_every=args.eval_every, eval_batches=2, checkpoint_every=args.checkpoint_every,
                      keep_checkpoints=2, log_every=1, seed=7, device=args.device, precision=args.precision, compile=args.compile,
                      progress=False, num_threads=1)
    Trainer(model, data, cfg, args.out_dir).fit()
    if args.final and int(os.environ.get("RANK", "0")) == 0:
        safetensors.torch.save_model(model, args.final)
    return 0


if __name__ == "__main__":
    sys.exit(main())
