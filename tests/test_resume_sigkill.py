"""Exact resume: a training process killed with SIGKILL at a random step, then rerun, ends bit-for-bit where an
uninterrupted run ends (weights, optimiser state and the metrics log)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import safetensors.torch
import torch

from seqzoo.train import load_checkpoint, read_metrics

SCRIPT = Path(__file__).parent / "scripts" / "train_tiny.py"
STEPS = 16


def command(out_dir: Path) -> list[str]:
    return [sys.executable, str(SCRIPT), str(out_dir), "--steps", str(STEPS), "--checkpoint-every", "1",
            "--eval-every", "8", "--final", str(out_dir / "final.safetensors")]


def env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")


def run_until_step_then_kill(out_dir: Path, kill_at: int) -> int:
    """Start training, SIGKILL it as soon as metrics.jsonl shows step ``kill_at``; returns the last logged step."""
    proc = subprocess.Popen(command(out_dir), env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    metrics = out_dir / "metrics.jsonl"
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"training ended before step {kill_at}: {proc.stdout.read().decode()[-2000:]}")
            rows = read_metrics(metrics) if metrics.exists() else []
            if any(r.get("step", 0) >= kill_at for r in rows):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
        else:
            raise AssertionError("timed out waiting for training progress")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    return max(r["step"] for r in read_metrics(metrics))


def strip_timings(rows):
    return [{k: v for k, v in r.items() if k not in ("elapsed", "tokens_per_s")} for r in rows]


def test_sigkill_then_resume_is_bit_exact(tmp_path):
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref = subprocess.Popen(command(ref_dir), env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    rng = random.Random(20240611)
    kill_at = rng.randint(2, 6)
    last = run_until_step_then_kill(run_dir, kill_at)
    assert kill_at <= last < STEPS
    # kill the resumed run again, later (after new progress), then let a third process finish
    kill_again = rng.randint(max(last + 2, 9), STEPS - 3) if last + 2 <= STEPS - 3 else None
    if kill_again is not None:
        last = run_until_step_then_kill(run_dir, kill_again)
        assert kill_again <= last < STEPS
    assert not (run_dir / "final.safetensors").exists()
    done = subprocess.run(command(run_dir), env=env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out, _ = ref.communicate(timeout=120)
    assert ref.returncode == 0, out.decode()[-3000:]

    a = safetensors.torch.load_file(ref_dir / "final.safetensors")
    b = safetensors.torch.load_file(run_dir / "final.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs after SIGKILL + resume"

    ca, cb = load_checkpoint(ref_dir), load_checkpoint(run_dir)
    assert ca.step == cb.step == STEPS
    for pid, pstate in ca.optimizer_state["state"].items():
        for key, value in pstate.items():
            assert torch.equal(value, cb.optimizer_state["state"][pid][key]), f"optimizer {pid}.{key}"
    assert ca.scheduler_state == cb.scheduler_state

    rows = read_metrics(run_dir)
    assert strip_timings(rows) == strip_timings(read_metrics(ref_dir))
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, STEPS + 1))
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")]  # no temporary leftovers
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith("step_")) == \
        [f"step_{STEPS - 1:06d}", f"step_{STEPS:06d}"]
