"""Data parallel: 2 processes under torchrun (gloo, CPU) follow the 1-process loss curve on the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import safetensors.torch
import torch

from seqzoo.train import checkpoint_info, read_metrics

SCRIPT = Path(__file__).parent / "scripts" / "train_tiny.py"
STEPS = 12


def run(args: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done


def test_two_process_ddp_matches_one_process(tmp_path):
    common = ["--steps", str(STEPS), "--batch-size", "8", "--checkpoint-every", "6", "--eval-every", "6"]
    single, multi = tmp_path / "single", tmp_path / "ddp"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(single), *common,
                             "--final", str(single / "final.safetensors")],
                            env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(SCRIPT),
         str(multi), *common, "--final", str(multi / "final.safetensors")])
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out[-4000:]

    a, b = read_metrics(single), read_metrics(multi)
    train_a = [r for r in a if "loss" in r]
    train_b = [r for r in b if "loss" in r]
    assert [r["step"] for r in train_a] == [r["step"] for r in train_b] == list(range(1, STEPS + 1))
    for ra, rb in zip(train_a, train_b):
        assert abs(ra["loss"] - rb["loss"]) <= 1e-5, (ra, rb)
        assert ra["lr"] == rb["lr"]
        assert abs(ra["grad_norm"] - rb["grad_norm"]) <= 1e-4 * max(1.0, ra["grad_norm"])
    eval_a = [r for r in a if "val_loss" in r]
    eval_b = [r for r in b if "val_loss" in r]
    assert [r["step"] for r in eval_a] == [r["step"] for r in eval_b] == [6, 12]
    for ra, rb in zip(eval_a, eval_b):
        assert abs(ra["val_loss"] - rb["val_loss"]) <= 1e-5

    wa = safetensors.torch.load_file(single / "final.safetensors")
    wb = safetensors.torch.load_file(multi / "final.safetensors")
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-4, atol=1e-5)
    info = checkpoint_info(multi)
    assert info["step"] == STEPS
    # only rank 0 wrote: exactly one metrics line per step and event
    assert len(b) == len(a)


def test_global_batch_must_divide_by_world_size(tmp_path):
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(SCRIPT), str(tmp_path / "x"), "--steps", "2", "--batch-size", "3"],
                          env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=180)
    assert done.returncode != 0
    assert "batch_size=3 is the global batch and must divide by the number of processes (2)" in done.stderr
