"""Checkpoints: round trip, refusal of damaged files, atomic writes, no pickle on load."""

from __future__ import annotations

import json
import pickle
import random

import numpy as np
import pytest
import torch

from seqzoo.core.errors import SeqzooError
from seqzoo.models import CausalLM, ModelConfig
from seqzoo.train import TrainConfig, build_optimizer, build_scheduler
from seqzoo.train import checkpoint as ck


def tiny_model() -> CausalLM:
    return CausalLM(ModelConfig(d_model=32, n_layers=2, mixer="attention"))


def trained(steps: int = 2):
    """A tiny model and optimiser after a few steps (so the optimiser has state)."""
    model = tiny_model()
    cfg = TrainConfig(steps=10, lr=1e-3, warmup_steps=2)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg)
    for _ in range(steps):
        x = torch.randint(0, 256, (2, 8))
        model.loss({"inputs": x, "targets": x}).backward()
        opt.step()
        opt.zero_grad()
        sched.step()
    return model, opt, sched


@pytest.fixture
def saved(tmp_path):
    model, opt, sched = trained()
    path = ck.save_checkpoint(ck.checkpoint_dir(tmp_path / "run", 2), model=model, optimizer=opt,
                              scheduler_state=sched.state_dict(), step=2, config={"model": {"d_model": 32}},
                              metrics={"loss": 1.5})
    return path, model, opt


def one_line_error(excinfo, *words):
    msg = str(excinfo.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg
    return msg


def test_round_trip(saved):
    path, model, opt = saved
    assert path.name == "step_000002"
    assert sorted(p.name for p in path.iterdir()) == ["model.safetensors", "optimizer.safetensors", "state.json"]
    assert (path.parent / "latest").read_text().strip() == "step_000002"
    c = ck.load_checkpoint(path.parent)  # a run dir resolves to its latest checkpoint
    assert c.path == path and c.step == 2 and c.config == {"model": {"d_model": 32}} and c.metrics == {"loss": 1.5}
    for name, t in model.state_dict().items():
        assert torch.equal(c.model_state[name], t), name
    assert c.model_state["head.weight"] is c.model_state["embed.weight"]  # tied: stored once, aliased
    ref = opt.state_dict()
    assert c.optimizer_state["param_groups"] == [dict(g) for g in ref["param_groups"]]
    for pid, pstate in ref["state"].items():
        for key, value in pstate.items():
            assert torch.equal(c.optimizer_state["state"][pid][key], value)

    fresh = tiny_model()
    info = ck.load_model_state(path, fresh)
    assert fresh.head.weight is fresh.embed.weight
    for a, b in zip(fresh.parameters(), model.parameters()):
        assert torch.equal(a, b)
    assert info["step"] == 2 and info["num_parameters"] == model.num_parameters()
    assert ck.checkpoint_info(path)["files"]["model.safetensors"] == (path / "model.safetensors").stat().st_size


def test_optimizer_state_restores_exactly(saved):
    path, model, opt = saved
    c = ck.load_checkpoint(path)
    model2 = tiny_model()
    ck.apply_model_state(model2, c.model_state, str(path))
    opt2 = build_optimizer(model2, TrainConfig(steps=10, lr=1e-3, warmup_steps=2))
    opt2.load_state_dict(c.optimizer_state)
    x = torch.randint(0, 256, (2, 8))
    for m, o in ((model, opt), (model2, opt2)):
        m.loss({"inputs": x, "targets": x}).backward()
        o.step()
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)


def test_rng_round_trip():
    state = ck.capture_rng_state()
    json.dumps(state)
    a = (torch.rand(3), random.random(), np.random.rand())
    ck.restore_rng_state(json.loads(json.dumps(state)))
    b = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


def test_truncated_model_is_refused(saved):
    path, *_ = saved
    f = path / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(SeqzooError) as e:
        ck.load_checkpoint(path)
    one_line_error(e, str(path), "model.safetensors", "truncated")
    with pytest.raises(SeqzooError):
        ck.load_model_state(path, tiny_model())
    with pytest.raises(SeqzooError):
        ck.checkpoint_info(path)


