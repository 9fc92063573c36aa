"""DeltaNet (arXiv 2406.06484): the delta rule's defining properties at the op and layer level, the layer's
feature pipeline, the DeltaNet hybrid configs, and the reproduction's quick mode.

Each property test fails on an obvious stub: plain linear attention in place of the delta rule (overwrite, β = 0),
a layer without L2 normalisation (unit norms), a layer that drops its convolution state (streaming), a chunk form
that ignores the chunk size or gets the WY/UT solve wrong (chunk-size invariance).
"""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import seqzoo
from seqzoo.cli.config import RunConfig
from seqzoo.core.config import load_config
from seqzoo.core.errors import SeqzooError
from seqzoo.models import CausalLM
from seqzoo.ops import delta_rule, linear_attention

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
D = 32


def make(dtype=torch.float64, **options) -> seqzoo.Mixer:
    torch.manual_seed(7)
    return seqzoo.build_mixer("deltanet", D, **options).to(dtype).eval()


def rand(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def rel(a, b) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def two_writes_then_read(H=2, K=8, V=5):
    """One unit key k per head; write (k, v1), then (k, v2), then read with q = k (β = 1 on the writes)."""
    k = F.normalize(rand(1, 1, H, K, seed=1), dim=-1)
    v1, v2 = rand(1, 1, H, V, seed=2), rand(1, 1, H, V, seed=3)
    keys = torch.cat([k, k, k], dim=1)
    values = torch.cat([v1, v2, torch.zeros_like(v1)], dim=1)
    beta = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64).view(1, 3, 1).expand(1, 3, H)
    return keys, values, beta, v1, v2


# -- the delta rule: overwrite and β = 0 -----------------------------------------------------------------------
@pytest.mark.parametrize("impl", ["recurrent", "chunk", "parallel"])
def test_overwrite_op(impl):
    q, v, beta, v1, v2 = two_writes_then_read()
    o, state = delta_rule(q, q, v, beta, scale=1.0, impl=impl, chunk_size=2)
    assert rel(o[:, 2], v2[:, 0]) < 1e-12           # the key now returns v2: v1 was overwritten
    assert rel(o[:, 1], v2[:, 0]) < 1e-12           # already right after the second write
    assert rel(o[:, 0], v1[:, 0]) < 1e-12
    # plain linear attention (the stub) accumulates instead: v1 + v2
    o_lin, _ = linear_attention(q, q, v, scale=1.0)
    assert rel(o_lin[:, 2], (v1 + v2)[:, 0]) < 1e-12 and rel(o_lin[:, 2], v2[:, 0]) > 0.1


@pytest.mark.parametrize("impl", ["recurrent", "chunk"])
def test_overwrite_through_the_layer(impl):
    """The layer's memory path (its impl and chunk size) overwrites: the value under a key is the last written."""
    mixer = make(impl=impl, chunk_size=2, n_heads=4)
    H, d = mixer.n_heads, mixer.head_dim
    k, v, beta, _, v2 = two_writes_then_read(H, d, d)
    s0 = torch.zeros(1, H, d, d, dtype=torch.float64)
    o, state = mixer.memory(k, k, v, beta, s0)
    # memory() applies the layer's scale d^-1/2 to q, so the read returns d^-1/2 · v2
    assert rel(o[:, 2] * d ** 0.5, v2[:, 0]) < 1e-12
    assert rel(torch.einsum("bhk,bhkv->bhv", k[:, 0], state), v2[:, 0]) < 1e-12


