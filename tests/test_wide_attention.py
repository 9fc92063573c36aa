"""Wide vs deep attention (arXiv 2210.00640): aspect-ratio configs keep total heads and head width, the parameter
count matches the formula, a wide layer's attention is the sum of narrower layers' heads, encoder/causal masking,
and the byte-level classification task is balanced, deterministic and split without overlap."""

import pytest
import torch

from seqzoo.core.errors import SeqzooError
from seqzoo.models.wide import AspectRatioClassifier, AspectRatioConfig, MultiHeadAttention, aspect_ratio_configs
from seqzoo.tasks.text.classification import TextClassification, classification_accuracy


def test_aspect_ratios_keep_total_heads_and_head_width():
    base = AspectRatioConfig(d_model=32, total_heads=8, head_dim=8)
    configs = aspect_ratio_configs(base)
    assert [(c.n_layers, c.heads_per_layer) for c in configs] == [(1, 8), (2, 4), (4, 2), (8, 1)]
    assert {c.n_layers * c.heads_per_layer for c in configs} == {8}
    for cfg in configs:
        model = AspectRatioClassifier(cfg)
        assert len(model.layers) == cfg.n_layers
        assert all(layer.attn.n_heads == cfg.heads_per_layer and layer.attn.head_dim == 8 for layer in model.layers)
    with pytest.raises(SeqzooError, match="valid n_layers: 1, 2, 4, 8"):
        base.with_layers(3)


@pytest.mark.parametrize("ffn,layers", [("glu", 1), ("glu", 4), ("mlp", 2)])
def test_parameter_count_matches_formula(ffn, layers):
    cfg = AspectRatioConfig(d_model=24, total_heads=4, head_dim=6, n_layers=layers, n_classes=5, ffn=ffn)
    assert AspectRatioClassifier(cfg).num_parameters() == cfg.expected_parameters()


def test_wide_layer_equals_the_sum_of_its_head_groups():
    """Concat-then-project attention is a sum over heads: 4 heads = 2 heads + 2 heads with the weights split."""
    torch.manual_seed(0)
    wide = MultiHeadAttention(12, 4, 6).double()
    halves = [MultiHeadAttention(12, 2, 6).double() for _ in range(2)]
    with torch.no_grad():
        for i, half in enumerate(halves):
            rows = slice(12 * i, 12 * (i + 1))
            for name in ("q_proj", "k_proj", "v_proj"):
                getattr(half, name).weight.copy_(getattr(wide, name).weight[rows])
            half.o_proj.weight.copy_(wide.o_proj.weight[:, rows])
    x = torch.randn(2, 9, 12, dtype=torch.float64)
    torch.testing.assert_close(wide(x), halves[0](x) + halves[1](x), rtol=0, atol=1e-12)


def test_attention_matches_explicit_softmax_and_masking():
    torch.manual_seed(0)
    for causal in (False, True):
        attn = MultiHeadAttention(8, 2, 3, causal=causal, rope=False).double()
        x = torch.randn(1, 5, 8, dtype=torch.float64)
        q, k, v = (getattr(attn, n)(x).view(1, 5, 2, 3).transpose(1, 2) for n in ("q_proj", "k_proj", "v_proj"))
        scores = q @ k.transpose(-1, -2) / 3 ** 0.5
        if causal:
            scores = scores.masked_fill(torch.ones(5, 5, dtype=torch.bool).triu(1), float("-inf"))
        expected = attn.o_proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(1, 5, 6))
        torch.testing.assert_close(attn(x), expected, rtol=0, atol=1e-12)
    # the encoder reads the whole window: the last byte moves the first position's output
    attn = MultiHeadAttention(8, 2, 4).double()
    y = x.clone()
    y[:, -1] += 1.0
    assert not torch.allclose(attn(x)[:, 0], attn(y)[:, 0])


def test_classifier_shapes_and_errors():
    model = AspectRatioClassifier(AspectRatioConfig(d_model=16, total_heads=4, head_dim=4, n_classes=3))
    logits, state = model(torch.randint(0, 256, (2, 11)))
    assert logits.shape == (2, 3) and state is None
    with pytest.raises(SeqzooError, match="integer token ids"):
        model(torch.randn(2, 11))
    with pytest.raises(SeqzooError, match="head_dim"):
        AspectRatioConfig(head_dim=0).validate()


def toy_task(**kw):
    texts = {"a": "abcab " * 200, "b": "xyzzy " * 150, "c": "0123456789" * 80}
    return TextClassification(texts, 16, **kw)


def test_classification_batches_are_balanced_deterministic_and_from_their_class_split():
    task = toy_task()
    b1, b2 = task.get_batch("train", 3, 600), task.get_batch("train", 3, 600)
    assert torch.equal(b1["inputs"], b2["inputs"]) and torch.equal(b1["targets"], b2["targets"])
    assert not torch.equal(task.get_batch("train", 4, 600)["inputs"], b1["inputs"])
    counts = torch.bincount(b1["targets"], minlength=3)
    assert counts.min() > 150  # uniform over classes whatever the text sizes (expected 200 each)
    for split in ("train", "val"):
        batch = task.get_batch(split, 0, 60)
        for row, label in zip(batch["inputs"], batch["targets"]):
            source = bytes(task.splits[split][int(label)].tolist())
            assert bytes(row.tolist()) in source
    # validation is the tail of each class's text: the splits do not overlap
    for c in range(3):
        full = len(task.splits["train"][c]) + len(task.splits["val"][c])
        assert len(task.splits["val"][c]) == int(full * 0.1)


def test_accuracy_of_an_oracle_and_of_a_constant_model():
    task = toy_task()

    class Oracle(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x, state=None):
            marks = torch.tensor([ord("a"), ord("x"), ord("0")])
            return (x[:, :, None] == marks).sum(1).float() + 0 * self.p, None

    assert classification_accuracy(Oracle(), task, batches=2, batch_size=32)["accuracy"] == 1.0
    constant = AspectRatioClassifier(AspectRatioConfig(d_model=8, total_heads=2, head_dim=4, n_classes=3))
    torch.nn.init.zeros_(constant.classifier.weight)
    with torch.no_grad():
        constant.classifier.bias.copy_(torch.tensor([5.0, 0.0, 0.0]))
    acc = classification_accuracy(constant, task, batches=4, batch_size=64)["accuracy"]
    assert 0.2 < acc < 0.5  # always class 0: about 1/3


def test_classification_errors_and_builtin_task():
    with pytest.raises(SeqzooError, match="too few"):
        TextClassification({"a": "ab" * 10, "b": "cd" * 10}, 16)
    with pytest.raises(SeqzooError, match="unknown KJV"):
        TextClassification.kjv("chapters")
    task = TextClassification.kjv("testaments", 64)
    assert task.classes == ["old_testament", "new_testament"] and task.num_classes == 2
    divisions = TextClassification.kjv("divisions", 64)
    assert divisions.num_classes == 8


def test_repro_quick_mode_runs():
    from seqzoo.repro import get_repro

    result = get_repro("wide-attention").run(True)
    assert len(result.checks) == 4 and result.checks[0].held
    assert result.details["wide"]["parameters"] < result.details["deep"]["parameters"]
