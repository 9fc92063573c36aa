"""HAT: a hierarchical autoregressive byte/word model.

Paper: "Hierarchical Autoregressive Transformers: Combining Byte- and Word-Level Processing for Robust, Adaptable
Language Models", Neitemeier et al. 2025, arXiv 2501.10322.

Text is split into words (:func:`split_words`: a run of non-whitespace bytes plus the whitespace that follows it,
long words cut at UTF-8 character boundaries every ``max_word_len`` bytes, so ``b"".join(words) == text``). Three
modules, with ``[W]`` (id 256) a word-start token and ``[E]`` (id 257) an end-of-word target:

    encoder   e_j = Enc([W], b_{j,1..n_j})[0]          bidirectional, within word j only; its output at [W]
    backbone  o_0 … o_J = Backbone(s, e_0, …, e_{J−1})  causal over words (any registered mixer); s a learned start
    decoder   p(b_{j,k} | o_j, b_{j,<k})               causal over the sequence (o_j ; b_{j,1} … b_{j,n_j}),
              targets b_{j,1} … b_{j,n_j}, [E]          (o_j projected into the [W] slot)

so word j is predicted from the backbone summary of words < j and its own earlier bytes: perturbing word j changes
no probability of an earlier word (tested). The loss is the byte-level cross-entropy over all bytes plus the [E]
of each word; bits per byte divide that total by the number of bytes. Generation is a nested loop: the decoder emits
the bytes of one word until [E], the encoder embeds the finished word, and the backbone takes one step with its
state. Teacher-forced log-likelihoods equal the product of the incremental decoding probabilities (tested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.errors import SeqzooError
from .causal_lm import Block, run_blocks
from .config import ModelConfig

WORD_START, END_OF_WORD, VOCAB = 256, 257, 258
_ASCII_SPACE = frozenset(b" \t\n\r\x0b\x0c")  # UTF-8 never uses these byte values inside a character


def split_words(data: bytes, max_word_len: int = 16) -> list[bytes]:
    """Words of ``data``: a run of non-(ASCII-)whitespace bytes plus the whitespace after it, cut at UTF-8
    character boundaries into pieces of at most ``max_word_len`` bytes."""
    if max_word_len < 4:
        raise SeqzooError(f"max_word_len must be >= 4 (one UTF-8 character), got {max_word_len}")
    words, start, n = [], 0, len(data)
    while start < n:
        end = start
        while end < n and data[end] not in _ASCII_SPACE:
            end += 1
        while end < n and data[end] in _ASCII_SPACE:
            end += 1
        while end - start > max_word_len:
            cut = start + max_word_len
            while cut > start + 1 and (data[cut] & 0xC0) == 0x80:  # never cut inside a UTF-8 character
                cut -= 1
            words.append(data[start:cut])
            start = cut
        words.append(data[start:end])
        start = end
    return words


def words_to_tensor(words: list[bytes], max_word_len: int) -> tuple[Tensor, Tensor]:
    """``(bytes [J, max_word_len] padded with 0, lengths [J])``."""
    out = torch.zeros(len(words), max_word_len, dtype=torch.int64)
    for j, w in enumerate(words):
        if not 0 < len(w) <= max_word_len:
            raise SeqzooError(f"word {j} has {len(w)} bytes; valid: 1..{max_word_len} (use split_words)")
        out[j, : len(w)] = torch.tensor(list(w), dtype=torch.int64)
    return out, torch.tensor([len(w) for w in words], dtype=torch.int64)


class HAT(nn.Module):
    """Byte encoder → word backbone (``backbone_mixer``, any registered causal mixer) → byte decoder."""

    def __init__(self, *, d_byte: int = 128, d_word: int = 256, encoder_layers: int = 2, backbone_layers: int = 4,
                 decoder_layers: int = 2, n_heads: int = 4, backbone_mixer: str = "attention",
                 max_word_len: int = 16):
        super().__init__()
        self.max_word_len = max_word_len
        self.byte_embed = nn.Embedding(VOCAB, d_byte)
        self.byte_pos = nn.Parameter(torch.randn(max_word_len + 1, d_byte) * 0.02)
        enc_layer = nn.TransformerEncoderLayer(d_byte, n_heads, 4 * d_byte, dropout=0.0, batch_first=True,
                                               norm_first=True, activation="gelu")
        self.encoder = nn.TransformerEncoder(enc_layer, encoder_layers, enable_nested_tensor=False)
        self.to_word = nn.Linear(d_byte, d_word)
        backbone_cfg = ModelConfig(vocab_size=1, d_model=d_word, n_layers=backbone_layers, mixer=backbone_mixer,
                                   mixer_options={"attention": {"n_heads": n_heads}})
        backbone_cfg.validate()
        self.start = nn.Parameter(torch.randn(d_word) * 0.02)
        self.backbone = nn.ModuleList(Block(backbone_cfg, name) for name in backbone_cfg.layer_mixers())
        self.backbone_norm = nn.RMSNorm(d_word)
        self.from_word = nn.Linear(d_word, d_byte)
        decoder_cfg = ModelConfig(vocab_size=1, d_model=d_byte, n_layers=decoder_layers, mixer="attention",
                                  mixer_options={"attention": {"n_heads": n_heads}})
        self.decoder = nn.ModuleList(Block(decoder_cfg, "attention") for _ in range(decoder_layers))
        self.decoder_norm = nn.RMSNorm(d_byte)
        self.head = nn.Linear(d_byte, VOCAB, bias=False)

    # -- the three modules --------------------------------------------------------------------------------------
    def encode_words(self, word_bytes: Tensor, lengths: Tensor) -> Tensor:
        """``[N, max_word_len]`` bytes → word embeddings ``[N, d_word]`` (the encoder's output at [W])."""
        n, width = word_bytes.shape
        tokens = torch.cat([torch.full((n, 1), WORD_START, dtype=torch.int64, device=word_bytes.device),
                            word_bytes], dim=1)
        x = self.byte_embed(tokens) + self.byte_pos[: width + 1]
        pad = torch.arange(width + 1, device=word_bytes.device)[None] > lengths[:, None]
        return self.to_word(self.encoder(x, src_key_padding_mask=pad)[:, 0])

    def run_backbone(self, inputs: Tensor, state=None) -> tuple[Tensor, list]:
        x, new_state = run_blocks(self.backbone, inputs, state)
        return self.backbone_norm(x), new_state

    def decode_logits(self, summaries: Tensor, word_bytes: Tensor) -> Tensor:
        """Logits ``[N, L + 1, VOCAB]`` of (b_1 … b_L, [E]) given the backbone summary ``[N, d_word]`` of each
        word's past and its teacher-forced bytes ``[N, L]`` (``L`` may be shorter than max_word_len)."""
        x = torch.cat([self.from_word(summaries)[:, None], self.byte_embed(word_bytes)], dim=1)
        x = x + self.byte_pos[: x.shape[1]]
        for block in self.decoder:
            x, _ = block(x)
        return self.head(self.decoder_norm(x))

    # -- training -----------------------------------------------------------------------------------------------
    def forward(self, word_bytes: Tensor, lengths: Tensor) -> Tensor:
        """Per-target log-probabilities ``[B, J, max_word_len + 1]`` (0 at padding) for words ``[B, J, L]``."""
        if word_bytes.dim() != 3 or word_bytes.shape[2] != self.max_word_len:
            raise SeqzooError(f"HAT expects word bytes [B, J, {self.max_word_len}], got {list(word_bytes.shape)}")
        batch, n_words, width = word_bytes.shape
        emb = self.encode_words(word_bytes.flatten(0, 1), lengths.flatten()).view(batch, n_words, -1)
        start = self.start.expand(batch, 1, -1)
        summaries, _ = self.run_backbone(torch.cat([start, emb[:, :-1]], dim=1))        # o_j sees words < j
        logits = self.decode_logits(summaries.flatten(0, 1), word_bytes.flatten(0, 1))
        targets = torch.cat([word_bytes.flatten(0, 1), torch.zeros(batch * n_words, 1, dtype=torch.int64,
                                                                    device=word_bytes.device)], dim=1)
        flat_len = lengths.flatten()
        targets[torch.arange(len(flat_len)), flat_len] = END_OF_WORD
        logp = torch.log_softmax(logits.float(), -1).gather(-1, targets[..., None]).squeeze(-1)
        valid = torch.arange(width + 1, device=word_bytes.device)[None] <= flat_len[:, None]
        return (logp * valid).view(batch, n_words, width + 1)

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        """Mean negative log-likelihood per predicted target (bytes and [E])."""
        logp = self(batch["words"], batch["lengths"])
        return -logp.sum() / (batch["lengths"].sum() + batch["lengths"].numel())

    # -- scoring and generation ---------------------------------------------------------------------------------
    @torch.no_grad()
    def score_incremental(self, text: bytes) -> Tensor:
        """Per-target log-probabilities of ``text`` computed the way generation runs (backbone stepped one word
        at a time with its state, decoder one byte at a time): equals the teacher-forced ``forward``."""
        words = split_words(text, self.max_word_len)
        device = self.start.device
        state, summary, out = None, None, []
        x = self.start.view(1, 1, -1)
        for word in words:
            summary, state = self.run_backbone(x, state)
            row = []
            prefix = torch.zeros(1, 0, dtype=torch.int64, device=device)
            for target in list(word) + [END_OF_WORD]:
                logits = self.decode_logits(summary[:, -1], prefix)[:, -1]
                row.append(torch.log_softmax(logits.float(), -1)[0, target])
                if target != END_OF_WORD:
                    prefix = torch.cat([prefix, torch.tensor([[target]], device=device)], dim=1)
            out.append(torch.stack(row))
            wb, wl = words_to_tensor([word], self.max_word_len)
            x = self.encode_words(wb.to(device), wl.to(device))[:, None]
        return torch.cat(out)

    @torch.no_grad()
    def generate(self, prompt: bytes, max_new_words: int, *, temperature: float = 0.0, seed: int = 0) -> bytes:
        """Continue ``prompt`` (treated as complete words) by up to ``max_new_words`` words."""
        if not prompt:
            raise SeqzooError("HAT.generate needs a non-empty prompt")
        gen = torch.Generator(device=self.start.device).manual_seed(seed)
        words = split_words(prompt, self.max_word_len)
        wb, wl = words_to_tensor(words, self.max_word_len)
        emb = self.encode_words(wb.to(self.start.device), wl.to(self.start.device))[None]
        summary, state = self.run_backbone(torch.cat([self.start.view(1, 1, -1), emb], dim=1))
        new = []
        for _ in range(max_new_words):
            prefix = torch.zeros(1, 0, dtype=torch.int64, device=self.start.device)
            while prefix.shape[1] < self.max_word_len:
                logits = self.decode_logits(summary[:, -1], prefix)[0, -1, :256 + 2].float()
                logits[WORD_START] = float("-inf")
                if prefix.shape[1] == 0:
                    logits[END_OF_WORD] = float("-inf")  # a word has at least one byte
                if temperature <= 0:
                    nxt = int(logits.argmax())
                else:
                    nxt = int(torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=gen))
                if nxt == END_OF_WORD:
                    break
                prefix = torch.cat([prefix, torch.tensor([[nxt]], device=prefix.device)], dim=1)
            word = bytes(prefix[0].tolist())
            new.append(word)
            wb, wl = words_to_tensor([word], self.max_word_len)
            emb = self.encode_words(wb.to(self.start.device), wl.to(self.start.device))[:, None]
            summary, state = self.run_backbone(emb, state)
        return b"".join(new)


