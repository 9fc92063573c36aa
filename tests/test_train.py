"""Trainer pieces: parameter groups, the LR schedule, learning, metrics.jsonl, resume, config validation."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from seqzoo.core import get_optim, set_optim
from seqzoo.core.config import from_dict
from seqzoo.core.errors import SeqzooError
from seqzoo.models import CausalLM, ModelConfig
from seqzoo.tasks.text import ByteCorpus
from seqzoo.train import TrainConfig, Trainer, build_optimizer, build_scheduler, lr_factor, param_groups, read_metrics
from seqzoo.train.optim import scheduler_state

TEXT = "abcdefgh " * 120  # tiny and repetitive: easy to learn


def tiny_model(**kw) -> CausalLM:
    return CausalLM(ModelConfig(d_model=32, n_layers=2, mixer="attention", **kw))


def quick_cfg(**kw) -> TrainConfig:
    base = dict(steps=12, batch_size=8, lr=3e-3, warmup_steps=2, eval_every=6, eval_batches=2, checkpoint_every=4,
                keep_checkpoints=3, log_every=1, seed=0, device="cpu", progress=False)
    base.update(kw)
    return TrainConfig(**base)


# -- parameter groups ---------------------------------------------------------------------------------------------
def test_param_groups_decay_rules():
    model = tiny_model()
    groups = {g["name"]: g for g in param_groups(model, lr=1e-3, weight_decay=0.1)}
    assert {"decay", "no_decay"} <= set(groups)
    for name in set(groups) - {"decay", "no_decay"}:  # only parameters that a mixer marked with set_optim
        assert name.startswith("custom_") and all(get_optim(p) for p in groups[name]["params"])
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {names[id(p)] for p in groups["decay"]["params"]}
    no_decay = {names[id(p)] for p in groups["no_decay"]["params"]}
    assert groups["decay"]["weight_decay"] == 0.1 and groups["no_decay"]["weight_decay"] == 0.0
    assert "embed.weight" in no_decay  # embedding (and the head tied to it) is not decayed
    assert all(p.dim() >= 2 for p in groups["decay"]["params"])
    assert all(".weight" in n for n in decay) and not any("norm" in n for n in decay)
    assert any("norm" in n for n in no_decay)
    # every parameter exactly once, the tied embedding/head included
    all_params = [p for g in groups.values() for p in g["params"]]
    assert len(all_params) == len({id(p) for p in all_params}) == len(list(model.parameters()))
    assert sum(p.numel() for p in all_params) == model.num_parameters()


def test_overridden_parameter_gets_its_own_group_and_keeps_its_lr_ratio():
    model = tiny_model()
    special = model.blocks[0].ffn.w_down.weight
    set_optim(special, lr=1e-4, weight_decay=0.5)
    set_optim(model.blocks[1].mixer_norm.weight, lr=1e-4, weight_decay=0.5)  # same settings: same group
    set_optim(model.blocks[1].ffn_norm.weight, lr=2e-4)  # weight decay follows the default rule (1-D: none)
    cfg = TrainConfig(steps=20, lr=1e-3, warmup_steps=5, weight_decay=0.1, min_lr_ratio=0.1)
    opt = build_optimizer(model, cfg)
    def group_of(param):
        (g,) = [g for g in opt.param_groups if any(p is param for p in g["params"])]
        return g

    first, second = group_of(special), group_of(model.blocks[1].ffn_norm.weight)
    assert group_of(model.blocks[1].mixer_norm.weight) is first and len(first["params"]) == 2
    assert first["name"].startswith("custom_") and second["name"].startswith("custom_") and first is not second
    assert (first["lr"], first["weight_decay"]) == (1e-4, 0.5)
    assert (second["lr"], second["weight_decay"]) == (2e-4, 0.0)
    decay = group_of(model.blocks[0].ffn.w_gate_up.weight)
    assert decay["name"] == "decay"
    sched = build_scheduler(opt, cfg)
    for step in range(20):
        factor = lr_factor(step, warmup_steps=5, total_steps=20, min_lr_ratio=0.1)
        assert decay["lr"] == pytest.approx(1e-3 * factor)
        assert first["lr"] == pytest.approx(1e-4 * factor)
        assert second["lr"] == pytest.approx(2e-4 * factor)
        opt.step()
        sched.step()


# -- schedule ----------------------------------------------------------------------------------------------------
def test_schedule_shape():
    kw = dict(warmup_steps=10, total_steps=100, min_lr_ratio=0.1)
    f = [lr_factor(s, **kw) for s in range(120)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(f[:10], f[1:10]))  # linear warm-up
    assert all(a > b for a, b in zip(f[10:100], f[11:100]))  # cosine decay
    assert f[55] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f[100] == f[119] == pytest.approx(0.1)  # the floor, held after the end
    assert lr_factor(0, warmup_steps=0, total_steps=10, min_lr_ratio=0.0) == 1.0


def test_scheduler_state_restores():
    model = tiny_model()
    cfg = TrainConfig(steps=30, lr=1e-3, warmup_steps=4)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg)
    for _ in range(7):
        opt.step()
        sched.step()
    state = json.loads(json.dumps(scheduler_state(sched)))
    opt2 = build_optimizer(model, cfg)
    sched2 = build_scheduler(opt2, cfg)
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(state)
    opt.step(), sched.step(), opt2.step(), sched2.step()
    assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in opt2.param_groups]


# -- training ----------------------------------------------------------------------------------------------------
def test_loss_decreases_and_metrics_format(tmp_path):
    torch.manual_seed(0)
    cfg = quick_cfg(steps=50, lr=1e-2, warmup_steps=5, eval_every=25, checkpoint_every=0, log_every=5)
    final = Trainer(tiny_model(), ByteCorpus(TEXT, 16), cfg, tmp_path).fit()
    rows = read_metrics(tmp_path)
    train = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in train] == list(range(5, 51, 5))
    assert [r["step"] for r in evals] == [25, 50]
    for r in train:
        assert set(r) == {"step", "loss", "lr", "grad_norm", "tokens_per_s", "elapsed"}
        assert all(isinstance(r[k], (int, float)) for k in r)
    for r in evals:
        assert set(r) == {"step", "val_loss", "val_bpt", "elapsed"}
        assert r["val_bpt"] == pytest.approx(r["val_loss"] / math.log(2))
    assert train[-1]["loss"] < 0.5 * train[0]["loss"]  # ln(256) ≈ 5.5 at the start
    assert evals[-1]["val_loss"] < 1.5
    assert final["step"] == 50 and final["val_loss"] == evals[-1]["val_loss"]
    assert final["checkpoint"].endswith("step_000050")
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == len(rows)


def test_resume_continues_exactly_and_trims_metrics(tmp_path):
    data = ByteCorpus(TEXT, 16)
    torch.manual_seed(0)
    ref_model = tiny_model()
    Trainer(ref_model, data, quick_cfg(), tmp_path / "ref").fit()

    torch.manual_seed(0)
    Trainer(tiny_model(), data, quick_cfg(), tmp_path / "run").fit()
    run = tmp_path / "run"
    for name in ("step_000008", "step_000012"):  # pretend the run died just after step 4's checkpoint...
        shutil.rmtree(run / name)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 13, "lo')  # ...mid-way through writing a line
    torch.manual_seed(123)  # a different init: resume must overwrite it
    model = tiny_model()
    trainer = Trainer(model, data, quick_cfg(), run)
    final = trainer.fit()
    assert trainer.resumed_from.name == "step_000004" and final["step"] == 12
    for a, b in zip(model.parameters(), ref_model.parameters()):
        assert torch.equal(a, b)

    def strip(rows):
        return [{k: v for k, v in r.items() if k not in ("elapsed", "tokens_per_s")} for r in rows]

    assert strip(read_metrics(run)) == strip(read_metrics(tmp_path / "ref"))
    # a finished run is not trained again
    again = Trainer(tiny_model(), data, quick_cfg(), run).fit()
    assert again["step"] == 12 and again["loss"] == final["loss"]


def test_resume_into_a_different_model_is_refused(tmp_path):
    data = ByteCorpus(TEXT, 16)
    Trainer(tiny_model(), data, quick_cfg(steps=2), tmp_path).fit()
    other = CausalLM(ModelConfig(d_model=48, n_layers=2, mixer="attention"))
    with pytest.raises(SeqzooError, match="does not match this model"):
        Trainer(other, data, quick_cfg(steps=4), tmp_path).fit()


# -- configuration -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [
    {"steps": 0}, {"batch_size": 0}, {"lr": 0.0}, {"lr": -1e-3}, {"min_lr_ratio": 1.5}, {"warmup_steps": -1},
    {"weight_decay": -0.1}, {"beta1": 1.0}, {"beta2": -0.1}, {"grad_clip": -1.0}, {"eval_batches": 0},
    {"keep_checkpoints": 0}, {"log_every": 0}, {"device": "tpu"}, {"precision": "fp16"}, {"steps": "ten"},
    {"compile": "yes"}, {"lr": float("nan")}, {"device": "cpu", "precision": "bf16"}, {"nonsense": 1},
])
def test_bad_config_values_are_one_line_errors(bad):
    with pytest.raises(SeqzooError) as e:
        from_dict(TrainConfig, bad, "train")
    assert "\n" not in str(e.value)
    key = [k for k in bad if k != "device"][0] if len(bad) > 1 else next(iter(bad))
    assert key in str(e.value)
    if "nonsense" not in bad:
        with pytest.raises(SeqzooError):
            TrainConfig(**bad).validate()


def test_config_from_toml_table():
    cfg = from_dict(TrainConfig, {"steps": 5, "lr": 1, "precision": "fp32"}, "train")
    assert cfg.steps == 5 and cfg.lr == 1.0 and isinstance(cfg.lr, float)


def test_trainer_refuses_unavailable_hardware(tmp_path):
    data = ByteCorpus(TEXT, 16)
    if not torch.cuda.is_available():
        with pytest.raises(SeqzooError, match="no CUDA device"):
            Trainer(tiny_model(), data, quick_cfg(device="cuda"), tmp_path)
        with pytest.raises(SeqzooError, match="bf16"):
            Trainer(tiny_model(), data, quick_cfg(device="auto", precision="bf16"), tmp_path)
