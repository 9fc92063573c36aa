"""Block Transformer: a global block decoder over coarse blocks of tokens, a local token decoder within each block.

Paper: "Block Transformer: Global-to-Local Language Modeling for Fast Inference", Ho, Bae, Kim, Jo, Kim, Schuster,
Fisch, Thorne and Yun, 2024, arXiv 2406.02657 (the "prefix" token-decoding strategy with a lookup embedder, the
paper's main configuration).

Tokens ``x_0, x_1, …`` are grouped into blocks of ``L = block_len`` tokens; block ``b`` holds ``x_{bL} … x_{bL+L-1}``.

    Embedder:        e_b = W_e · concat(E[x_{bL}], …, E[x_{bL+L-1}])            (E: V × d_e lookup, W_e: L·d_e → d_g)
    Block decoder:   c_0, c_1, c_2, … = Norm(Global([s, e_0, e_1, …]))          (causal, any registered mixer;
                                                                                  s: a learned start embedding)
    Token decoder:   for block b, the input sequence is
                         [p_b^1, …, p_b^P, BOS, F[x_{bL}], …, F[x_{bL+L-2}]]   with  (p_b^1 … p_b^P) = W_x c_b
                     (W_x: d_g → P·d_t, the paper's "expansion layer"; F: V × d_t lookup; BOS: learned vector)
                     h = Norm(Local(that sequence)), a causal stack whose state starts empty in every block.
    Head:            the output at BOS predicts x_{bL}; the output at x_{bL+j} predicts x_{bL+j+1} (j ≤ L-2).

The shift that keeps it causal: the context ``c_b`` used for block ``b`` is the block decoder's output at the
position of ``e_{b-1}`` (``c_0`` at the start embedding), so it summarises blocks ``< b`` only; tokens of block
``b`` reach a prediction only through the token decoder's own causal attention inside the block. The paper (and its
code) drops the predictions of the first block and pads the first block at random during training; here a learned
start embedding ``s`` stands in front of the block sequence instead, so every token gets a prediction and the model
has the ordinary language-model interface.

Calling convention (the same as :class:`~seqzoo.models.CausalLM`, so :func:`seqzoo.generation.generate` drives it):
``model(tokens [B, T], state) -> (logits [B, T, V], state)`` where ``logits[:, t]`` predicts token ``t + 1``. The
state has the paper's two caches plus the tokens of the unfinished block:

    {"global":  block-decoder layer states (KV caches over the start + finished blocks; grows once per block),
     "local":   token-decoder layer states for the current block only ([prefix, BOS, tokens so far]: at most
                P + L entries; rebuilt from scratch when a block completes),
     "pending": int64 [B, k], the k < L tokens of the current block (embedded once the block is complete)}

so a sequence can be fed in any split (prefill, then one token at a time) with the same logits as one call. During
decoding the block decoder runs once per L tokens; the token decoder's cost per token does not depend on the
context length. All rows of a batch must have been fed the same number of tokens (the generation engine feeds
prompts in lockstep, so this always holds there).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..core.errors import SeqzooError
from ..core.registry import mixer_entry
from ..core.state import state_numel
from .causal_lm import Block, masked_token_loss, run_blocks
from .config import ModelConfig


@dataclass
class BlockTransformerConfig:
    """Shape of a :class:`BlockTransformer`.

    ``block_mixer`` / ``token_mixer``: registered causal mixers of the block and token decoders (a name, or a list
    used as a repeating pattern over their layers); ``mixer_options`` maps a mixer name to its options (shared by
    both decoders). ``embed_dim`` is the lookup width per token (default ``d_block // block_len``, as in the
    paper's lookup embedder); ``prefix_len`` is P, the number of prefix vectors the context embedding expands into.
    """

    vocab_size: int = 256
    block_len: int = 4
    d_block: int = 128
    n_block_layers: int = 3
    block_mixer: str | list[str] = "attention"
    d_token: int = 128
    n_token_layers: int = 3
    token_mixer: str | list[str] = "attention"
    prefix_len: int = 2
    embed_dim: int | None = None
    mixer_options: dict = field(default_factory=dict)
    ffn: str = "glu"
    ffn_hidden: int | None = None
    tie_embeddings: bool = True
    norm_eps: float = 1e-5
    init_std: float = 0.02

    def _stack(self, d_model: int, n_layers: int, mixer) -> ModelConfig:
        return ModelConfig(vocab_size=self.vocab_size, d_model=d_model, n_layers=n_layers, mixer=mixer,
                           mixer_options=self.mixer_options, ffn=self.ffn, ffn_hidden=self.ffn_hidden,
                           norm_eps=self.norm_eps, init_std=self.init_std)

    def block_decoder_config(self) -> ModelConfig:
        return self._stack(self.d_block, self.n_block_layers, self.block_mixer)

    def token_decoder_config(self) -> ModelConfig:
        return self._stack(self.d_token, self.n_token_layers, self.token_mixer)

    def validate(self) -> None:
        for key in ("vocab_size", "block_len", "d_block", "n_block_layers", "d_token", "n_token_layers",
                    "prefix_len"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise SeqzooError(f"block_transformer.{key} must be a positive int, got {value!r}")
        if self.embed_dim is not None and (not isinstance(self.embed_dim, int) or self.embed_dim <= 0):
            raise SeqzooError(f"block_transformer.embed_dim must be a positive int or None, got {self.embed_dim!r}")
        if self.embed_dim is None and self.d_block < self.block_len:
            raise SeqzooError(f"d_block={self.d_block} is smaller than block_len={self.block_len}; set embed_dim "
                              f"or use d_block >= block_len")
        if self.ffn not in ("glu", "mlp", "none"):
            raise SeqzooError(f"block_transformer.ffn {self.ffn!r} is not valid; valid: 'glu', 'mlp', 'none'")
        for role, cfg in (("block", self.block_decoder_config()), ("token", self.token_decoder_config())):
            cfg.validate()
            for name in cfg.layer_mixers():
                if not mixer_entry(name).cls.causal:
                    raise SeqzooError(f"{role}_mixer {name!r} is not causal; the {role} decoder needs a causal "
                                      f"mixer (one whose class sets causal = True)")

    @property
    def token_embed_dim(self) -> int:
        return self.embed_dim if self.embed_dim is not None else self.d_block // self.block_len


def _init_stack(blocks: nn.ModuleList, std: float, n_layers: int) -> None:
    """Normal(0, std) FFN weights, the last FFN projection scaled by 1/sqrt(2·n_layers) (as in CausalLM)."""
    for block in blocks:
        if block.ffn is None:
            continue
        linears = [m for m in block.ffn.modules() if isinstance(m, nn.Linear)]
        for lin in linears:
            nn.init.normal_(lin.weight, std=std)
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)
        linears[-1].weight.data.mul_((2 * n_layers) ** -0.5)


class BlockTransformer(nn.Module):
    """Global-to-local language model (see the module docstring for the equations and the state)."""

    def __init__(self, cfg: BlockTransformerConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        L, P, d_g, d_t, d_e = cfg.block_len, cfg.prefix_len, cfg.d_block, cfg.d_token, cfg.token_embed_dim
        # embedder: per-token lookup, concatenated over the block, projected to the block decoder width
        self.embed = nn.Embedding(cfg.vocab_size, d_e)
        self.embed_proj = nn.Linear(L * d_e, d_g, bias=False)
        self.start = nn.Parameter(torch.zeros(d_g))
        gcfg, lcfg = cfg.block_decoder_config(), cfg.token_decoder_config()
        self.block_decoder = nn.ModuleList(Block(gcfg, name) for name in gcfg.layer_mixers())
        self.block_norm = nn.RMSNorm(d_g, eps=cfg.norm_eps)
        # expansion layer: one context embedding -> P prefix vectors of the token decoder
        self.expand = nn.Linear(d_g, P * d_t)
        self.token_embed = nn.Embedding(cfg.vocab_size, d_t)
        self.bos = nn.Parameter(torch.zeros(d_t))
        self.token_decoder = nn.ModuleList(Block(lcfg, name) for name in lcfg.layer_mixers())
        self.norm = nn.RMSNorm(d_t, eps=cfg.norm_eps)
        self.head = nn.Linear(d_t, cfg.vocab_size, bias=False)
        for weight in (self.embed.weight, self.token_embed.weight, self.head.weight, self.start, self.bos):
            nn.init.normal_(weight, std=cfg.init_std)
        nn.init.normal_(self.embed_proj.weight, std=cfg.init_std)
        nn.init.normal_(self.expand.weight, std=cfg.init_std)
        nn.init.zeros_(self.expand.bias)
        _init_stack(self.block_decoder, cfg.init_std, cfg.n_block_layers)
        _init_stack(self.token_decoder, cfg.init_std, cfg.n_token_layers)
        if cfg.tie_embeddings:
            self.head.weight = self.token_embed.weight

    # -- pieces -------------------------------------------------------------------------------------------------
    @staticmethod
    def _run(blocks: nn.ModuleList, x: Tensor, states: list | None) -> tuple[Tensor, list]:
        return run_blocks(blocks, x, states)

    def embed_blocks(self, tokens: Tensor) -> Tensor:
        """``[B, m·L]`` token ids of m complete blocks -> block embeddings ``[B, m, d_block]``."""
        batch, length = tokens.shape
        per_token = self.embed(tokens).view(batch, length // self.cfg.block_len, -1)
        return self.embed_proj(per_token)

    def block_contexts(self, block_inputs: Tensor, states: list | None) -> tuple[Tensor, list]:
        """Run the block decoder over ``[B, m, d_block]`` inputs; returns the normed outputs (contexts)."""
        h, states = self._run(self.block_decoder, block_inputs, states)
        return self.block_norm(h), states

    def prefixes(self, contexts: Tensor) -> Tensor:
        """Context embeddings ``[..., d_block]`` -> prefix vectors ``[..., P, d_token]``."""
        return self.expand(contexts).unflatten(-1, (self.cfg.prefix_len, self.cfg.d_token))

    def decode_tokens(self, seq: Tensor, states: list | None) -> tuple[Tensor, list]:
        """Run the token decoder over ``[N, T, d_token]`` (one block per row); returns normed hidden states."""
        h, states = self._run(self.token_decoder, seq, states)
        return self.norm(h), states

    def _bos(self, *lead: int) -> Tensor:
        return self.bos.expand(*lead, 1, self.cfg.d_token)

    # -- contract -----------------------------------------------------------------------------------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None) -> dict:
        """State before any token: the block decoder has read the start embedding, and the token decoder of
        block 0 has read [prefix(c_0), BOS]."""
        device = device if device is not None else self.start.device
        dtype = dtype if dtype is not None else self.start.dtype
        start = self.start.to(device=device, dtype=dtype).expand(batch_size, 1, -1)
        context, global_state = self.block_contexts(start, None)
        first = torch.cat([self.prefixes(context[:, 0]), self._bos(batch_size)], dim=1)
        _, local_state = self.decode_tokens(first, None)
        pending = torch.zeros(batch_size, 0, dtype=torch.int64, device=device)
        return {"global": global_state, "local": local_state, "pending": pending}

    def _check(self, tokens: Tensor, state) -> None:
        if tokens.dim() != 2 or tokens.dtype not in (torch.int64, torch.int32):
            raise SeqzooError(f"inputs must be [B, T] integer token ids, got {list(tokens.shape)} {tokens.dtype}")
        if state is not None:
            if not isinstance(state, dict) or set(state) != {"global", "local", "pending"}:
                got = sorted(state) if isinstance(state, dict) else type(state).__name__
                raise SeqzooError(f"block transformer state must be a dict with keys global, local, pending "
                                  f"(use init_state or a returned state), got {got}")
            if state["pending"].shape[0] != tokens.shape[0]:
                raise SeqzooError(f"state is for batch {state['pending'].shape[0]}, inputs have batch "
                                  f"{tokens.shape[0]}")

    def forward(self, tokens: Tensor, state: dict | None = None) -> tuple[Tensor, dict]:
        """``tokens [B, n]`` continuing ``state`` -> ``(logits [B, n, V], new_state)``; see the module docstring."""
        self._check(tokens, state)
        batch, n = tokens.shape
        L, P = self.cfg.block_len, self.cfg.prefix_len
        if state is None:
            state = self.init_state(batch, device=tokens.device, dtype=self.start.dtype)
        pending, global_state, local_state = state["pending"], state["global"], state["local"]
        k = pending.shape[1]  # tokens of the current block already read
        tokens = tokens.long()

        # (1) tokens of the current block that predict a token of the same block (in-block index <= L-2)
        fed = min(n, L - 1 - k)
        pieces = []
        if fed > 0:
            h, local_state = self.decode_tokens(self.token_embed(tokens[:, :fed]), local_state)
            pieces.append(h)
        blocks_done = (k + n) // L
        if blocks_done == 0:
            hidden = pieces[0] if pieces else tokens.new_zeros(batch, 0, self.cfg.d_token, dtype=self.bos.dtype)
            new_state = {"global": global_state, "local": local_state, "pending": torch.cat([pending, tokens], 1)}
            return self.head(hidden), new_state

        # (2) every block completed by this chunk goes through the block decoder once
        all_tokens = torch.cat([pending, tokens], dim=1)
        contexts, global_state = self.block_contexts(self.embed_blocks(all_tokens[:, :blocks_done * L]),
                                                     global_state)
        prefix = self.prefixes(contexts)  # [B, m, P, d_t]: prefix i serves the block after completed block i
        rest = tokens[:, L - k:]  # tokens after the current block
        tail_len = (k + n) - blocks_done * L

        # (3) blocks that start and finish inside this chunk: one batched token-decoder call, fresh states
        if blocks_done > 1:
            m = blocks_done - 1
            full = rest[:, :m * L].view(batch, m, L)[:, :, :L - 1]
            seq = torch.cat([prefix[:, :m], self._bos(batch, m), self.token_embed(full)], dim=2)
            h, _ = self.decode_tokens(seq.flatten(0, 1), None)
            pieces.append(h[:, P:].reshape(batch, m * L, -1))  # per block: BOS output, then L-1 token outputs

        # (4) the block left unfinished: its token-decoder state is the new local cache
        tail = rest[:, (blocks_done - 1) * L:]
        seq = torch.cat([prefix[:, -1], self._bos(batch), self.token_embed(tail)], dim=1)
        h, local_state = self.decode_tokens(seq, None)
        pieces.append(h[:, P:])
        hidden = torch.cat(pieces, dim=1)
        assert hidden.shape[1] == n and tail.shape[1] == tail_len
        return self.head(hidden), {"global": global_state, "local": local_state, "pending": tail}

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        """Mean next-token cross-entropy over positions where ``loss_mask`` is set (all when absent)."""
        logits, _ = self(batch["inputs"])
        return masked_token_loss(logits, batch["targets"], batch.get("loss_mask"))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())

    @torch.no_grad()
    def state_size(self, seq_len: int) -> int:
        """State elements per sequence after ``seq_len`` tokens (measured by running the model)."""
        _, state = self(torch.zeros(1, seq_len, dtype=torch.int64, device=self.start.device))
        return state_numel(state)


__all__ = ["BlockTransformer", "BlockTransformerConfig"]
