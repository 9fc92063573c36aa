"""FIT (seqzoo/models/fit.py): plain Transformer as a special case, causality, attention-cost formula."""

from __future__ import annotations

import pytest
import torch

from seqzoo.core.errors import SeqzooError
from seqzoo.models import CausalLM, ModelConfig
from seqzoo.models.fit import FIT, CrossAttention


def _fit(**kw):
    torch.manual_seed(0)
    opts = dict(vocab_size=23, d_model=32, n_heads=4, n_blocks=2, local_layers=1, group_size=6, n_latents=2)
    return FIT(**{**opts, **kw}).double().eval()


def test_one_group_and_no_latents_is_a_plain_causal_transformer():
    fit = _fit(group_size=18, n_latents=0)
    lm = CausalLM(ModelConfig(vocab_size=23, d_model=32, n_layers=2, mixer="attention",
                              mixer_options={"attention": {"n_heads": 4}}, tie_embeddings=False)).double().eval()
    lm.embed.load_state_dict(fit.embed.state_dict())
    for dst, src in zip(lm.blocks, [blocks[0] for blocks in fit.local]):
        dst.load_state_dict(src.state_dict())
    lm.norm.load_state_dict(fit.norm.state_dict())
    lm.head.load_state_dict(fit.head.state_dict())
    tokens = torch.randint(0, 23, (2, 18))
    torch.testing.assert_close(fit(tokens), lm(tokens)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("j", [0, 5, 6, 13, 17])
def test_perturbing_token_j_changes_no_output_before_j(j):
    fit = _fit()
    tokens = torch.randint(0, 23, (2, 18), generator=torch.Generator().manual_seed(1))
    base = fit(tokens)
    changed = tokens.clone()
    changed[:, j] = (changed[:, j] + 7) % 23
    out = fit(changed)
    torch.testing.assert_close(out[:, :j], base[:, :j], rtol=0, atol=0)
    assert not torch.allclose(out[:, j:], base[:, j:])


def test_later_groups_see_earlier_groups_through_the_latents_only():
    """With one local layer per block, a token in group 2 sees group 0 only via the latents: zero the read-out
    and the dependence disappears (a stub that lets data read future latents would fail the causality test)."""
    fit = _fit()
    tokens = torch.randint(0, 23, (1, 18), generator=torch.Generator().manual_seed(2))
    changed = tokens.clone()
    changed[:, 1] = (changed[:, 1] + 3) % 23
    assert not torch.allclose(fit(changed)[:, 12:], fit(tokens)[:, 12:])
    with torch.no_grad():
        for block in fit.read_out:
            block.attn.o_proj.weight.zero_()
            block.ffn.w_down.weight.zero_()
    torch.testing.assert_close(fit(changed)[:, 12:], fit(tokens)[:, 12:], rtol=0, atol=0)


@pytest.mark.parametrize("geometry", [(8, 3, 32), (6, 2, 18), (4, 0, 16)])
def test_attention_cost_counter_matches_the_formula(geometry):
    group_size, n_latents, length = geometry
    fit = _fit(group_size=group_size, n_latents=n_latents)
    fit(torch.randint(0, 23, (3, length)))
    assert fit.scores_computed == fit.attention_cost(length)


def test_attention_cost_grows_much_slower_than_full_attention():
    fit = FIT(d_model=32, n_heads=4, n_blocks=1, local_layers=1, group_size=64, n_latents=4)
    assert fit.attention_cost(16384) < 0.05 * 16384 ** 2


def test_bad_lengths_and_options_are_one_line_errors():
    with pytest.raises(SeqzooError, match="multiple of group_size=6"):
        _fit()(torch.zeros(1, 10, dtype=torch.int64))
    with pytest.raises(SeqzooError, match="FIT needs group_size"):
        FIT(group_size=0)
