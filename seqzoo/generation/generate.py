"""Autoregressive generation through the model state: prefill, then one token per step.

Prompts of different lengths need no padding: the shortest common length is prefilled in one batched call, then
every step feeds each sequence either its next prompt token (while its prompt lasts) or the token just sampled
for it. Every mixer sees exactly the tokens of its own sequence, so the result equals generating each prompt
alone, for recurrent mixers as well as for attention (no padding tokens ever enter a state).

``use_cache=False`` re-runs the whole sequence at every step instead of stepping the state: the slow reference
that cached decoding is tested against.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core.errors import SeqzooError
from .sampling import check_sampling, sample_next


def _as_prompt_list(prompts) -> list[list[int]]:
    if isinstance(prompts, Tensor):
        if prompts.dim() == 1:
            prompts = prompts[None]
        return [row.tolist() for row in prompts]
    out = [list(map(int, p)) for p in prompts]
    return out


@torch.no_grad()
def generate(model: nn.Module, prompts, max_new_tokens: int, *, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, eos_id: int | None = None, seed: int | None = None,
             use_cache: bool = True) -> list[list[int]]:
    """Continue each prompt by up to ``max_new_tokens`` tokens; returns the new tokens of each prompt.

    ``model(tokens, state) -> (logits, state)`` is any model with the CausalLM calling convention.
    """
    check_sampling(temperature, top_k, top_p)
    prompts = _as_prompt_list(prompts)
    if not prompts or any(len(p) == 0 for p in prompts):
        raise SeqzooError("every prompt needs at least one token (for byte models: a non-empty string)")
    if max_new_tokens < 0:
        raise SeqzooError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    lengths = [len(p) for p in prompts]
    batch, common = len(prompts), min(lengths)
    total = max(lengths) + max_new_tokens  # the longest any sequence can get
    sequences = [list(p[:common]) for p in prompts]  # what each row has fed so far
    new_tokens: list[list[int]] = [[] for _ in prompts]
    done = [max_new_tokens == 0] * batch

    prefix = torch.tensor([p[:common] for p in prompts], device=device)
    logits, state = model(prefix, None)
    last = logits[:, -1]
    for pos in range(common, total):
        if all(done):
            break
        sampled = sample_next(last, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator).tolist()
        feed = []
        for b in range(batch):
            if pos < lengths[b]:
                token = prompts[b][pos]
            else:
                token = sampled[b] if not done[b] else (eos_id if eos_id is not None else sampled[b])
                if not done[b]:
                    new_tokens[b].append(token)
                    done[b] = len(new_tokens[b]) >= max_new_tokens or (eos_id is not None and token == eos_id)
            sequences[b].append(token)
            feed.append(token)
        if all(done):
            break
        if use_cache:
            logits, state = model(torch.tensor(feed, device=device)[:, None], state)
            last = logits[:, -1]
        else:
            # reference path: recompute every sequence from scratch (rows have different lengths → one at a time)
            last = torch.cat([model(torch.tensor([s], device=device), None)[0][:, -1] for s in sequences])
    return new_tokens
