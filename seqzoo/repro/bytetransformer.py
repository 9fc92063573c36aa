"""Reproduction ``bytetransformer``: padding-free (packed) execution beats padding on variable-length batches.

Paper: "ByteTransformer: A High-Performance Transformer Boosted for Variable-Length Inputs", Zhai et al. 2023,
arXiv 2210.03052. Claim: removing padding (packing the batch with ``cu_seqlens``) speeds a Transformer up on
batches whose lengths vary, because token-wise layers and attention no longer compute on padding; the gain grows
with the padding fraction.

Setup (fixed before the first run): a 4-layer byte-level ``CausalLM`` (d 256, 4 heads of softmax attention, GLU
FFN). A batch of 32 sequences whose lengths are drawn log-normally (median 96, σ = 0.9, clipped to [8, 1024]) — a
high-variance distribution like real text. Training steps (forward + backward of the next-token loss) are timed for
the padded batch (``[32, max_len]`` with a loss mask) and for the packed stream (``seqzoo.models.packing``), both
on the same tokens, interleaved, median of 5 after a warm-up. Tokens/s counts real tokens only. Checks: both give the
same loss (they compute the same function), and packed tokens/s > padded tokens/s. The padding fraction and the
ideal speed-up (padded tokens / real tokens) are reported beside the measured one.
"""

from __future__ import annotations

import statistics
import time

import torch

from ..models import CausalLM, ModelConfig
from ..models.packing import pack, packed_loss
from .base import ReproResult, register_repro


def _lengths(n: int, gen: torch.Generator, quick: bool) -> list[int]:
    median, hi = (24, 64) if quick else (96, 1024)
    raw = torch.exp(torch.randn(n, generator=gen) * 0.9) * median
    return [int(x) for x in raw.round().clamp(8, hi)]


def _padded_loss(model, seqs, max_len):
    batch = torch.zeros(len(seqs), max_len, dtype=torch.int64)
    mask = torch.zeros(len(seqs), max_len - 1, dtype=torch.bool)
    for i, s in enumerate(seqs):
        batch[i, : len(s)] = s
        mask[i, : len(s) - 1] = True
    return model.loss({"inputs": batch[:, :-1], "targets": batch[:, 1:], "loss_mask": mask})


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@register_repro("bytetransformer", title="ByteTransformer: A High-Performance Transformer Boosted for "
                "Variable-Length Inputs", arxiv="2210.03052",
                claim="packed (padding-free) execution is faster than padding on high-variance lengths")
def run(quick: bool = False) -> ReproResult:
    torch.set_num_threads(1 if quick else 2)
    gen = torch.Generator().manual_seed(0)
    batch, repeats = (8, 2) if quick else (32, 5)
    lengths = _lengths(batch, gen, quick)
    seqs = [torch.randint(0, 256, (n,), generator=gen) for n in lengths]
    max_len = max(lengths)
    torch.manual_seed(0)
    model = CausalLM(ModelConfig(vocab_size=256, d_model=64 if quick else 256, n_layers=4, mixer="attention",
                                 mixer_options={"attention": {"n_heads": 4}}))
    tokens, cu = pack(seqs)
    # Same function: the padded masked loss over positions with a target equals the packed loss.
    with torch.no_grad():
        loss_padded, loss_packed = float(_padded_loss(model, seqs, max_len)), float(packed_loss(model, tokens, cu))

    def padded_step():
        model.zero_grad(set_to_none=True)
        _padded_loss(model, seqs, max_len).backward()

    def packed_step():
        model.zero_grad(set_to_none=True)
        packed_loss(model, tokens, cu).backward()

    padded_step(), packed_step()  # warm-up
    t_padded, t_packed = [], []
    for _ in range(repeats):  # interleaved so that load changes on a shared machine hit both alike
        t_padded.append(_seconds(padded_step))
        t_packed.append(_seconds(packed_step))
    real = sum(lengths)
    tps_padded, tps_packed = real / statistics.median(t_padded), real / statistics.median(t_packed)
    result = ReproResult("bytetransformer")
    result.details.update(lengths=lengths, real_tokens=real, padded_tokens=batch * max_len,
                          padding_fraction=1 - real / (batch * max_len), tokens_per_s_padded=tps_padded,
                          tokens_per_s_packed=tps_packed, ideal_speedup=batch * max_len / real)
    result.check("packed loss equals padded masked loss", f"{loss_packed:.6f} vs {loss_padded:.6f}",
                 "equal to 1e-5", abs(loss_packed - loss_padded) <= 1e-5 * max(1.0, abs(loss_padded)))
    result.check("packed tokens/s > padded tokens/s (training step)",
                 f"{tps_packed:.0f} vs {tps_padded:.0f} ({tps_packed / tps_padded:.2f}x; padding "
                 f"{result.details['padding_fraction']:.0%}, ideal {result.details['ideal_speedup']:.2f}x)",
                 "ratio > 1", tps_packed > tps_padded)
    return result
