"""Padding-free variable-length execution: packed sequences with ``cu_seqlens``.

Paper: "ByteTransformer: A High-Performance Transformer Boosted for Variable-Length Inputs", Zhai et al. 2023,
arXiv 2210.03052. A batch of sequences of different lengths is usually padded to the longest, and every
token-wise layer (embeddings, projections, FFN, norms, head) then spends work on padding. ByteTransformer removes
the padding: the sequences are concatenated into one stream of ``total = Σ n_i`` tokens, with boundaries

    cu_seqlens = [0, n_0, n_0 + n_1, …, total]          (int64, the FlashAttention varlen convention)

Token-wise layers run once on the packed stream; only the sequence mixers need the boundaries. Here every
registered mixer works on packed input: a mixer may define ``forward_packed(x, cu_seqlens)`` (returning None to
decline; softmax attention does:
projections on the whole stream, RoPE positions restarting at 0 in each sequence, attention within each sequence);
any other mixer is run on each sequence with a fresh state (``state = None``), so its state is reset at every
boundary and no information crosses between sequences. The next-token loss skips the last token of each sequence
(it has no target within its sequence).

Boundaries are explicit: there is no padding mask, and a token's output depends only on the tokens of its own
sequence before it (tested: packed logits == each sequence alone == right-padded batch rows on their real tokens).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.errors import SeqzooError
from .causal_lm import CausalLM, masked_token_loss


def pack(sequences: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Concatenate 1-D token tensors into ``(tokens [1, total], cu_seqlens [n + 1])``."""
    if not sequences or any(s.dim() != 1 or s.numel() == 0 for s in sequences):
        raise SeqzooError("pack needs a non-empty list of non-empty 1-D token tensors")
    lengths = torch.tensor([s.numel() for s in sequences], dtype=torch.int64)
    cu = torch.zeros(len(sequences) + 1, dtype=torch.int64)
    cu[1:] = lengths.cumsum(0)
    return torch.cat(sequences)[None], cu


def check_cu_seqlens(cu_seqlens: Tensor, total: int) -> list[tuple[int, int]]:
    """Validate ``cu_seqlens`` for a stream of ``total`` tokens and return the ``(start, end)`` of each sequence."""
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2 or cu_seqlens.dtype not in (torch.int32, torch.int64):
        raise SeqzooError(f"cu_seqlens must be a 1-D integer tensor [0, n_0, n_0+n_1, ..., total], got "
                          f"{list(cu_seqlens.shape)} {cu_seqlens.dtype}")
    bounds = cu_seqlens.tolist()
    if bounds[0] != 0 or bounds[-1] != total or any(b <= a for a, b in zip(bounds, bounds[1:])):
        raise SeqzooError(f"cu_seqlens must start at 0, increase strictly and end at the packed length {total}; "
                          f"got {bounds[:6]}{'...' if len(bounds) > 6 else ''}")
    return list(zip(bounds[:-1], bounds[1:]))


def mix_packed(mixer, x: Tensor, cu_seqlens: Tensor) -> Tensor:
    """A mixer applied to a packed stream ``x [1, total, D]``, sequence by sequence (state reset at boundaries)."""
    if hasattr(mixer, "forward_packed"):
        y = mixer.forward_packed(x, cu_seqlens)
        if y is not None:  # None: this mixer has no packed path of its own
            return y
    segments = check_cu_seqlens(cu_seqlens, x.shape[1])
    # torch.split (not slicing) so that the backward pass is one concatenation, not one full-size zero tensor
    # per sequence
    return torch.cat([mixer(part)[0] for part in torch.split(x, [b - a for a, b in segments], dim=1)], dim=1)


def packed_forward(model: CausalLM, tokens: Tensor, cu_seqlens: Tensor) -> Tensor:
    """Logits ``[1, total, V]`` of ``model`` on a packed stream ``tokens [1, total]`` (see module docstring)."""
    if tokens.dim() != 2 or tokens.shape[0] != 1:
        raise SeqzooError(f"packed tokens must have shape [1, total], got {list(tokens.shape)}")
    check_cu_seqlens(cu_seqlens, tokens.shape[1])
    x = model.embed(tokens)
    for block in model.blocks:
        x = x + mix_packed(block.mixer, block.mixer_norm(x), cu_seqlens)
        if block.ffn is not None:
            x = x + block.ffn(block.ffn_norm(x))
    return model.head(model.norm(x))


def packed_loss(model: CausalLM, tokens: Tensor, cu_seqlens: Tensor) -> Tensor:
    """Mean next-token cross-entropy over every position that has a next token within its own sequence."""
    logits = packed_forward(model, tokens, cu_seqlens)
    targets = torch.roll(tokens, -1, dims=1)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[0, cu_seqlens[1:] - 1] = False  # the last token of each sequence predicts nothing
    return masked_token_loss(logits, targets, mask)


def attention_forward_packed(mixer, x: Tensor, cu_seqlens: Tensor) -> Tensor:
    """Packed path of the softmax ``attention`` mixer: one projection of the whole stream, RoPE positions
    restarting in each sequence, attention restricted to each sequence (and to the window, if any)."""
    from ..ops import softmax_attention

    segments = check_cu_seqlens(cu_seqlens, x.shape[1])
    starts = torch.tensor([a for a, _ in segments], device=x.device)
    lengths = torch.tensor([b - a for a, b in segments], device=x.device)
    positions = torch.arange(x.shape[1], device=x.device) - torch.repeat_interleave(starts, lengths)
    q, k, v = mixer.project(x, torch.zeros(1, dtype=torch.int64, device=x.device), positions=positions[None])
    sizes = [b - a for a, b in segments]
    outs = [softmax_attention(qs, ks, vs, window=mixer.window, impl=mixer.impl)[0]
            for qs, ks, vs in zip(*(torch.split(t, sizes, dim=1) for t in (q, k, v)))]
    o = torch.cat(outs, dim=1)
    return mixer.o_proj(o.reshape(1, x.shape[1], mixer.d_model).to(x.dtype))


__all__ = ["pack", "check_cu_seqlens", "mix_packed", "packed_forward", "packed_loss", "attention_forward_packed"]
