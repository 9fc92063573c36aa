"""Reproduction ``hat``: the byte/word hierarchical model is more robust to character noise than a byte-level LM.

Paper: "Hierarchical Autoregressive Transformers: Combining Byte- and Word-Level Processing for Robust, Adaptable
Language Models", Neitemeier et al. 2025, arXiv 2501.10322. Claim: HAT matches tokenizer-based models and is much
more robust to perturbations of the input characters.

Setup (fixed before the first run; small CPU scale): the built-in KJV corpus. Two models see the same number of bytes
per step and train for the same number of steps with the same schedule: :class:`~seqzoo.models.hat.HAT` (byte
encoder 1×64, attention backbone 2×128 over words, byte decoder 1×64) and a byte-level
:class:`~seqzoo.models.CausalLM` (4×96 attention, parameter count within 2× of HAT's — reported). Evaluation on the
held-out tail of the corpus, cut into segments of 24 words: bits per byte of the clean text, and of the same text
after character noise (each word, with probability 0.15, gets one of: swap of two adjacent letters, case flip of
one letter, deletion of one letter, insertion of a random letter; seeded). Robustness = BPB(noisy) − BPB(clean).
Check: HAT's increase is smaller than the byte model's. HAT's BPB includes the cost of predicting each word's end.
"""

from __future__ import annotations

import math
import random
import time

import torch

from ..models import CausalLM, ModelConfig
from ..models.hat import HAT, WordBatches, split_words, words_to_tensor
from ..tasks.text.bytes import ByteCorpus, builtin_corpus_text
from .base import ReproResult, register_repro

LN2 = 0.6931471805599453


def perturb(text: bytes, rate: float, seed: int) -> bytes:
    """Character noise on ASCII letters: per word with probability ``rate`` one swap/case flip/deletion/insertion."""
    rng = random.Random(seed)
    out = []
    for word in split_words(text, 64):
        letters = [i for i, b in enumerate(word) if chr(b).isalpha() and b < 128]
        w = bytearray(word)
        if letters and rng.random() < rate:
            i, kind = rng.choice(letters), rng.randrange(4)
            if kind == 0 and i + 1 < len(w) and chr(w[i + 1]).isalpha():
                w[i], w[i + 1] = w[i + 1], w[i]
            elif kind == 1:
                w[i] = ord(chr(w[i]).swapcase())
            elif kind == 2 and len(letters) > 1:
                del w[i]
            else:
                w.insert(i, ord(rng.choice("abcdefghijklmnopqrstuvwxyz")))
        out.append(bytes(w))
    return b"".join(out)


def _segments(text: bytes, n_words: int, limit: int) -> list[bytes]:
    words = split_words(text, 16)
    return [b"".join(words[i: i + n_words]) for i in range(0, len(words) - n_words, n_words)][:limit]


@torch.no_grad()
def _bpb_hat(model: HAT, segments: list[bytes]) -> float:
    nats, n_bytes = 0.0, 0
    for seg in segments:
        words, lengths = words_to_tensor(split_words(seg, model.max_word_len), model.max_word_len)
        nats -= float(model(words[None], lengths[None]).sum())
        n_bytes += len(seg)
    return nats / n_bytes / LN2


@torch.no_grad()
def _bpb_bytes(model: CausalLM, segments: list[bytes]) -> float:
    nats, n_bytes = 0.0, 0
    for seg in segments:
        tokens = torch.tensor([[0] + list(seg)])  # a NUL start byte, so the first byte is predicted too
        logits, _ = model(tokens[:, :-1])
        nats -= float(torch.log_softmax(logits.float(), -1).gather(-1, tokens[:, 1:, None]).sum())
        n_bytes += len(seg)
    return nats / n_bytes / LN2


def _train(model, batches, steps: int, batch_size: int, lr: float = 2e-3) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(
        math.pi * min(1.0, max(0, s - warmup) / max(1, steps - warmup))))))
    start = time.perf_counter()
    model.train()
    for step in range(steps):
        loss = model.loss(batches.get_batch("train", step, batch_size))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    model.eval()
    return time.perf_counter() - start


@register_repro("hat", title="Hierarchical Autoregressive Transformers: Combining Byte- and Word-Level Processing "
                "for Robust, Adaptable Language Models", arxiv="2501.10322",
                claim="HAT's bits per byte degrade less under character noise than a byte-level LM's")
def run(quick: bool = False) -> ReproResult:
    torch.set_num_threads(1)  # tiny models: one thread is fastest and does not spin on a shared CPU
    steps, batch, n_segments = (10, 4, 4) if quick else (500, 16, 120)
    text = builtin_corpus_text("kjv").encode()[: 300_000 if quick else None]
    split = int(len(text) * 0.95)
    train_text, val_text = text[:split], text[split:]
    n_words = 24
    bytes_per_word = len(train_text) / len(split_words(train_text, 16))
    seq_len = int(round(n_words * bytes_per_word))  # the same bytes per step for both models
    torch.manual_seed(0)
    hat = HAT(d_byte=64, d_word=128, encoder_layers=1, backbone_layers=2, decoder_layers=1, n_heads=4)
    torch.manual_seed(0)
    byte_lm = CausalLM(ModelConfig(vocab_size=256, d_model=96, n_layers=4, mixer="attention",
                                   mixer_options={"attention": {"n_heads": 4}}))
    seconds = {"hat": _train(hat, WordBatches(train_text + val_text[:1], n_words, val_fraction=1e-6), steps, batch),
               "bytes": _train(byte_lm, ByteCorpus(train_text, seq_len, val_fraction=0.01), steps, batch)}
    clean = _segments(val_text, n_words, n_segments)
    noisy = [perturb(s, 0.15, seed=i) for i, s in enumerate(clean)]
    bpb = {"hat": (_bpb_hat(hat, clean), _bpb_hat(hat, noisy)),
           "bytes": (_bpb_bytes(byte_lm, clean), _bpb_bytes(byte_lm, noisy))}
    result = ReproResult("hat")
    for name, model in (("hat", hat), ("bytes", byte_lm)):
        result.details[name] = {"parameters": sum(p.numel() for p in model.parameters()),
                                "bpb_clean": bpb[name][0], "bpb_noisy": bpb[name][1],
                                "increase": bpb[name][1] - bpb[name][0], "train_seconds": seconds[name]}
    h, b = result.details["hat"], result.details["bytes"]
    result.check("HAT's BPB increase under noise < byte LM's",
                 f"HAT {h['bpb_clean']:.3f}→{h['bpb_noisy']:.3f} (+{h['increase']:.3f}) vs bytes "
                 f"{b['bpb_clean']:.3f}→{b['bpb_noisy']:.3f} (+{b['increase']:.3f})", "HAT's increase smaller",
                 h["increase"] < b["increase"])
    result.notes.append(f"parameters: HAT {h['parameters']:,}, byte LM {b['parameters']:,}; {steps} steps of "
                        f"{batch} windows of {n_words} words / {seq_len} bytes each")
    return result