def test_flipped_byte_in_optimizer_is_refused(saved):
    path, *_ = saved
    f = path / "optimizer.safetensors"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(SeqzooError) as e:
        ck.load_checkpoint(path)
    one_line_error(e, "optimizer.safetensors", "sha256 mismatch")


def test_edited_state_json_is_refused(saved):
    path, *_ = saved
    f = path / "state.json"
    state = json.loads(f.read_text())
    state["step"] = 999
    f.write_text(json.dumps(state))
    with pytest.raises(SeqzooError) as e:
        ck.load_checkpoint(path)
    one_line_error(e, "state.json", "integrity")
    f.write_text(f.read_text()[:50])
    with pytest.raises(SeqzooError) as e:
        ck.checkpoint_info(path)
    one_line_error(e, "state.json", "not valid JSON")


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors", "state.json"])
def test_missing_file_is_refused(saved, name):
    path, *_ = saved
    (path / name).unlink()
    with pytest.raises(SeqzooError) as e:
        ck.load_checkpoint(path)
    one_line_error(e, name, "missing")


def test_wrong_model_is_refused(saved):
    path, *_ = saved
    other = CausalLM(ModelConfig(d_model=48, n_layers=2, mixer="attention"))
    with pytest.raises(SeqzooError) as e:
        ck.load_model_state(path, other)
    one_line_error(e, "does not match this model")


def test_bad_paths(tmp_path):
    with pytest.raises(SeqzooError, match="does not exist"):
        ck.load_checkpoint(tmp_path / "nope")
    with pytest.raises(SeqzooError, match="no checkpoint"):
        ck.load_checkpoint(tmp_path)
    assert ck.latest_checkpoint(tmp_path) is None


def test_failed_write_leaves_no_partial_checkpoint(saved, monkeypatch):
    path, model, opt = saved
    run = path.parent
    calls = []

    def failing_write(target, tensors):
        calls.append(target.name)
        if target.name == "optimizer.safetensors":  # the model file is already written by now
            target.write_bytes(b"half")
            raise OSError("disk full")
        real_write(target, tensors)

    real_write = ck._write_safetensors
    monkeypatch.setattr(ck, "_write_safetensors", failing_write)
    with pytest.raises(OSError, match="disk full"):
        ck.save_checkpoint(ck.checkpoint_dir(run, 3), model=model, optimizer=opt, step=3)
    assert calls == ["model.safetensors", "optimizer.safetensors"]
    assert sorted(p.name for p in run.iterdir()) == ["latest", "step_000002"]  # no step_000003, no temp dir
    assert ck.latest_checkpoint(run) == path
    ck.load_checkpoint(run)


def test_leftovers_of_a_killed_writer_are_ignored_and_cleaned(saved):
    path, model, opt = saved
    run = path.parent
    junk = run / ".tmp-step_000003-abc"
    junk.mkdir()
    (junk / "model.safetensors").write_bytes(b"partial")
    assert ck.latest_checkpoint(run) == path
    ck.save_checkpoint(ck.checkpoint_dir(run, 3), model=model, optimizer=opt, step=3)
    assert not junk.exists()
    assert ck.latest_checkpoint(run).name == "step_000003"


def test_latest_pointer_and_pruning(saved):
    path, model, opt = saved
    run = path.parent
    for step in (3, 4, 5):
        ck.save_checkpoint(ck.checkpoint_dir(run, step), model=model, optimizer=opt, step=step)
    (run / "latest").write_text("step_000004\n")  # a pointer one behind (crash before it was updated)
    assert ck.latest_checkpoint(run).name == "step_000005"
    ck.prune_checkpoints(run, keep=2)
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("step_")) == ["step_000004", "step_000005"]
    # replacing an existing checkpoint is atomic too
    ck.save_checkpoint(ck.checkpoint_dir(run, 5), model=model, optimizer=opt, step=5, metrics={"again": 1})
    assert ck.load_checkpoint(run).metrics == {"again": 1}


def test_loading_never_unpickles(saved, monkeypatch):
    path, *_ = saved

    def forbidden(*args, **kwargs):
        raise AssertionError("checkpoint loading must not unpickle")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    c = ck.load_checkpoint(path)
    assert c.step == 2
    ck.load_model_state(path, tiny_model())
    ck.checkpoint_info(path)
