"""Ladder residual (seqzoo/models/ladder.py): the lagged wiring, its special cases, and tensor parallelism across
two processes equal to the single-process model."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from seqzoo.core.errors import SeqzooError
from seqzoo.models import CausalLM, ModelConfig
from seqzoo.models.ladder import LadderLM, tensor_parallel_forward

CFG = dict(vocab_size=29, d_model=32, n_layers=4, init_std=0.2, mixer="attention", mixer_options={"attention": {"n_heads": 4}})


def _model(ladder_layers=None, dtype=torch.float64, **overrides):
    torch.manual_seed(0)
    return LadderLM(ModelConfig(**{**CFG, **overrides}), ladder_layers=ladder_layers).to(dtype).eval()


def _tokens(batch=2, length=11):
    return torch.randint(0, 29, (batch, length), generator=torch.Generator().manual_seed(1))


def _explicit_ladder(model, tokens):
    """The definition, module by module: module m reads x_0 + the outputs of modules 0 … m−2 (not m−1)."""
    x0 = model.embed(tokens)
    outs = []
    for block in model.blocks:
        for norm, module in ((block.mixer_norm, block.mixer), (block.ffn_norm, block.ffn)):
            inp = x0 + sum(outs[:-1]) if len(outs) > 1 else x0
            out = module(norm(inp))
            outs.append(out[0] if isinstance(out, tuple) else out)
    return model.head(model.norm(x0 + sum(outs)))


def test_ladder_equals_its_explicit_definition_and_differs_from_standard():
    model, tokens = _model(), _tokens()
    logits, _ = model(tokens)
    torch.testing.assert_close(logits, _explicit_ladder(model, tokens), rtol=1e-12, atol=1e-12)
    standard = CausalLM.forward(model, tokens)[0]
    assert (logits - standard).abs().max() > 1e-3, "ladder wiring must change the function"


def test_zero_ladder_layers_is_the_standard_model():
    model, tokens = _model(ladder_layers=0), _tokens()
    torch.testing.assert_close(model(tokens)[0], CausalLM.forward(model, tokens)[0], rtol=0, atol=0)


def test_with_one_live_module_ladder_equals_standard():
    model, tokens = _model(), _tokens()
    with torch.no_grad():
        for i, block in enumerate(model.blocks):
            if i != 2:
                block.mixer.o_proj.weight.zero_()
            block.ffn.w_down.weight.zero_()
    torch.testing.assert_close(model(tokens)[0], CausalLM.forward(model, tokens)[0], rtol=1e-12, atol=1e-12)


def test_ladder_is_chunk_invariant_and_causal():
    model, tokens = _model(ladder_layers=3), _tokens(length=13)
    full, _ = model(tokens)
    head, state = model(tokens[:, :5])
    tail, _ = model(tokens[:, 5:], state)
    torch.testing.assert_close(torch.cat([head, tail], 1), full, rtol=1e-10, atol=1e-10)
    changed = tokens.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % 29
    torch.testing.assert_close(model(changed)[0][:, :8], full[:, :8], rtol=0, atol=0)


def test_bad_ladder_layers_is_a_one_line_error():
    with pytest.raises(SeqzooError, match="ladder_layers"):
        _model(ladder_layers=7)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tp_worker(rank, world, port, ladder_layers, out_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = _model(ladder_layers, dtype=torch.float32, mixer_options={"attention": {"n_heads": 4,
                                                                                       "n_kv_heads": 2}})
        logits = tensor_parallel_forward(model, _tokens())
        if rank == 0:
            torch.save(logits, out_path)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("ladder_layers", [None, 2])
def test_tensor_parallel_on_two_processes_equals_single_process(tmp_path, ladder_layers):
    out = tmp_path / "tp_logits.pt"
    mp.spawn(_tp_worker, args=(2, _free_port(), ladder_layers, str(out)), nprocs=2, join=True)
    model = _model(ladder_layers, dtype=torch.float32, mixer_options={"attention": {"n_heads": 4, "n_kv_heads": 2}})
    with torch.no_grad():
        expected, _ = model(_tokens())
    torch.testing.assert_close(torch.load(out, weights_only=True), expected, rtol=1e-5, atol=1e-5)


def test_tensor_parallel_needs_a_process_group():
    with pytest.raises(SeqzooError, match="process group"):
        tensor_parallel_forward(_model(), _tokens())


def test_repro_quick_mode_runs_and_reports_both_models():
    from seqzoo.repro.base import get_repro

    result = get_repro("ladder-residual").run(True)
    assert set(result.details) == {"standard", "ladder"}
    assert result.details["standard"]["parameters"] == result.details["ladder"]["parameters"]
    assert len(result.checks) == 1
