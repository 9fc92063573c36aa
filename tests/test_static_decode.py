"""Static-buffer greedy decoding (seqzoo/generation/static_decode.py) equals ordinary cached greedy decoding."""

from __future__ import annotations

import pytest
import torch

from seqzoo.core.errors import SeqzooError
from seqzoo.generation import generate
from seqzoo.generation.static_decode import StaticGreedyDecoder
from seqzoo.models import CausalLM, ModelConfig


@pytest.mark.parametrize("mixer", ["attention", "deltanet", ["retention", "attention"], "mamba"])
def test_static_greedy_equals_generate(mixer):
    torch.manual_seed(0)
    opts = {"attention": {"n_heads": 4, "n_kv_heads": 2}}
    model = CausalLM(ModelConfig(vocab_size=37, d_model=32, n_layers=2, mixer=mixer, mixer_options=opts,
                                 init_std=0.5)).eval()
    prompt = torch.randint(0, 37, (3, 9))
    expected = torch.tensor(generate(model, prompt, 12, temperature=0.0))
    got = StaticGreedyDecoder(model).decode(prompt, 12)
    assert got.shape == (3, 12)
    assert len(set(expected.flatten().tolist())) > 2, "degenerate model: the comparison would prove little"
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_static_decoder_rejects_unsupported_mixers_and_bad_prompts():
    model = CausalLM(ModelConfig(vocab_size=11, d_model=16, n_layers=1, mixer="attention",
                                 mixer_options={"attention": {"window": 4}}))
    with pytest.raises(SeqzooError, match="static decoding supports"):
        StaticGreedyDecoder(model)
    model = CausalLM(ModelConfig(vocab_size=11, d_model=16, n_layers=1, mixer="attention"))
    with pytest.raises(SeqzooError, match="prompt must be"):
        StaticGreedyDecoder(model).decode(torch.zeros(3, dtype=torch.int64), 4)
    with pytest.raises(SeqzooError, match="graph=True needs a CUDA"):
        StaticGreedyDecoder(model, graph=True).decode(torch.zeros(1, 3, dtype=torch.int64), 4)


def test_reused_buffers_give_the_same_tokens_as_fresh_decoders():
    """A second call with the same batch and total length reuses the buffers (and, on CUDA, the captured graph):
    stale cache slots from the first call must not leak into the second, also for a shorter prompt."""
    torch.manual_seed(1)
    model = CausalLM(ModelConfig(vocab_size=29, d_model=32, n_layers=2, mixer=["attention", "deltanet"],
                                 init_std=0.5)).eval()
    decoder = StaticGreedyDecoder(model)
    long_prompt, short_prompt = torch.randint(0, 29, (2, 10)), torch.randint(0, 29, (2, 6))
    first = decoder.decode(long_prompt, 8)
    session = decoder._session
    second = decoder.decode(short_prompt, 12)  # same batch and T + n = 18: same buffers
    assert decoder._session is session
    torch.testing.assert_close(second, StaticGreedyDecoder(model).decode(short_prompt, 12), rtol=0, atol=0)
    torch.testing.assert_close(decoder.decode(long_prompt, 8), first, rtol=0, atol=0)