@pytest.mark.parametrize("impl", ["recurrent", "chunk", "parallel"])
def test_beta_zero_leaves_state_unchanged(impl):
    B, T, H, K, V = 2, 11, 2, 6, 4
    q, k, v = rand(B, T, H, K, seed=4), F.normalize(rand(B, T, H, K, seed=5), dim=-1), rand(B, T, H, V, seed=6)
    s0 = rand(B, H, K, V, seed=7)
    o, s = delta_rule(q, k, v, torch.zeros(B, T, H, dtype=torch.float64), initial_state=s0, impl=impl,
                      chunk_size=4)
    assert torch.allclose(s, s0, rtol=0, atol=1e-13)
    assert torch.allclose(o, torch.einsum("bthk,bhkv->bthv", q * K ** -0.5, s0), rtol=0, atol=1e-13)
    # with β > 0 the same inputs do change the state (the test is live); linear attention ignores β entirely
    _, s_written = delta_rule(q, k, v, torch.full((B, T, H), 0.5, dtype=torch.float64), initial_state=s0,
                              impl=impl, chunk_size=4)
    assert rel(s_written, s0) > 1e-3
    _, s_lin = linear_attention(q, k, v, initial_state=s0)
    assert rel(s_lin, s0) > 1e-3


def test_beta_zero_through_the_layer():
    mixer = make()
    B, T, H, d = 2, 9, mixer.n_heads, mixer.head_dim
    q, k, v = rand(B, T, H, d, seed=8), F.normalize(rand(B, T, H, d, seed=9), dim=-1), rand(B, T, H, d, seed=10)
    s0 = rand(B, H, d, d, seed=11)
    _, s = mixer.memory(q, k, v, torch.zeros(B, T, H, dtype=torch.float64), s0)
    assert torch.allclose(s, s0, rtol=0, atol=1e-13)


# -- chunk sizes -------------------------------------------------------------------------------------------------
def test_chunk_size_invariance():
    ref = make(impl="recurrent")
    x = rand(2, 37, D, seed=12)
    with torch.no_grad():
        y_ref, s_ref = ref(x)
        for chunk in (1, 4, 16, 64):
            other = make(impl="chunk", chunk_size=chunk)
            other.load_state_dict(ref.state_dict())
            y, s = other(x)
            assert rel(y, y_ref) < 1e-10, f"chunk_size={chunk}: {rel(y, y_ref):.3g}"
            assert rel(s["S"], s_ref["S"]) < 1e-10


# -- the layer's features ------------------------------------------------------------------------------------------
def test_q_k_unit_norm_and_beta_range():
    mixer = make()
    x = 50.0 * rand(2, 13, D, seed=13)                      # large inputs: only a normalisation gives unit norms
    with torch.no_grad():
        q, k, v, beta, _ = mixer.features(x)
    assert q.shape == k.shape == v.shape == (2, 13, mixer.n_heads, mixer.head_dim)
    for t in (q, k):
        assert torch.allclose(t.norm(dim=-1), torch.ones(()).double(), rtol=0, atol=1e-12)
    assert beta.shape == (2, 13, mixer.n_heads)
    assert torch.equal(beta, torch.sigmoid(x @ mixer.b_proj.weight.T))   # β_t = sigmoid(W_β x_t), one per head
    # v (not normalised) is SiLU of the short convolution of the projection: check against F.conv1d directly
    with torch.no_grad():
        proj = mixer.qkv_proj(x)[..., 2 * D:]
        w = mixer.conv.weight[2 * D:]
        conv = F.conv1d(F.pad(proj.transpose(1, 2), (mixer.conv_size - 1, 0)), w.unsqueeze(1), groups=D)
        expect = F.silu(conv.transpose(1, 2)).view(v.shape)
    assert rel(v, expect) < 1e-12


def test_conv_state_makes_streaming_exact():
    mixer = make()
    x = rand(2, 10, D, seed=14)
    with torch.no_grad():
        y_full, s_full = mixer(x)
        state, ys, state_wrong, ys_wrong = None, [], None, []
        for t in range(x.shape[1]):
            y, state = mixer(x[:, t:t + 1], state)
            ys.append(y)
            y_w, state_wrong = mixer(x[:, t:t + 1], state_wrong)
            ys_wrong.append(y_w)
            state_wrong = {"S": state_wrong["S"], "conv": torch.zeros_like(state_wrong["conv"])}  # drop the tail
    assert rel(torch.cat(ys, 1), y_full) < 1e-12
    assert rel(state["conv"], s_full["conv"]) < 1e-14
    assert state["conv"].shape == (2, mixer.conv_size - 1, 3 * D)
    assert rel(torch.cat(ys_wrong, 1), y_full) > 1e-3      # without the conv state streaming is wrong
    no_conv = make(use_short_conv=False)
    with torch.no_grad():
        y1, s1 = no_conv(x)
        y2, s2 = no_conv(x[:, 6:], no_conv(x[:, :6])[1])
    assert set(s1) == {"S"} and rel(y2, y1[:, 6:]) < 1e-12