class WordBatches:
    """Random windows of ``n_words`` consecutive words of a byte corpus, as HAT batches."""

    def __init__(self, data: bytes, n_words: int, *, max_word_len: int = 16, val_fraction: float = 0.05,
                 seed: int = 0):
        words = split_words(data, max_word_len)
        n_val = max(n_words + 1, int(len(words) * val_fraction))
        if len(words) - n_val < n_words + 1:
            raise SeqzooError(f"text has {len(words)} words, too few for windows of {n_words} words")
        tensor, lengths = words_to_tensor(words, max_word_len)
        self.splits = {"train": (tensor[:-n_val], lengths[:-n_val]), "val": (tensor[-n_val:], lengths[-n_val:])}
        self.n_words, self.seed = n_words, seed

    def get_batch(self, split: str, index: int, batch_size: int) -> dict[str, Tensor]:
        if split not in self.splits:
            raise SeqzooError(f"unknown split {split!r}; valid: train, val")
        words, lengths = self.splits[split]
        gen = torch.Generator().manual_seed(self.seed * 7919 + index * 2 + (split == "val"))
        starts = torch.randint(0, len(words) - self.n_words, (batch_size,), generator=gen).tolist()
        return {"words": torch.stack([words[s: s + self.n_words] for s in starts]),
                "lengths": torch.stack([lengths[s: s + self.n_words] for s in starts])}


__all__ = ["HAT", "WordBatches", "split_words", "words_to_tensor", "WORD_START", "END_OF_WORD"]
