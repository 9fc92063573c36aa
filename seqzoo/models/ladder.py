"""Ladder residual: a residual wiring that lets tensor-parallel communication overlap with compute.

Paper: "Ladder-residual: parallelism-aware architecture for accelerating large model inference with communication
overlapping", Zhang, Mishra et al. 2025, arXiv 2501.06589.

A pre-norm Transformer alternates modules (mixer, FFN, mixer, FFN, …); module m normally reads the residual stream
that already contains the output of module m − 1:

    standard:  r ← r + Mixer_l(N(r));   r ← r + FFN_l(N(r))

Under tensor parallelism (Megatron: column-parallel input projections, row-parallel output projections) each
module's output is a partial sum that needs an all-reduce before the next module can start, so communication and
compute serialise. The ladder wiring lets each module read a residual that lags by one module:

    ladder:    r ← r + a_{l−1};   a_l = Mixer_l(N(r))        (a_{l−1}: previous layer's mixer output)
               r ← r + f_{l−1};   f_l = FFN_l(N(r))          (f_{l−1}: previous layer's FFN output)
               after the last layer: r ← r + a_L + f_L

Module m's input thus excludes module m − 1's output, so the all-reduce of a_l can run (``async_op=True``) while
f_l is computed, and the all-reduce of f_l while a_{l+1} is computed; each handle is waited on only when its
output is first added to the residual. ``ladder_layers = k`` applies the wiring to the last k layers only (the
paper converts the upper layers of a pretrained model); the others stay standard.

:class:`LadderLM` is a :class:`~seqzoo.models.CausalLM` (same blocks, parameters and checkpoints) with this forward.
:func:`tensor_parallel_forward` runs a LadderLM whose mixers are full softmax ``attention`` and whose FFNs are GLU
under Megatron-style tensor parallelism across the ranks of the default process group (gloo on CPU, NCCL on GPU):
each rank keeps its share of the heads and of the FFN hidden units, and the row-parallel outputs are all-reduced
asynchronously as above. Tested: TP on 2 processes equals the single-process model (``tests/test_ladder.py``).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.errors import SeqzooError
from .causal_lm import CausalLM
from .config import ModelConfig


class LadderLM(CausalLM):
    """CausalLM with the ladder residual on its last ``ladder_layers`` layers (None = all layers)."""

    def __init__(self, cfg: ModelConfig, ladder_layers: int | None = None):
        super().__init__(cfg)
        n = cfg.n_layers if ladder_layers is None else ladder_layers
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= cfg.n_layers:
            raise SeqzooError(f"ladder_layers must be an int in [0, {cfg.n_layers}] or None, got {ladder_layers!r}")
        self.ladder_layers = n

    def forward(self, inputs: Tensor, state: list | None = None) -> tuple[Tensor, list]:
        x = self.embed_inputs(inputs)
        state = [None] * len(self.blocks) if state is None else state
        if len(state) != len(self.blocks):
            raise SeqzooError(f"state has {len(state)} layer states; this model has {len(self.blocks)} layers")
        first_ladder = len(self.blocks) - self.ladder_layers
        pending: list[Tensor] = []  # module outputs not yet added to the residual (at most two)
        new_state = []
        for i, (block, layer_state) in enumerate(zip(self.blocks, state)):
            if i < first_ladder:
                x, layer_state = block(x, layer_state)
                new_state.append(layer_state)
                continue
            if pending:
                x = x + pending.pop(0)                      # r ← r + a_{l−1}
            mixed, layer_state = block.mixer(block.mixer_norm(x), layer_state)
            new_state.append(layer_state)
            if pending:
                x = x + pending.pop(0)                      # r ← r + f_{l−1}
            pending.append(mixed)
            if block.ffn is not None:
                pending.append(block.ffn(block.ffn_norm(x)))
            else:
                pending.append(torch.zeros_like(x))
        for out in pending:
            x = x + out
        return self.head(self.norm(x)), new_state


# -- tensor parallelism ------------------------------------------------------------------------------------------
class _AsyncSum:
    """A partial sum whose all-reduce is in flight; ``.wait()`` returns the full sum."""

    def __init__(self, partial: Tensor, group=None):
        self.tensor = partial
        self.handle = dist.all_reduce(partial, op=dist.ReduceOp.SUM, group=group, async_op=True)

    def wait(self) -> Tensor:
        self.handle.wait()
        return self.tensor


def _attention_shard(mixer, x: Tensor, rank: int, world: int) -> Tensor:
    """This rank's partial output of a full causal ``attention`` mixer: its heads only, through the matching
    columns of the output projection (column-parallel q/k/v, row-parallel o)."""
    if getattr(mixer, "registry_name", "") != "attention" or mixer.window is not None:
        raise SeqzooError("tensor_parallel_forward supports full 'attention' mixers only")
    if mixer.n_kv_heads % world or mixer.n_heads % world:
        raise SeqzooError(f"tensor parallelism over {world} ranks needs n_heads={mixer.n_heads} and "
                          f"n_kv_heads={mixer.n_kv_heads} divisible by {world}")
    hd, h_local, kv_local = mixer.head_dim, mixer.n_heads // world, mixer.n_kv_heads // world
    batch, length, _ = x.shape
    q_rows = slice(rank * h_local * hd, (rank + 1) * h_local * hd)
    kv_rows = slice(rank * kv_local * hd, (rank + 1) * kv_local * hd)

    def shard(lin: nn.Linear, rows: slice) -> Tensor:
        bias = lin.bias[rows] if lin.bias is not None else None
        return F.linear(x, lin.weight[rows], bias)

    q = shard(mixer.q_proj, q_rows).view(batch, length, h_local, hd)
    k = shard(mixer.k_proj, kv_rows).view(batch, length, kv_local, hd)
    v = shard(mixer.v_proj, kv_rows).view(batch, length, kv_local, hd)
    if mixer.rotary is not None:
        start = torch.zeros(batch, dtype=torch.int64, device=x.device)
        q, k = mixer.rotary(q, start), mixer.rotary(k, start)
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True,
                                       enable_gqa=kv_local != h_local)
    o = o.transpose(1, 2).reshape(batch, length, h_local * hd)
    partial = F.linear(o, mixer.o_proj.weight[:, q_rows])
    if mixer.o_proj.bias is not None and rank == 0:
        partial = partial + mixer.o_proj.bias
    return partial


def _glu_shard(ffn, x: Tensor, rank: int, world: int) -> Tensor:
    """This rank's partial output of a GLU FFN: its share of the hidden units (column-parallel gate/up,
    row-parallel down)."""
    if not hasattr(ffn, "w_gate_up"):
        raise SeqzooError("tensor_parallel_forward supports GLU FFNs only (model.ffn = 'glu')")
    hidden = ffn.w_down.in_features
    if hidden % world:
        raise SeqzooError(f"FFN hidden size {hidden} is not divisible by {world} ranks")
    part = hidden // world
    cols = slice(rank * part, (rank + 1) * part)
    gate = F.linear(x, ffn.w_gate_up.weight[cols])
    up = F.linear(x, ffn.w_gate_up.weight[hidden + rank * part: hidden + (rank + 1) * part])
    return F.linear(F.silu(gate) * up, ffn.w_down.weight[:, cols])


@torch.no_grad()
def tensor_parallel_forward(model: LadderLM, tokens: Tensor, group=None) -> Tensor:
    """Logits of ``model`` on ``tokens`` with Megatron-style tensor parallelism over the ranks of ``group``.

    Every rank holds the full model (sharding is by slicing weights, so one checkpoint serves any world size) and
    the same ``tokens``; each computes its heads / hidden units and the partial outputs are all-reduced. For
    ladder layers the all-reduce is asynchronous and overlaps the next module's compute; for standard layers it
    is waited on at once. Returns the full logits on every rank.
    """
    if not (dist.is_available() and dist.is_initialized()):
        raise SeqzooError("tensor_parallel_forward needs an initialised torch.distributed process group")
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    x = model.embed_inputs(tokens)
    first_ladder = len(model.blocks) - model.ladder_layers
    pending: list[_AsyncSum] = []
    for i, block in enumerate(model.blocks):
        if block.ffn is None:
            raise SeqzooError("tensor_parallel_forward needs an FFN in every block")
        if i < first_ladder:
            x = x + _AsyncSum(_attention_shard(block.mixer, block.mixer_norm(x), rank, world), group).wait()
            x = x + _AsyncSum(_glu_shard(block.ffn, block.ffn_norm(x), rank, world), group).wait()
            continue
        if pending:
            x = x + pending.pop(0).wait()
        pending.append(_AsyncSum(_attention_shard(block.mixer, block.mixer_norm(x), rank, world), group))
        if len(pending) > 1:
            x = x + pending.pop(0).wait()
        pending.append(_AsyncSum(_glu_shard(block.ffn, block.ffn_norm(x), rank, world), group))
    for out in pending:
        x = x + out.wait()
    return model.head(model.norm(x))


__all__ = ["LadderLM", "tensor_parallel_forward"]
