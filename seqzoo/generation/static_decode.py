"""Greedy decoding with fixed-shape state buffers, so one decode step can be captured as a CUDA graph.

Plain decoding (``generate``) launches every kernel of every layer from Python at each token; at batch 1 a small
model is then bound by launch overhead, not by the GPU. Replaying a captured CUDA graph removes that overhead, but
a graph needs every tensor it touches to keep its address and shape between replays. This module provides that:

* layers whose mixer has a constant-size state (``constant_state = True``: DeltaNet, Mamba, retention, …) keep their
  state in buffers allocated after the prefill; each step writes the new state into them (``copy_``);
* full causal softmax attention (the ``attention`` mixer without a window) gets a static KV cache of
  ``max_len`` slots. The step writes the new key/value at slot ``pos`` and attends over all slots with the mask
  ``slot ≤ pos``, which gives exactly the same result as the growing cache (masked slots get zero weight) at the
  cost of reading ``max_len`` slots per step.

All rows of the batch share one position (prompts of equal length). ``StaticGreedyDecoder`` runs on any device;
on CUDA, ``graph=True`` captures the step once and replays it. ``tests/test_static_decode.py`` checks it against
``generate`` (greedy) on CPU for attention, a constant-state mixer and a hybrid; ``benchmarks/gpu_decode.py`` times
it on a GPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.errors import SeqzooError


class _StaticAttentionStep(nn.Module):
    """Decode step of a ``SoftmaxAttention`` mixer over a preallocated KV cache (one token per row)."""

    def __init__(self, mixer: nn.Module, k_cache: Tensor, v_cache: Tensor, pos: Tensor):
        super().__init__()
        self.mixer, self.k_cache, self.v_cache, self.pos = mixer, k_cache, v_cache, pos
        self.slots = torch.arange(k_cache.shape[1], device=k_cache.device)

    def forward(self, x: Tensor, state=None):
        m = self.mixer
        batch = x.shape[0]
        q, k, v = m.project(x, self.pos.expand(batch))
        slot = self.pos  # [1] int64 on the device: no host synchronisation
        self.k_cache.index_copy_(1, slot, k.to(self.k_cache.dtype))
        self.v_cache.index_copy_(1, slot, v.to(self.v_cache.dtype))
        visible = (self.slots <= slot)[None, None, None, :]  # [1, 1, 1, max_len]
        o = F.scaled_dot_product_attention(q.transpose(1, 2), self.k_cache.transpose(1, 2).to(q.dtype),
                                           self.v_cache.transpose(1, 2).to(q.dtype), attn_mask=visible,
                                           enable_gqa=m.n_kv_heads != m.n_heads)
        return m.o_proj(o.transpose(1, 2).reshape(batch, 1, m.d_model).to(x.dtype)), state


class StaticGreedyDecoder:
    """Greedy decoding of a :class:`~seqzoo.models.CausalLM` with static state buffers (see module docstring).

    ``decode(prompt, n)`` prefills ``prompt`` ``[B, T]`` with the model's ordinary forward, moves the state into
    static buffers sized for ``T + n`` tokens, then emits ``n`` greedy tokens ``[B, n]``. With ``graph=True`` (CUDA
    only) the step is captured once and replayed. The buffers and the captured graph are kept for the next call
    with the same batch size and ``T + n`` (prompts of another length reuse them: the position is a device tensor),
    so repeated decoding pays the capture once. ``compile=True`` runs the step through ``torch.compile`` (fusing the
    norms, rotary embedding and gated FFN into few kernels) before capturing it.
    """

    def __init__(self, model: nn.Module, *, graph: bool = False, compile: bool = False):
        self.model = model
        self.graph = graph
        self.compile = compile
        self._session = None  # (key, buffers, steppers, token_buf, pos, run)
        for block in model.blocks:
            mixer = block.mixer
            if not (_is_full_attention(mixer) or getattr(mixer, "constant_state", False)):
                raise SeqzooError(f"static decoding supports full 'attention' and constant-state mixers; layer "
                                  f"mixer {getattr(mixer, 'registry_name', type(mixer).__name__)!r} is neither")

    def _build_session(self, state, batch: int, max_len: int, device):
        """Static buffers shaped after the prefill ``state`` and the step function that reads and writes them."""
        model = self.model
        pos = torch.zeros(1, dtype=torch.int64, device=device)
        steppers, buffers = [], []
        for block, layer_state in zip(model.blocks, state):
            if _is_full_attention(block.mixer):
                k = layer_state["k"]
                k_cache = k.new_zeros(batch, max_len, *k.shape[2:])
                steppers.append(_StaticAttentionStep(block.mixer, k_cache, torch.zeros_like(k_cache), pos))
                buffers.append(None)
            else:
                steppers.append(None)
                buffers.append({key: torch.zeros_like(value) for key, value in layer_state.items()})
        token_buf = torch.zeros(batch, 1, dtype=torch.int64, device=device)

        def step() -> None:
            x = model.embed(token_buf)
            for block, stepper, buf in zip(model.blocks, steppers, buffers):
                h_in = block.mixer_norm(x)
                if stepper is not None:
                    h, _ = stepper(h_in)
                else:
                    h, new_state = block.mixer(h_in, buf)
                    for key, value in new_state.items():
                        buf[key].copy_(value)
                x = x + h
                if block.ffn is not None:
                    x = x + block.ffn(block.ffn_norm(x))
            token_buf.copy_(model.head(model.norm(x)).argmax(-1))
            pos.add_(1)

        return buffers, steppers, token_buf, pos, (torch.compile(step) if self.compile else step)

    @staticmethod
    def _load(state, token, prompt_len, buffers, steppers, token_buf, pos) -> None:
        """Copy the prefill's state, first token and position into the static buffers."""
        for layer_state, stepper, buf in zip(state, steppers, buffers):
            if stepper is not None:
                stepper.k_cache[:, :prompt_len] = layer_state["k"]
                stepper.v_cache[:, :prompt_len] = layer_state["v"]
            else:
                for key, value in layer_state.items():
                    buf[key].copy_(value)
        token_buf.copy_(token)
        pos.fill_(prompt_len)

    @torch.no_grad()
    def decode(self, prompt: Tensor, max_new_tokens: int) -> Tensor:
        model = self.model
        if prompt.dim() != 2 or prompt.shape[1] == 0:
            raise SeqzooError(f"prompt must be [B, T] token ids with T >= 1, got {list(prompt.shape)}")
        if max_new_tokens <= 0:
            raise SeqzooError(f"max_new_tokens must be positive, got {max_new_tokens}")
        if self.graph and prompt.device.type != "cuda":
            raise SeqzooError("graph=True needs a CUDA model and prompt; use graph=False on CPU")
        batch, prompt_len = prompt.shape
        max_len = prompt_len + max_new_tokens
        logits, state = model(prompt, None)
        token = logits[:, -1:].argmax(-1)  # [B, 1], the first new token
        out = torch.empty(batch, max_new_tokens, dtype=torch.int64, device=prompt.device)
        out[:, :1] = token
        if max_new_tokens == 1:
            return out

        key = (batch, max_len, prompt.device, next(model.parameters()).dtype)
        if self._session is None or self._session[0] != key:
            buffers, steppers, token_buf, pos, step = self._build_session(state, batch, max_len, prompt.device)
            run = step
            if self.graph:
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):  # warm-up outside the graph (allocations, compilation, autotuning)
                    for _ in range(2):
                        self._load(state, token, prompt_len, buffers, steppers, token_buf, pos)
                        step()
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    step()
                run = graph.replay
            self._session = (key, buffers, steppers, token_buf, pos, run)
        _, buffers, steppers, token_buf, pos, run = self._session
        self._load(state, token, prompt_len, buffers, steppers, token_buf, pos)
        for i in range(1, max_new_tokens):
            run()
            out[:, i:i + 1] = token_buf
        return out


def _is_full_attention(mixer) -> bool:
    return getattr(mixer, "registry_name", "") == "attention" and mixer.window is None


