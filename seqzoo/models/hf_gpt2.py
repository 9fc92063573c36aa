"""GPT-2 in plain PyTorch, loading Hugging Face GPT-2 weights from a local directory.

Paper: "Language Models are Unsupervised Multitask Learners", Radford, Wu, Child, Luan, Amodei and Sutskever,
OpenAI 2019 (no arXiv id); the architecture is the Transformer decoder of "Attention Is All You Need"
(arXiv 1706.03762) with pre-norm blocks, learned absolute positions and a final LayerNorm:

    h_0 = W_te[x_t] + W_pe[t]
    a   = h + Attn(LN_1(h)),        Attn: causal softmax attention, q·k / √d_head  (÷ (layer+1) when the
                                    config sets scale_attn_by_inverse_layer_idx)
    h'  = a + W_2 GELU_tanh(W_1 LN_2(a) + b_1) + b_2
    logits = LN_f(h_L) W_teᵀ        (the head is tied to the token embedding)

GELU_tanh(x) = ½x(1 + tanh(√(2/π)(x + 0.044715x³))) (Hugging Face's "gelu_new").

Hugging Face stores the projections as ``Conv1D`` modules whose weight is ``[in, out]`` (``y = x W + b``), the
transpose of ``nn.Linear``; :func:`load_hf_gpt2` transposes them. Accepted layouts: ``config.json`` plus
``model.safetensors`` (read with safetensors) or ``pytorch_model.bin`` (``torch.load(weights_only=True)``: no code
is unpickled); keys with or without the ``transformer.`` prefix of ``GPT2LMHeadModel``; the causal-mask buffers
(``attn.bias``, ``attn.masked_bias``) of older checkpoints are ignored; an ``lm_head.weight`` must equal the token
embedding (the tied head). Anything else (a missing file, a missing or mis-shaped tensor, an unsupported
activation) is a one-line :class:`~seqzoo.core.errors.SeqzooError`.

:meth:`GPT2.forward` takes token ids or input embeddings (the time-series LM backbones feed embeddings) and an
optional key/value cache (``past``), so incremental decoding equals one full call.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.errors import SeqzooError

ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh", "gelu")


@dataclass
class GPT2Config:
    """The fields of a Hugging Face GPT-2 ``config.json`` that define the forward pass."""

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None
    layer_norm_epsilon: float = 1e-5
    activation_function: str = "gelu_new"
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False

    @classmethod
    def from_json(cls, path: Path) -> "GPT2Config":
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise SeqzooError(f"cannot read GPT-2 config {str(path)!r}: {e}") from None
        if raw.get("model_type", "gpt2") != "gpt2":
            raise SeqzooError(f"{str(path)!r} describes a {raw.get('model_type')!r} model; only model_type 'gpt2' "
                              "is supported")
        cfg = cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})
        cfg.validate()
        return cfg

    @property
    def inner(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    def validate(self) -> None:
        for key in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise SeqzooError(f"GPT-2 config {key} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head:
            raise SeqzooError(f"GPT-2 config n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if self.activation_function not in ACTIVATIONS:
            raise SeqzooError(f"GPT-2 activation {self.activation_function!r} is not supported; valid: "
                              f"{', '.join(ACTIVATIONS)}")


class GPT2Attention(nn.Module):
    def __init__(self, cfg: GPT2Config, layer_idx: int):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.n_embd // cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        scale = self.head_dim ** -0.5 if cfg.scale_attn_weights else 1.0
        self.scale = scale / (layer_idx + 1) if cfg.scale_attn_by_inverse_layer_idx else scale

    def forward(self, x: Tensor, past: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        b, t, d = x.shape
        q, k, v = (z.view(b, t, self.n_head, self.head_dim).transpose(1, 2) for z in self.c_attn(x).split(d, -1))
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        offset = k.shape[2] - t
        allowed = torch.arange(k.shape[2], device=x.device)[None] <= (offset + torch.arange(t, device=x.device))[:, None]
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=self.scale)
        return self.c_proj(o.transpose(1, 2).reshape(b, t, d)), (k, v)


class GPT2MLP(nn.Module):
    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, cfg.inner)
        self.c_proj = nn.Linear(cfg.inner, cfg.n_embd)
        self.approximate = "none" if cfg.activation_function == "gelu" else "tanh"

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate=self.approximate))


class GPT2Block(nn.Module):
    def __init__(self, cfg: GPT2Config, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.attn = GPT2Attention(cfg, layer_idx)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.mlp = GPT2MLP(cfg)

    def forward(self, x: Tensor, past=None):
        h, present = self.attn(self.ln_1(x), past)
        x = x + h
        return x + self.mlp(self.ln_2(x)), present


class GPT2(nn.Module):
    """GPT-2 (see the module docstring). ``forward(input_ids=None, inputs_embeds=None, past=None)`` returns
    ``(hidden [B, T, d] after ln_f, present)`` where ``present`` is the per-layer key/value cache to pass back as
    ``past``; :meth:`logits` applies the tied head."""

    def __init__(self, cfg: GPT2Config):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.n_positions, cfg.n_embd)
        self.h = nn.ModuleList(GPT2Block(cfg, i) for i in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    @property
    def d_model(self) -> int:
        return self.cfg.n_embd

    def forward(self, input_ids: Tensor | None = None, inputs_embeds: Tensor | None = None,
                past: list | None = None) -> tuple[Tensor, list]:
        if (input_ids is None) == (inputs_embeds is None):
            raise SeqzooError("GPT2 takes exactly one of input_ids [B, T] or inputs_embeds [B, T, d]")
        x = self.wte(input_ids) if input_ids is not None else inputs_embeds
        if x.dim() != 3 or x.shape[-1] != self.cfg.n_embd:
            raise SeqzooError(f"GPT2 inputs_embeds must be [B, T, {self.cfg.n_embd}], got {list(x.shape)}")
        if past is not None and len(past) != len(self.h):
            raise SeqzooError(f"past has {len(past)} layer caches; this GPT-2 has {len(self.h)} layers")
        start = 0 if past is None else past[0][0].shape[2]
        if start + x.shape[1] > self.cfg.n_positions:
            raise SeqzooError(f"GPT-2 sequence of {start + x.shape[1]} tokens exceeds n_positions="
                              f"{self.cfg.n_positions}")
        x = x + self.wpe(torch.arange(start, start + x.shape[1], device=x.device))
        present = []
        for i, block in enumerate(self.h):
            x, layer_cache = block(x, None if past is None else past[i])
            present.append(layer_cache)
        return self.ln_f(x), present

    def logits(self, hidden: Tensor) -> Tensor:
        return hidden @ self.wte.weight.t()


# -- loading --------------------------------------------------------------------------------------------------------
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
_IGNORED = ("attn.bias", "attn.masked_bias")


def _read_weights(directory: Path) -> dict[str, Tensor]:
    st, binary = directory / "model.safetensors", directory / "pytorch_model.bin"
    if st.is_file():
        import safetensors.torch
        try:
            return safetensors.torch.load_file(str(st))
        except Exception as e:  # noqa: BLE001 -- any parse failure is a bad file
            raise SeqzooError(f"cannot read {str(st)!r}: {type(e).__name__}: {e}") from None
    if binary.is_file():
        try:
            state = torch.load(binary, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise SeqzooError(f"cannot read {str(binary)!r} as a weights-only state dict: {type(e).__name__}") from None
        if not isinstance(state, dict):
            raise SeqzooError(f"{str(binary)!r} does not hold a state dict")
        return state
    raise SeqzooError(f"GPT-2 directory {str(directory)!r} has neither model.safetensors nor pytorch_model.bin")


def convert_hf_state_dict(hf: dict[str, Tensor], cfg: GPT2Config) -> dict[str, Tensor]:
    """Hugging Face GPT-2 tensors → :class:`GPT2` state dict (Conv1D weights transposed, prefix and mask buffers
    dropped, a tied ``lm_head.weight`` checked and dropped)."""
    out: dict[str, Tensor] = {}
    head = None
    for key, value in hf.items():
        name = key[len("transformer."):] if key.startswith("transformer.") else key
        if name == "lm_head.weight":
            head = value
            continue
        if ".".join(name.split(".")[-2:]) in _IGNORED:   # the causal-mask buffers, not c_attn.bias
            continue
        if name.endswith(_CONV1D):
            value = value.t()
        out[name] = value.float().contiguous()
    if head is not None and "wte.weight" in out and not torch.equal(head.float(), out["wte.weight"]):
        raise SeqzooError("this GPT-2 checkpoint's lm_head.weight differs from wte.weight; only the tied head "
                          "of GPT-2 is supported")
    return out


def load_hf_gpt2(directory: str | os.PathLike) -> GPT2:
    """Build :class:`GPT2` from a local Hugging Face directory (``config.json`` + weights); see the module
    docstring for the accepted layouts."""
    path = Path(directory)
    if not path.is_dir():
        raise SeqzooError(f"GPT-2 directory {str(path)!r} does not exist; give a folder holding config.json and "
                          "model.safetensors or pytorch_model.bin")
    if not (path / "config.json").is_file():
        raise SeqzooError(f"GPT-2 directory {str(path)!r} has no config.json")
    cfg = GPT2Config.from_json(path / "config.json")
    model = GPT2(cfg)
    tensors = convert_hf_state_dict(_read_weights(path), cfg)
    expected = model.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    if missing or unexpected:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise SeqzooError(f"GPT-2 weights in {str(path)!r} do not match its config.json: {what} "
                          f"({len(missing)} missing, {len(unexpected)} unexpected)")
    for k, t in expected.items():
        if tuple(t.shape) != tuple(tensors[k].shape):
            raise SeqzooError(f"GPT-2 weights in {str(path)!r} do not match its config.json: {k} has shape "
                              f"{list(tensors[k].shape)}, expected {list(t.shape)}")
    model.load_state_dict(tensors, strict=True)
    return model.eval()


__all__ = ["GPT2", "GPT2Config", "convert_hf_state_dict", "load_hf_gpt2"]
