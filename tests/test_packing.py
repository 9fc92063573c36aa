"""Packed variable-length execution (seqzoo/models/packing.py): packed == each sequence alone == padded rows."""

from __future__ import annotations

import pytest
import torch

from seqzoo.core.errors import SeqzooError
from seqzoo.core.registry import mixer_entry
from seqzoo.models import CausalLM, ModelConfig
from seqzoo.models.packing import check_cu_seqlens, pack, packed_forward, packed_loss

LENGTHS = [5, 1, 12, 7]


def _model(mixer, **opts):
    torch.manual_seed(0)
    return CausalLM(ModelConfig(vocab_size=31, d_model=32, n_layers=2, mixer=mixer, mixer_options=opts,
                                init_std=0.2)).double().eval()


def _sequences():
    g = torch.Generator().manual_seed(3)
    return [torch.randint(0, 31, (n,), generator=g) for n in LENGTHS]


@pytest.mark.parametrize("mixer", ["attention", "deltanet", "mamba", "retention", "s4d", "aaren", "lmu"])
def test_packed_equals_each_sequence_alone_and_padded_rows(mixer):
    opts = {"attention": {"window": 4}} if mixer == "attention" else {}
    model, seqs = _model(mixer, **opts), _sequences()
    tokens, cu = pack(seqs)
    with torch.no_grad():
        packed = packed_forward(model, tokens, cu)
        alone = torch.cat([model(s[None])[0] for s in seqs], dim=1)
        padded = torch.stack([torch.cat([s, torch.zeros(max(LENGTHS) - len(s), dtype=s.dtype)]) for s in seqs])
        padded_logits, _ = model(padded)
    torch.testing.assert_close(packed, alone, rtol=1e-9, atol=1e-9)
    real = torch.cat([padded_logits[i, :n] for i, n in enumerate(LENGTHS)])[None]
    torch.testing.assert_close(packed, real, rtol=1e-9, atol=1e-9)


def test_attention_packed_path_keeps_rope_positions_per_sequence():
    model, seqs = _model("attention"), _sequences()
    assert hasattr(model.blocks[0].mixer, "forward_packed")
    tokens, cu = pack(seqs)
    shifted = tokens.clone()
    shifted[0, : cu[1]] = (shifted[0, : cu[1]] + 3) % 31  # change only the first sequence
    with torch.no_grad():
        a, b = packed_forward(model, tokens, cu), packed_forward(model, shifted, cu)
    assert not torch.allclose(a[0, : cu[1]], b[0, : cu[1]])
    torch.testing.assert_close(a[0, cu[1]:], b[0, cu[1]:], rtol=0, atol=0)  # no information crosses a boundary


def test_boundaries_decide_not_the_stream():
    """The same stream with different boundaries gives different results: cu_seqlens, not the tokens, decide."""
    model, seqs = _model("deltanet"), _sequences()
    tokens, cu = pack(seqs)
    merged = torch.tensor([0, int(cu[2]), int(cu[-1])])
    with torch.no_grad():
        split, joined = packed_forward(model, tokens, cu), packed_forward(model, tokens, merged)
    torch.testing.assert_close(split[0, : cu[1]], joined[0, : cu[1]], rtol=0, atol=0)
    assert not torch.allclose(split[0, cu[1]: cu[2]], joined[0, cu[1]: cu[2]])


def test_packed_loss_skips_the_last_token_of_each_sequence():
    model, seqs = _model("attention"), _sequences()
    tokens, cu = pack(seqs)
    loss = packed_loss(model, tokens, cu)
    per_seq = [model.loss({"inputs": s[None, :-1], "targets": s[None, 1:]}) * (len(s) - 1) for s in seqs if len(s) > 1]
    torch.testing.assert_close(loss, sum(per_seq) / sum(n - 1 for n in LENGTHS), rtol=1e-10, atol=1e-10)


def test_bad_cu_seqlens_are_one_line_errors():
    with pytest.raises(SeqzooError, match="cu_seqlens must start at 0"):
        check_cu_seqlens(torch.tensor([0, 3, 3, 8]), 8)
    with pytest.raises(SeqzooError, match="end at the packed length 9"):
        check_cu_seqlens(torch.tensor([0, 3, 8]), 9)
    with pytest.raises(SeqzooError, match="1-D integer"):
        check_cu_seqlens(torch.tensor([0.0, 3.0]), 3)
    with pytest.raises(SeqzooError, match="non-empty"):
        pack([torch.tensor([1, 2]), torch.tensor([], dtype=torch.int64)])


def test_every_causal_mixer_runs_packed():
    from seqzoo.core.registry import list_mixers

    seqs = _sequences()[:2]
    tokens, cu = pack(seqs)
    for name in list_mixers():
        if not getattr(mixer_entry(name).cls, "causal", True):
            continue
        torch.manual_seed(0)
        model = CausalLM(ModelConfig(vocab_size=31, d_model=32, n_layers=1, mixer=name)).eval()
        with torch.no_grad():
            packed = packed_forward(model, tokens, cu)
            alone = torch.cat([model(s[None])[0] for s in seqs], dim=1)
        torch.testing.assert_close(packed, alone, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")


def test_bytetransformer_repro_quick_mode():
    from seqzoo.repro.base import get_repro

    result = get_repro("bytetransformer").run(True)
    assert result.checks[0].held, result.render()  # the two losses are the same function in any mode
    assert 0 < result.details["padding_fraction"] < 1
