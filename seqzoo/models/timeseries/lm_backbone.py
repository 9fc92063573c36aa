"""A causal language model used as a (frozen) backbone by the LM-based forecasters (TEMPO, AutoTimes).

TEMPO (arXiv 2310.04948) and AutoTimes (arXiv 2402.02370) feed time-series tokens to a pretrained decoder-only
LM through its input-embedding slot and read its last hidden states. Pretrained weights cannot be downloaded here,
so the "pretrained LM" is one of:

* a seqzoo :class:`~seqzoo.models.CausalLM` checkpoint over bytes, e.g. the quickstart model trained briefly on the
  built-in KJV corpus (``seqzoo train configs/quickstart.toml`` writes ``runs/quickstart``); its text tokens are
  UTF-8 bytes;
* a Hugging Face GPT-2 directory (``config.json`` + weights, :func:`seqzoo.models.hf_gpt2.load_hf_gpt2`) for users
  who have one; its text tokens come from ``tokenizer.json`` in that directory (needs the ``tokenizers`` package);
* ``None``: a fresh, randomly initialised byte-level CausalLM (for tests, and the "random LM" ablation of the
  papers).

:class:`LMBackbone` hides the difference. It exposes ``d_model``, ``embed_tokens(ids)``, ``encode_text(str)`` and
``forward(embeds, state=None) -> (hidden, state)`` — the final-normed hidden states of the LM run on input
embeddings, with its recurrent state / key-value cache threaded so that rollouts can be incremental.
:meth:`LMBackbone.truncate` keeps the first layers (TEMPO uses GPT-2's first 6) and :meth:`LMBackbone.freeze`
freezes everything, or everything except the normalisation layers (GPT4TS/TEMPO fine-tune the LayerNorms).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from ...core.errors import SeqzooError
from ..causal_lm import CausalLM, run_blocks
from ..config import ModelConfig
from ..hf_gpt2 import GPT2, load_hf_gpt2

RANDOM_LM = {"d_model": 64, "n_layers": 2, "mixer": "attention", "mixer_options": {"attention": {"n_heads": 4}}}


def random_byte_lm(seed: int = 0, **overrides) -> CausalLM:
    """A fresh byte-level CausalLM (``RANDOM_LM`` shape unless overridden), initialised from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CausalLM(ModelConfig(**{**RANDOM_LM, **overrides}))


def load_seqzoo_lm(path: str | os.PathLike) -> CausalLM:
    """A byte-level CausalLM from a seqzoo checkpoint (checkpoint or run directory), built from its run config."""
    from ...core.config import from_dict
    from ...train.checkpoint import checkpoint_info, load_model_state

    config = checkpoint_info(path, verify=False)["config"]
    if "model" not in config:
        raise SeqzooError(f"checkpoint {str(path)!r} has no model config; give a checkpoint written by seqzoo train")
    model = CausalLM(from_dict(ModelConfig, config["model"]))
    if model.continuous:
        raise SeqzooError(f"checkpoint {str(path)!r} is a continuous-input model; an LM backbone needs a token LM")
    load_model_state(path, model)
    return model.eval()


