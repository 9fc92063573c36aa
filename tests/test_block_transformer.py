"""Block Transformer (arXiv 2406.02657): split feeding == one call, cached generation == recomputation, token-level
causality across block boundaries, the global context reaches later blocks, the token decoder's state and per-token
cost do not grow with the context, the block decoder runs once per block while decoding."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from seqzoo.core.errors import SeqzooError
from seqzoo.core.state import state_numel
from seqzoo.generation import generate
from seqzoo.models import CausalLM, ModelConfig
from seqzoo.models.block_transformer import BlockTransformer, BlockTransformerConfig

VOCAB = 29


def make(block_len=4, prefix_len=2, block_mixer="attention", token_mixer="attention", impl="auto", seed=0):
    torch.manual_seed(seed)
    cfg = BlockTransformerConfig(vocab_size=VOCAB, block_len=block_len, d_block=32, n_block_layers=2,
                                 block_mixer=block_mixer, d_token=16, n_token_layers=2, token_mixer=token_mixer,
                                 prefix_len=prefix_len, mixer_options={"attention": {"n_heads": 2, "impl": impl}})
    return BlockTransformer(cfg).double().eval()


def feed_in_pieces(model, x, cuts):
    state, outs = None, []
    bounds = [0, *cuts, x.shape[1]]
    for a, b in zip(bounds[:-1], bounds[1:]):
        logits, state = model(x[:, a:b], state)
        outs.append(logits)
    return torch.cat(outs, dim=1), state


@pytest.mark.parametrize("mixers", [("attention", "attention"), ("retention", "attention"),
                                    ("attention", "deltanet")])
def test_split_feeding_equals_teacher_forced_logits(mixers):
    model = make(block_mixer=mixers[0], token_mixer=mixers[1])
    x = torch.randint(0, VOCAB, (3, 27))
    full, _ = model(x)
    one_by_one, _ = feed_in_pieces(model, x, list(range(1, 27)))
    torch.testing.assert_close(one_by_one, full, rtol=0, atol=1e-10)
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):  # random splits, pieces shorter and longer than a block
        cuts = sorted(torch.randperm(26, generator=gen)[:5].add(1).tolist())
        pieces, _ = feed_in_pieces(model, x, cuts)
        torch.testing.assert_close(pieces, full, rtol=0, atol=1e-10)


@pytest.mark.parametrize("block_len,prefix_len", [(1, 1), (3, 2), (5, 3)])
def test_block_lengths_and_prefix_sizes(block_len, prefix_len):
    model = make(block_len=block_len, prefix_len=prefix_len)
    x = torch.randint(0, VOCAB, (2, 17))
    full, _ = model(x)
    one_by_one, _ = feed_in_pieces(model, x, list(range(1, 17)))
    torch.testing.assert_close(one_by_one, full, rtol=0, atol=1e-10)


def test_cached_generation_equals_recomputation_and_ragged_prompts():
    model = make()
    prompts = [[1, 2, 3, 4, 5, 6, 7], [8, 9], [10, 11, 12, 13, 14]]
    cached = generate(model, prompts, 11, temperature=0)
    assert cached == generate(model, prompts, 11, temperature=0, use_cache=False)
    assert cached == [generate(model, [p], 11, temperature=0)[0] for p in prompts]
    # greedy tokens are the argmax of the teacher-forced logits of the whole sequence
    seq = prompts[0] + cached[0]
    logits, _ = model(torch.tensor([seq]))
    assert cached[0] == logits[0, len(prompts[0]) - 1:-1].argmax(-1).tolist()


def test_causality_across_block_boundaries():
    """Changing token t changes no logit before t (same block included) and changes the logit at t."""
    model = make(block_len=4)
    x = torch.randint(0, VOCAB, (2, 18))
    base, _ = model(x)
    for t in range(18):
        y = x.clone()
        y[:, t] = (y[:, t] + 1) % VOCAB
        out, _ = model(y)
        assert torch.equal(out[:, :t], base[:, :t]), f"logits before position {t} changed"
        assert not torch.allclose(out[:, t], base[:, t]), f"logit at {t} ignores token {t}"


def test_context_reaches_later_blocks_through_the_block_decoder():
    """A token of block b changes every logit of blocks b+1, b+2 (only the block decoder carries it there)."""
    model = make(block_len=4)
    x = torch.randint(0, VOCAB, (1, 16))
    base, _ = model(x)
    y = x.clone()
    y[0, 1] = (y[0, 1] + 5) % VOCAB  # block 0
    out, _ = model(y)
    changed = (out - base).abs().amax(-1)[0] > 1e-12
    assert changed[1:].all()  # positions 1.. predict tokens 2..16, all after the changed token


def test_token_decoder_state_and_step_cost_do_not_grow_with_context():
    model = make(block_len=4, impl="math")  # explicit matmuls, so the FLOP counter sees attention
    vanilla = CausalLM(ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=2,
                                   mixer_options={"attention": {"n_heads": 2, "impl": "math"}})).double().eval()

    def step(m, context):
        x = torch.randint(0, VOCAB, (2, context + 1))
        with torch.no_grad():
            _, state = m(x[:, :context])
            counter = FlopCounterMode(display=False)
            with counter:
                _, new_state = m(x[:, context:], state)
        return counter.get_total_flops(), new_state

    # contexts with the same in-block position (1 mod 4): a step that does not finish a block
    block_flops = [step(model, c)[0] for c in (5, 41, 161)]
    assert len(set(block_flops)) == 1 and block_flops[0] > 0
    vanilla_flops = [step(vanilla, c)[0] for c in (5, 41, 161)]
    assert vanilla_flops[0] < vanilla_flops[1] < vanilla_flops[2]  # the counter does see a growing KV cache
    local = [state_numel(step(model, c)[1]["local"]) for c in (6, 42, 162)]
    assert len(set(local)) == 1
    glob = [state_numel(step(model, c)[1]["global"]) for c in (6, 42, 162)]
    assert glob[0] < glob[1] < glob[2]  # the block decoder's cache is the one that grows (once per block)


def test_block_decoder_runs_once_per_block_while_decoding():
    model = make(block_len=4)
    calls = []
    handle = model.block_decoder[0].register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[1]))
    try:
        _, state = model(torch.randint(0, VOCAB, (1, 6)))
        calls.clear()
        for _ in range(12):  # tokens 7..18: blocks 1, 2, 3 complete at tokens 8, 12, 16
            _, state = model(torch.randint(0, VOCAB, (1, 1)), state)
    finally:
        handle.remove()
    assert calls == [1, 1, 1]


def test_every_parameter_gets_gradient_and_training_lowers_the_loss():
    model = make().float().train()
    x = torch.randint(0, VOCAB, (4, 13))
    batch = {"inputs": x[:, :-1], "targets": x[:, 1:]}
    model.loss(batch).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = float(model.loss(batch).detach())
    for _ in range(30):
        opt.zero_grad()
        model.loss(batch).backward()
        opt.step()
    assert float(model.loss(batch).detach()) < 0.8 * first
    assert model.num_parameters() == sum(p.numel() for p in set(model.parameters()))
    assert model.state_size(10) > 0


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(SeqzooError, match="block_len"):
        BlockTransformer(BlockTransformerConfig(block_len=0))
    with pytest.raises(SeqzooError, match="unknown mixer"):
        BlockTransformer(BlockTransformerConfig(token_mixer="nope", d_block=16, d_token=16))
    with pytest.raises(SeqzooError, match="not causal"):
        BlockTransformer(BlockTransformerConfig(block_mixer="probsparse", d_block=16, d_token=16))
    model = make()
    with pytest.raises(SeqzooError, match="integer token ids"):
        model(torch.randn(2, 5))
    _, state = model(torch.randint(0, VOCAB, (2, 5)))
    with pytest.raises(SeqzooError, match="batch"):
        model(torch.randint(0, VOCAB, (3, 1)), state)


def test_repro_quick_mode_runs():
    from seqzoo.repro import get_repro

    result = get_repro("block-transformer").run(True)
    assert [c.name.split(" ")[0] for c in result.checks] == ["parameter", "decode", "both"]
    assert result.details["vanilla"]["parameters"] > 0 and result.details["block"]["val_loss"] > 0
