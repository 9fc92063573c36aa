"""Generation: cached decoding equals recomputation for every causal mixer; ragged prompts; samplers."""

import pytest
import torch

import seqzoo
from seqzoo.core.errors import SeqzooError
from seqzoo.generation import filter_logits, generate, sample_next
from seqzoo.models import CausalLM, ModelConfig

# causal mixers over token sequences [B, T, D] (not e.g. video mixers whose inputs are [B, T, C, H, W])
CAUSAL = [n for n in seqzoo.list_mixers() if seqzoo.core.mixer_entry(n).cls.causal
          and len(seqzoo.build_mixer(n, 32).example_input_shape(1, 1)) == 3]


def model_with(mixer, vocab=23) -> CausalLM:
    torch.manual_seed(1)
    return CausalLM(ModelConfig(vocab_size=vocab, d_model=32, n_layers=2, mixer=mixer)).double().eval()


@pytest.mark.parametrize("mixer", CAUSAL)
def test_cached_greedy_equals_full_recomputation(mixer):
    model = model_with(mixer)
    prompts = [[1, 2, 3, 4, 5], [7, 8], [9, 10, 11]]
    cached = generate(model, prompts, 12, temperature=0)
    recomputed = generate(model, prompts, 12, temperature=0, use_cache=False)
    assert cached == recomputed
    assert all(len(c) == 12 for c in cached)


@pytest.mark.parametrize("mixer", CAUSAL)
def test_ragged_batch_equals_each_prompt_alone(mixer):
    model = model_with(mixer)
    prompts = [[3, 1, 4, 1, 5, 9], [2, 6], [5, 3, 5]]
    together = generate(model, prompts, 6, temperature=0)
    alone = [generate(model, [p], 6, temperature=0)[0] for p in prompts]
    assert together == alone


def test_greedy_is_argmax_of_model_logits():
    model = model_with("attention")
    prompt = [4, 5, 6]
    out = generate(model, [prompt], 4, temperature=0)[0]
    seq = list(prompt)
    for token in out:
        logits, _ = model(torch.tensor([seq]))
        assert token == int(logits[0, -1].argmax())
        seq.append(token)


def test_hybrid_model_generation_cache_equivalence():
    model = model_with(["retention", "attention"])
    assert generate(model, [[1, 2, 3]], 10, temperature=0) == generate(model, [[1, 2, 3]], 10, temperature=0,
                                                                       use_cache=False)


def test_eos_stops_and_seeded_sampling_is_reproducible():
    model = model_with("attention")
    a = generate(model, [[1, 2]], 20, temperature=1.0, seed=5)
    b = generate(model, [[1, 2]], 20, temperature=1.0, seed=5)
    assert a == b
    eos = a[0][3]
    stopped = generate(model, [[1, 2]], 20, temperature=1.0, seed=5, eos_id=eos)[0]
    assert stopped[-1] == eos and len(stopped) == a[0].index(eos) + 1


def test_top_k_and_top_p_filters():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[False, False, True, True]]
    # top-p = 0.8 keeps the smallest prefix with mass >= 0.8: {0.5, 0.3}
    assert torch.isinf(filter_logits(logits, top_p=0.8)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.81)).tolist() == [[False, False, False, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.01)).tolist() == [[False, True, True, True]]
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_next(logits.expand(4000, 4), temperature=1.0, top_k=2, generator=gen)])
    freq = torch.bincount(draws.flatten(), minlength=4).double() / draws.numel()
    torch.testing.assert_close(freq, torch.tensor([0.625, 0.375, 0.0, 0.0], dtype=torch.double), atol=0.03, rtol=0)


def test_bad_generation_arguments():
    model = model_with("attention")
    with pytest.raises(SeqzooError, match="temperature must be >= 0"):
        generate(model, [[1]], 3, temperature=-1)
    with pytest.raises(SeqzooError, match="top_p must be in"):
        generate(model, [[1]], 3, top_p=1.5)
    with pytest.raises(SeqzooError, match="at least one token"):
        generate(model, [[]], 3)
