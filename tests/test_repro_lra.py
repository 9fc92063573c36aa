"""The ``lra`` and ``mqar-frontier`` reproductions (seqzoo/repro/lra.py, seqzoo/repro/mqar_frontier.py).

The full runs are the repro commands; these tests pin the pieces a wrong implementation would get wrong: the
fixed data set really is fixed and shared, learning rates are chosen on validation and reported on test, the
common step count fits the time budget, the gated convolution is causal and gated, and both quick modes run
end to end through the CLI option path.
"""

import pytest
import torch

from seqzoo.cli.main import main
from seqzoo.core.errors import SeqzooError
from seqzoo.repro import lra, mqar_frontier
from seqzoo.tasks.synthetic.listops import ListOps


def test_fixed_data_repeats_its_training_batches_and_reports_the_majority_class():
    source = ListOps(min_length=6, max_length=20, seed=0)
    data = lra.FixedData(source, batch_size=4, train_batches=3, eval_batches=2)
    for split, count in (("train", 3), ("val", 2), ("test", 2)):
        for i in range(count):
            assert torch.equal(data.get_batch(split, i, 4)["inputs"], source.get_batch(split, i, 4)["inputs"])
    assert data.get_batch("train", 4, 4) is data.get_batch("train", 1, 4)   # epoch 2 sees batch 1 again
    labels = torch.cat([b["targets"][:, -1] for b in data.splits["test"]])
    assert data.majority_rate() == pytest.approx(torch.bincount(labels).max().item() / 8)
    with pytest.raises(SeqzooError, match="batches of 4"):
        data.get_batch("train", 0, 8)
    with pytest.raises(SeqzooError, match="valid: train, val, test"):
        data.get_batch("dev", 0, 4)


def test_parallel_generation_gives_the_same_batches():
    source = ListOps(min_length=6, max_length=20, seed=1)
    one = lra.FixedData(source, batch_size=2, train_batches=4, eval_batches=1, workers=1)
    two = lra.FixedData(source, batch_size=2, train_batches=4, eval_batches=1, workers=2)
    for i in range(4):
        assert torch.equal(one.get_batch("train", i, 2)["inputs"], two.get_batch("train", i, 2)["inputs"])


def test_model_selection_uses_validation_and_steps_fit_the_budget():
    runs = [{"lr": 1e-3, "val": 0.4, "test": 0.9}, {"lr": 3e-3, "val": 0.5, "test": 0.1},
            {"lr": 1e-2, "val": 0.5, "test": 0.2}]
    assert lra.best_by_validation(runs)["lr"] == 3e-3          # highest val; ties go to the smaller lr
    steps = lra.common_steps({"a": 0.1, "b": 0.3}, runs_per_mixer=2, budget=100.0, cap=10**6, eval_cost_steps=5)
    assert steps == 120                                          # 100 s / (0.8 s per step of both) − 5
    assert lra.common_steps({"a": 0.1}, runs_per_mixer=1, budget=100.0, cap=50, eval_cost_steps=0) == 50
    assert lra.common_steps({"a": 100.0}, runs_per_mixer=1, budget=1.0, cap=50, eval_cost_steps=0) == 1


def test_gated_long_conv_is_causal_and_gated():
    torch.manual_seed(0)
    conv = mqar_frontier.GatedLongConv(6, 20).double()
    x = torch.randn(2, 20, 6, dtype=torch.float64)
    y, state = conv(x)
    assert y.shape == x.shape and state is None
    changed = x.clone()
    changed[:, 12:] += 1.0
    assert torch.allclose(conv(changed)[0][:, :12], y[:, :12], atol=1e-12)
    assert not torch.allclose(conv(changed)[0][:, 12:], y[:, 12:])
    # the long convolution equals the direct causal sum Σ_{s≤t} h[i, t−s] x_s[i]
    h = conv.filter.detach()
    direct = torch.stack([sum(h[:, t - s] * x[:, s] for s in range(t + 1)) for t in range(20)], dim=1)
    assert torch.allclose(conv.long_conv(x), direct, atol=1e-10)
    with torch.no_grad():                                        # a zero gate silences the output
        conv.gate.weight.zero_()
        conv.gate.bias.zero_()
    assert torch.count_nonzero(conv(x)[0]) == 0
    assert conv.state_size(8) == 48 and conv.state_size(100) == 120
    with pytest.raises(SeqzooError, match="at most 20"):
        conv(torch.randn(1, 21, 6, dtype=torch.float64))


def test_gated_conv_model_swaps_every_mixer():
    cfg, build = mqar_frontier.build_model("base_conv", vocab_size=16, d_model=8, n_layers=2, seq_len=32)
    model = build(cfg)
    assert all(isinstance(b.mixer, mqar_frontier.GatedLongConv) for b in model.blocks)
    assert model.state_size(32) == 2 * 8 * 32 and cfg.ffn == "none"


def test_lra_quick_runs_through_the_cli(tmp_path):
    out = tmp_path / "lra.json"
    code = main(["repro", "lra", "--quick", "--json", str(out), "--set", "tasks=listops,pathfinder",
                 "--set", "budget_seconds=60"])
    assert code == 0
    text = out.read_text()
    assert "listops" in text and "pathfinder" in text and "step_seconds" in text
    with pytest.raises(SeqzooError, match="unknown LRA task"):
        lra.run(True, tasks="image")
    with pytest.raises(SeqzooError, match="valid: cpu, cuda"):
        lra.run(True, device="tpu")


def test_mqar_frontier_quick_reports_the_frontier():
    result = mqar_frontier.run(True, mixers="attention,linear_attention,deltanet,base_conv", seq_lens="32,48")
    names = {c.name.split(" (")[0].split(" ≈")[0] for c in result.checks}
    assert len(result.checks) == 3 and any("DeltaNet" in n for n in names)
    assert {c["mixer"] for c in result.details["cells"]} == {"attention", "linear_attention", "deltanet",
                                                             "base_conv"}
    assert "quick mode" in result.render()