class LMBackbone(nn.Module):
    """A seqzoo byte-level CausalLM or a GPT-2, used through its input embeddings (see the module docstring)."""

    def __init__(self, lm: CausalLM | GPT2, tokenizer_path: str | None = None, source: str = "random"):
        super().__init__()
        if not isinstance(lm, (CausalLM, GPT2)):
            raise SeqzooError(f"LMBackbone wraps a seqzoo CausalLM or a GPT2, got {type(lm).__name__}")
        self.lm, self.source = lm, source
        self._tokenizer_path, self._tokenizer = tokenizer_path, None

    @property
    def is_gpt2(self) -> bool:
        return isinstance(self.lm, GPT2)

    @property
    def d_model(self) -> int:
        return self.lm.d_model if self.is_gpt2 else self.lm.cfg.d_model

    @property
    def layers(self) -> nn.ModuleList:
        return self.lm.h if self.is_gpt2 else self.lm.blocks

    def truncate(self, n_layers: int | None) -> "LMBackbone":
        """Keep only the first ``n_layers`` layers (None: all)."""
        if n_layers is None:
            return self
        if isinstance(n_layers, bool) or not isinstance(n_layers, int) or not 1 <= n_layers <= len(self.layers):
            raise SeqzooError(f"lm_layers must be an int in [1, {len(self.layers)}] (the LM's depth), got {n_layers!r}")
        del self.layers[n_layers:]
        return self

    def freeze(self, train_norms: bool = False) -> "LMBackbone":
        """Freeze every LM parameter; with ``train_norms`` the normalisation layers stay trainable."""
        for p in self.lm.parameters():
            p.requires_grad_(False)
        if train_norms:
            for module in self.lm.modules():
                if isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
                    for p in module.parameters():
                        p.requires_grad_(True)
        return self

    # -- text -----------------------------------------------------------------------------------------------------
    def encode_text(self, text: str) -> list[int]:
        """Token ids of ``text``: UTF-8 bytes for the byte LM; GPT-2's BPE (``tokenizer.json``) for GPT-2."""
        if not self.is_gpt2:
            return list(text.encode("utf-8"))
        if self._tokenizer is None:
            path = Path(self._tokenizer_path or "") / "tokenizer.json"
            try:
                from tokenizers import Tokenizer
            except ImportError:
                raise SeqzooError("text prompts with a GPT-2 backbone need the tokenizers package "
                                  "(pip install tokenizers) and tokenizer.json in the GPT-2 directory") from None
            if not path.is_file():
                raise SeqzooError(f"text prompts with a GPT-2 backbone need {str(path)!r}; it does not exist")
            self._tokenizer = Tokenizer.from_file(str(path))
        return self._tokenizer.encode(text).ids

    def embed_tokens(self, ids: Tensor) -> Tensor:
        return self.lm.wte(ids) if self.is_gpt2 else self.lm.embed(ids)

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> Tensor:
        """One vector per text: the LM's last hidden state at the text's last token (AutoTimes' timestamp
        embedding), ``[len(texts), d_model]``; texts are run one length-group at a time, without padding."""
        out = torch.empty(len(texts), self.d_model, device=self.device)
        by_length: dict[int, list[int]] = {}
        ids = [self.encode_text(t) for t in texts]
        for i, seq in enumerate(ids):
            if not seq:
                raise SeqzooError("cannot embed an empty text")
            by_length.setdefault(len(seq), []).append(i)
        for group in by_length.values():
            tokens = torch.tensor([ids[i] for i in group], device=self.device)
            hidden, _ = self(self.embed_tokens(tokens))
            out[group] = hidden[:, -1].to(out.dtype)
        return out

    @property
    def device(self) -> torch.device:
        return next(self.lm.parameters()).device

    # -- the LM on embeddings ---------------------------------------------------------------------------------------
    def forward(self, embeds: Tensor, state: list | None = None) -> tuple[Tensor, list]:
        """``embeds [B, T, d_model]`` → ``(hidden [B, T, d_model], state)``; passing the returned state with the
        next embeddings continues the same sequence (key/value cache or recurrent state)."""
        if embeds.dim() != 3 or embeds.shape[-1] != self.d_model:
            raise SeqzooError(f"LM backbone expects embeddings [B, T, {self.d_model}], got {list(embeds.shape)}")
        if self.is_gpt2:
            return self.lm(inputs_embeds=embeds, past=state)
        x, new_state = run_blocks(self.lm.blocks, embeds, state)
        return self.lm.norm(x), new_state


def load_lm_backbone(path: str | os.PathLike | None = None, *, seed: int = 0) -> LMBackbone:
    """The LM backbone at ``path``: a Hugging Face GPT-2 directory (has ``config.json``), a seqzoo checkpoint or
    run directory (has ``state.json`` or ``latest``), or ``None`` for a fresh random byte-level LM."""
    if path is None:
        return LMBackbone(random_byte_lm(seed), source="random")
    p = Path(path)
    if not p.is_dir():
        raise SeqzooError(f"LM backbone path {str(p)!r} is not a directory; give a seqzoo checkpoint/run directory "
                          "or a Hugging Face GPT-2 directory (config.json + weights)")
    if (p / "config.json").is_file():
        return LMBackbone(load_hf_gpt2(p), tokenizer_path=str(p), source=f"gpt2:{p}")
    if (p / "state.json").is_file() or (p / "latest").is_file():
        return LMBackbone(load_seqzoo_lm(p), source=f"seqzoo:{p}")
    raise SeqzooError(f"LM backbone directory {str(p)!r} holds neither config.json (Hugging Face GPT-2) nor a seqzoo "
                      "checkpoint (state.json, or a run directory with latest)")


__all__ = ["LMBackbone", "load_lm_backbone", "load_seqzoo_lm", "random_byte_lm", "RANDOM_LM"]
