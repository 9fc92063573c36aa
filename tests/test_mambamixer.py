"""Mechanism tests of MambaMixer (arXiv 2403.19888): the selective channel mixer, the block, and the stack with the
weighted averaging of earlier features.

* channel mixer: the backward direction is the forward machinery on the channel-reversed token (swapping the two
  directions' weights and reversing the channels reverses the output); the forward-only scan is causal along the
  channel axis; the bidirectional one reaches both ways; the output equals a loop written here; each token is mixed
  on its own (causal in time); channel order matters (not permutation-equivariant);
* block: the channel mixer reads θ_0 x + θ_1 y_Token and the block returns y_Token + y_Channel;
* stack: all-ones averaging weights give exactly the plain pre-norm residual stream, one-hot weights on the latest
  feature give plain stacking without skips; the state continues a sequence exactly; cached greedy decoding equals
  recomputation; the weights are trained (they get gradients).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import seqzoo
from seqzoo import SeqzooError
from seqzoo.generation import generate
from seqzoo.mixers.ssm.mambamixer import MambaMixer, SelectiveChannelMixer
from seqzoo.models.mambamixer_stack import MambaMixerLM, MambaMixerLMConfig

F64 = torch.float64


def rand(*shape, seed=0, dtype=F64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64).to(dtype)


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def channel_mixer(d=12, seed=0, **kwargs):
    torch.manual_seed(seed)
    return SelectiveChannelMixer(d, d_state=4, **kwargs).double().eval()


# -- the explicit reference ----------------------------------------------------------------------------------------
def explicit_scan(scan, u):
    """One direction written out for ``u: [D, E]`` (one token): causal conv along channels, SiLU, S6 loop."""
    d, e = u.shape
    k = scan.conv.kernel_size
    padded = torch.cat([torch.zeros(k - 1, e, dtype=u.dtype), u])
    v = F.silu(torch.stack([(padded[c:c + k] * scan.conv.weight.T).sum(0) for c in range(d)]) + scan.conv.bias)
    ssm = scan.ssm
    n, r = ssm.d_state, ssm.dt_rank
    A = -torch.exp(ssm.A_log)
    h = torch.zeros(e, n, dtype=u.dtype)
    out = []
    for c in range(d):
        proj = ssm.x_proj.weight @ v[c]
        delta = F.softplus(ssm.dt_proj.weight @ proj[:r] + ssm.dt_proj.bias)
        h = torch.exp(delta[:, None] * A) * h + (delta * v[c])[:, None] * proj[r:r + n][None, :]
        out.append(h @ proj[r + n:] + ssm.D * v[c])
    return torch.stack(out)


def explicit_channel_mixer(m, x_token):
    """y_Channel for one token ``x_token: [D]``: SSM_fwd(u) + Flip(SSM_bwd(Flip(u))), gated, projected back."""
    uz = x_token[:, None] * m.in_proj.weight[:, 0] + m.in_proj.bias            # [D, 2E]
    u, z = uz[:, :m.width], uz[:, m.width:]
    y = explicit_scan(m.forward_scan, u)
    if m.backward_scan is not None:
        y = y + explicit_scan(m.backward_scan, u.flip(0)).flip(0)
    return (y * F.silu(z)) @ m.out_proj.weight[0] + m.out_proj.bias


# -- channel mixer ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bidirectional,impl,chunk_size", [(True, "recurrent", 256), (True, "chunk", 5),
                                                          (True, "parallel", 256), (False, "auto", 256)])
def test_channel_mixer_matches_explicit_loop(bidirectional, impl, chunk_size):
    m = channel_mixer(bidirectional=bidirectional, impl=impl, chunk_size=chunk_size)
    x = rand(2, 3, 12, seed=1)
    with torch.no_grad():
        y = m(x)
        for b in range(2):
            for t in range(3):
                assert rel_err(y[b, t], explicit_channel_mixer(m, x[b, t])) < 1e-12


@pytest.mark.parametrize("impl", ["recurrent", "chunk"])
def test_backward_direction_is_the_forward_scan_on_reversed_channels(impl):
    m = channel_mixer(impl=impl, chunk_size=4)
    swapped = copy.deepcopy(m)
    swapped.forward_scan, swapped.backward_scan = swapped.backward_scan, swapped.forward_scan
    x = rand(2, 5, 12, seed=2)
    with torch.no_grad():
        y, y_rev = m(x), swapped(x.flip(-1))
    assert rel_err(y_rev, y.flip(-1)) < 1e-12
    assert rel_err(y_rev, y) > 1e-3              # not trivially symmetric: the two directions differ


def test_forward_only_scan_is_causal_along_channels_and_bidirectional_reaches_back():
    x = rand(1, 2, 12, seed=3)
    x2 = x.clone()
    x2[..., 7] += 2.0
    with torch.no_grad():
        one_way, two_way = channel_mixer(bidirectional=False), channel_mixer(bidirectional=True)
        d1, d2 = (one_way(x2) - one_way(x)).abs(), (two_way(x2) - two_way(x)).abs()
    assert d1[..., :7].max() == 0 and d1[..., 7:].min() > 0   # channel 7 reaches channels ≥ 7 only
    assert d2[..., :7].min() > 0 and d2[..., 7:].min() > 0    # and with the backward scan every channel


def test_channel_mixer_mixes_each_token_on_its_own():
    m = channel_mixer()
    x = rand(2, 6, 12, seed=4)
    x2 = x.clone()
    x2[:, 3] += 1.0
    with torch.no_grad():
        diff = (m(x2) - m(x)).abs().amax(dim=(0, 2))
    assert diff[3] > 1e-3 and torch.all(diff[[0, 1, 2, 4, 5]] == 0)


def test_channel_order_matters():
    m = channel_mixer()
    x = rand(1, 4, 12, seed=5)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert rel_err(m(x[..., perm]), m(x)[..., perm]) > 1e-3


# -- the registered block --------------------------------------------------------------------------------------------
def test_block_combines_token_and_channel_mixers_as_documented():
    torch.manual_seed(0)
    m = MambaMixer(16, d_state=4, channel_d_state=4).double().eval()
    x = rand(2, 7, 16, seed=6)
    with torch.no_grad():
        y_tok, s_tok = m.token_mixer(x)
        for theta in ((1.0, 1.0), (1.0, 0.0), (0.0, 1.0), (0.3, -2.0)):
            m.theta.copy_(torch.tensor(theta, dtype=F64))
            y, s = m(x)
            y_ch = m.channel_mixer(m.channel_norm(theta[0] * x + theta[1] * y_tok))
            assert rel_err(y, y_tok + y_ch) < 1e-12
            assert torch.equal(s["ssm"], s_tok["ssm"]) and torch.equal(s["conv"], s_tok["conv"])


def test_block_options_and_errors():
    m = seqzoo.build_mixer("mambamixer", 64)
    assert m.theta.tolist() == [1.0, 1.0] and m.channel_mixer.bidirectional
    assert m.token_mixer.d_inner == 128 and m.channel_mixer.width == 2
    assert seqzoo.build_mixer("mambamixer", 64, impl="recurrent").channel_mixer.forward_scan.ssm.impl == "auto"
    with pytest.raises(SeqzooError, match="bidirectional_channels"):
        seqzoo.build_mixer("mambamixer", 64, bidirectional_channels="yes")
    with pytest.raises(SeqzooError, match="valid: auto, recurrent, chunk, parallel"):
        seqzoo.build_mixer("mambamixer", 64, impl="fast")
    with pytest.raises(SeqzooError, match="channel mixer; valid: auto, recurrent"):
        seqzoo.build_mixer("mambamixer", 64, channel_impl="fast")
    with pytest.raises(SeqzooError, match="unknown option"):
        seqzoo.build_mixer("mambamixer", 64, channel_heads=2)


# -- the stack with weighted averaging of earlier features --------------------------------------------------------
def stack(n_layers=3, seed=0, **cfg):
    torch.manual_seed(seed)
    config = MambaMixerLMConfig(vocab_size=11, d_model=16, n_layers=n_layers,
                                token_options={"d_state": 4}, channel_options={"d_state": 4}, **cfg)
    return MambaMixerLM(config).double().eval()


def sub_blocks(model):
    """The 2L sub-blocks in order, each as ``f(h) = mixer(norm(h))``."""
    out = []
    for layer in range(model.cfg.n_layers):
        tok, ch = model.token_mixers[layer], model.channel_mixers[layer]
        out.append(lambda h, tok=tok, norm=model.norms[2 * layer]: tok(norm(h))[0])
        out.append(lambda h, ch=ch, norm=model.norms[2 * layer + 1]: ch(norm(h)))
    return out


def test_all_ones_weights_are_the_plain_residual_stream():
    model = stack()
    ids = torch.randint(0, 11, (2, 9), generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(w.detach(), torch.ones_like(w)) for w in model.average_weights)   # the initial state
    with torch.no_grad():
        logits, _ = model(ids)
        h = model.embed(ids)
        for f in sub_blocks(model):
            h = h + f(h)                                          # h ← h + SubBlock(RMSNorm(h))
        expected = model.head(model.norm(h))
    assert rel_err(logits, expected) < 1e-12


def test_one_hot_weights_on_the_latest_feature_are_plain_stacking():
    model = stack()
    with torch.no_grad():
        for w in model.average_weights:
            w.zero_()
            w[-1] = 1.0
    ids = torch.randint(0, 11, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, _ = model(ids)
        h = model.embed(ids)
        for f in sub_blocks(model):
            h = f(h)                                              # no skip connections
        expected = model.head(model.norm(h))
    assert rel_err(logits, expected) < 1e-12


def test_general_weights_follow_the_dense_sum():
    model = stack(n_layers=2)
    with torch.no_grad():
        for i, w in enumerate(model.average_weights):
            w.copy_(rand(w.numel(), seed=20 + i))
    ids = torch.randint(0, 11, (1, 6), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits, _ = model(ids)
        features = [model.embed(ids)]
        for k, f in enumerate(sub_blocks(model)):
            w = model.average_weights[k]
            features.append(f(sum(w[j] * features[j] for j in range(k + 1))))
        w = model.average_weights[-1]
        expected = model.head(model.norm(sum(w[j] * features[j] for j in range(len(features)))))
    assert rel_err(logits, expected) < 1e-12


def test_stack_state_continues_the_sequence_and_decoding_is_exact():
    model = stack(n_layers=2)
    with torch.no_grad():
        for i, w in enumerate(model.average_weights):
            w.add_(0.1 * rand(w.numel(), seed=40 + i))
    ids = torch.randint(0, 11, (2, 13), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full, _ = model(ids)
        first, state = model(ids[:, :5])
        rest, _ = model(ids[:, 5:], state)
        future = ids.clone()
        future[:, 8:] = (future[:, 8:] + 1) % 11
        changed, _ = model(future)
    assert rel_err(torch.cat([first, rest], 1), full) < 1e-12
    assert rel_err(changed[:, :8], full[:, :8]) == 0                  # causal in time
    prompts = [[1, 2, 3, 4], [5, 6]]
    assert generate(model, prompts, 6, temperature=0) == generate(model, prompts, 6, temperature=0,
                                                                  use_cache=False)


def test_stack_trains_its_averaging_weights():
    model = stack(n_layers=2).float().train()
    ids = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(4))
    loss = model.loss({"inputs": ids[:, :-1], "targets": ids[:, 1:]})
    loss.backward()
    assert torch.isfinite(loss)
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in model.average_weights)
    assert model.state_size(8) == 2 * (3 * 32 + 32 * 4)
    with pytest.raises(SeqzooError, match="unknown option 'heads'"):
        MambaMixerLM(MambaMixerLMConfig(vocab_size=5, d_model=8, n_layers=1, token_options={"heads": 2}))
