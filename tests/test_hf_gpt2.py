"""GPT-2 loader (seqzoo/models/hf_gpt2.py): Hugging Face key names, Conv1D transposition, tied head, exact forward."""

import json
import math

import pytest
import torch

from seqzoo.core.errors import SeqzooError
from seqzoo.models.hf_gpt2 import load_hf_gpt2

D, LAYERS, HEADS, VOCAB, POSITIONS, INNER = 16, 2, 4, 50, 32, 40


def hf_state_dict(seed=0, prefix="transformer."):
    """A random GPT-2 in Hugging Face's names and shapes (Conv1D weights are [in, out])."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, std=0.3):
        return torch.randn(*shape, generator=g) * std

    sd = {f"{prefix}wte.weight": r(VOCAB, D), f"{prefix}wpe.weight": r(POSITIONS, D),
          f"{prefix}ln_f.weight": 1 + r(D, std=0.1), f"{prefix}ln_f.bias": r(D, std=0.1)}
    for i in range(LAYERS):
        h = f"{prefix}h.{i}."
        sd.update({
            h + "ln_1.weight": 1 + r(D, std=0.1), h + "ln_1.bias": r(D, std=0.1),
            h + "attn.c_attn.weight": r(D, 3 * D), h + "attn.c_attn.bias": r(3 * D, std=0.1),
            h + "attn.c_proj.weight": r(D, D), h + "attn.c_proj.bias": r(D, std=0.1),
            h + "ln_2.weight": 1 + r(D, std=0.1), h + "ln_2.bias": r(D, std=0.1),
            h + "mlp.c_fc.weight": r(D, INNER), h + "mlp.c_fc.bias": r(INNER, std=0.1),
            h + "mlp.c_proj.weight": r(INNER, D), h + "mlp.c_proj.bias": r(D, std=0.1),
            h + "attn.bias": torch.tril(torch.ones(POSITIONS, POSITIONS)).view(1, 1, POSITIONS, POSITIONS),
        })
    sd["lm_head.weight"] = sd[f"{prefix}wte.weight"].clone()
    return sd


def write_dir(path, sd, fmt="safetensors", **config):
    path.mkdir(parents=True, exist_ok=True)
    cfg = {"model_type": "gpt2", "vocab_size": VOCAB, "n_positions": POSITIONS, "n_embd": D, "n_layer": LAYERS,
           "n_head": HEADS, "n_inner": INNER, "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new"}
    cfg.update(config)
    (path / "config.json").write_text(json.dumps(cfg))
    if fmt == "safetensors":
        import safetensors.torch
        safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items()}, str(path / "model.safetensors"))
    else:
        torch.save(sd, path / "pytorch_model.bin")
    return path


def reference_gpt2_logits(sd, ids, prefix="transformer."):
    """An independent plain GPT-2 forward on the Hugging Face tensors (x @ W for Conv1D, explicit masked softmax)."""
    sd = {k[len(prefix):] if k.startswith(prefix) else k: v.double() for k, v in sd.items()}

    def ln(x, w, b):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + 1e-5) * w + b

    def gelu_new(x):
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))

    t = ids.shape[1]
    x = sd["wte.weight"][ids] + sd["wpe.weight"][:t]
    hd = D // HEADS
    mask = torch.tril(torch.ones(t, t, dtype=torch.bool))
    for i in range(LAYERS):
        p = f"h.{i}."
        a = ln(x, sd[p + "ln_1.weight"], sd[p + "ln_1.bias"]) @ sd[p + "attn.c_attn.weight"] + sd[p + "attn.c_attn.bias"]
        q, k, v = a.split(D, -1)
        heads = []
        for h in range(HEADS):
            sl = slice(h * hd, (h + 1) * hd)
            s = q[..., sl] @ k[..., sl].transpose(-1, -2) / math.sqrt(hd)
            s = s.masked_fill(~mask, float("-inf"))
            heads.append(torch.softmax(s, -1) @ v[..., sl])
        x = x + torch.cat(heads, -1) @ sd[p + "attn.c_proj.weight"] + sd[p + "attn.c_proj.bias"]
        m = ln(x, sd[p + "ln_2.weight"], sd[p + "ln_2.bias"]) @ sd[p + "mlp.c_fc.weight"] + sd[p + "mlp.c_fc.bias"]
        x = x + gelu_new(m) @ sd[p + "mlp.c_proj.weight"] + sd[p + "mlp.c_proj.bias"]
    x = ln(x, sd["ln_f.weight"], sd["ln_f.bias"])
    return x @ sd["wte.weight"].t()


@pytest.mark.parametrize("fmt,prefix", [("safetensors", "transformer."), ("bin", ""), ("bin", "transformer.")])
def test_handwritten_checkpoint_matches_plain_reference(tmp_path, fmt, prefix):
    sd = hf_state_dict(prefix=prefix)
    if not prefix:
        sd.pop("lm_head.weight")
    model = load_hf_gpt2(write_dir(tmp_path / "gpt2", sd, fmt)).double()
    ids = torch.randint(0, VOCAB, (3, 11))
    hidden, _ = model(ids)
    expected = reference_gpt2_logits(sd, ids, prefix)
    torch.testing.assert_close(model.logits(hidden), expected, rtol=1e-10, atol=1e-10)


def test_kv_cache_and_embeddings_input_equal_one_call(tmp_path):
    model = load_hf_gpt2(write_dir(tmp_path / "gpt2", hf_state_dict())).double()
    ids = torch.randint(0, VOCAB, (2, 9))
    full, _ = model(ids)
    first, past = model(ids[:, :4])
    second, _ = model(inputs_embeds=model.wte(ids[:, 4:]), past=past)
    torch.testing.assert_close(torch.cat([first, second], 1), full, rtol=1e-10, atol=1e-10)


def test_untransposed_conv1d_would_not_match(tmp_path):
    """The loader really transposes Conv1D weights: loading them as nn.Linear weights unchanged gives other logits
    (with non-square c_attn this would even fail to load; square c_proj is the silent case)."""
    sd = hf_state_dict()
    model = load_hf_gpt2(write_dir(tmp_path / "gpt2", sd)).double()
    ids = torch.randint(0, VOCAB, (1, 6))
    torch.testing.assert_close(model.logits(model(ids)[0]), reference_gpt2_logits(sd, ids))
    model.h[0].attn.c_proj.weight.data = model.h[0].attn.c_proj.weight.data.t().contiguous()
    assert not torch.allclose(model.logits(model(ids)[0]), reference_gpt2_logits(sd, ids), atol=1e-6)


def test_bad_directories_are_one_line_errors(tmp_path):
    cases = []
    with pytest.raises(SeqzooError, match="does not exist"):
        load_hf_gpt2(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SeqzooError, match="config.json") as e:
        load_hf_gpt2(tmp_path / "empty")
    cases.append(e)
    no_weights = tmp_path / "noweights"
    write_dir(no_weights, hf_state_dict())
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(SeqzooError, match="neither model.safetensors nor pytorch_model.bin") as e:
        load_hf_gpt2(no_weights)
    cases.append(e)
    sd = hf_state_dict()
    sd.pop("transformer.h.1.mlp.c_fc.bias")
    with pytest.raises(SeqzooError, match="missing") as e:
        load_hf_gpt2(write_dir(tmp_path / "missing", sd))
    cases.append(e)
    with pytest.raises(SeqzooError, match="shape") as e:
        load_hf_gpt2(write_dir(tmp_path / "shape", hf_state_dict(), n_inner=24))
    cases.append(e)
    with pytest.raises(SeqzooError, match="activation") as e:
        load_hf_gpt2(write_dir(tmp_path / "act", hf_state_dict(), activation_function="relu"))
    cases.append(e)
    bad = write_dir(tmp_path / "corrupt", hf_state_dict())
    (bad / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(SeqzooError, match="cannot read") as e:
        load_hf_gpt2(bad)
    cases.append(e)
    for e in cases:
        assert "\n" not in str(e.value)


def test_matches_transformers_when_installed(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_positions=POSITIONS, n_embd=D, n_layer=LAYERS, n_head=HEADS,
                                  n_inner=INNER, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(1)
    ref = transformers.GPT2LMHeadModel(cfg).eval()
    ref.save_pretrained(tmp_path / "hf")
    model = load_hf_gpt2(tmp_path / "hf")
    ids = torch.randint(0, VOCAB, (2, 10))
    with torch.no_grad():
        expected = ref(ids).logits
        got = model.logits(model(ids)[0])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