def test_gate_option_and_bf16_state():
    x = rand(1, 5, D, seed=15)
    plain, gated = make(use_gate=False), make(use_gate=True)
    assert plain.g_proj is None and gated.g_proj is not None
    n_gate = sum(p.numel() for p in gated.parameters()) - sum(p.numel() for p in plain.parameters())
    assert n_gate == D * D
    with torch.no_grad():
        y, s = make(torch.bfloat16)(x.bfloat16())
    assert y.dtype == torch.bfloat16 and s["S"].dtype == torch.float32 and s["conv"].dtype == torch.float32


@pytest.mark.parametrize("options, fragment", [
    ({"n_heads": 5}, "does not divide d_model"),
    ({"conv_size": 0}, "conv_size must be a positive int"),
    ({"chunk_size": 2.5}, "chunk_size must be a positive int"),
    ({"impl": "fused"}, "unknown impl 'fused' for deltanet; valid: auto, recurrent, chunk"),
    ({"use_gate": "yes"}, "use_gate must be true or false"),
    ({"norm_eps": -1.0}, "norm_eps must be a positive number"),
])
def test_bad_options_are_one_line_errors(options, fragment):
    with pytest.raises(SeqzooError) as err:
        seqzoo.build_mixer("deltanet", D, **options)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_state_missing_key_is_an_error():
    mixer = make()
    with pytest.raises(SeqzooError, match="deltanet state lacks 'conv'"):
        mixer(rand(1, 3, D), {"S": torch.zeros(1, mixer.n_heads, mixer.head_dim, mixer.head_dim).double()})


# -- hybrid configs ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, pattern, window", [
    ("deltanet_swa_hybrid", ["deltanet", "attention", "deltanet", "attention"], 64),
    ("deltanet_global_hybrid", ["deltanet", "attention", "deltanet", "attention", "deltanet", "deltanet"], None),
])
def test_hybrid_configs_load_and_build(name, pattern, window):
    cfg = load_config(RunConfig, CONFIGS / f"{name}.toml")
    assert cfg.name == name and cfg.data.source == "kjv"
    assert cfg.model.layer_mixers() == pattern
    model = CausalLM(cfg.model)
    built = [block.mixer for block in model.blocks]
    assert [m.registry_name for m in built] == pattern
    attention = [m for m in built if m.registry_name == "attention"]
    assert len(attention) == 2 and all(m.window == window for m in attention)
    if window is None:  # the global hybrid: attention at the 2nd and (n/2 + 1)-th layers
        n = cfg.model.n_layers
        assert [i + 1 for i, m in enumerate(built) if m.registry_name == "attention"] == [2, n // 2 + 1]
    with torch.no_grad():
        logits, state = model(torch.randint(0, cfg.model.vocab_size, (1, 9)))
    assert logits.shape == (1, 9, cfg.model.vocab_size) and len(state) == len(pattern)


# -- reproduction ----------------------------------------------------------------------------------------------------
def test_repro_quick_mode_runs():
    from seqzoo.repro import get_repro

    entry = get_repro("deltanet")
    assert entry.arxiv == "2406.06484"
    result = entry.run(True)
    names = [c.name for c in result.checks]
    assert any("linear" in n for n in names) and any("attention" in n for n in names)
    assert result.details["accuracy"] and all(0.0 <= a <= 1.0 for a in result.details["accuracy"].values())
