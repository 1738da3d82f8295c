"""Machine translation: a Transformer encoder-decoder (Vaswani et al. 2017) on the shared core."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

from torch import Tensor, nn

from encoders import DecoderCache, TextAdapter, TransformerDecoder, TransformerEncoder
from encoders.core import CoreConfig, kept_heads, rotary_positions


@dataclass
class Seq2SeqConfig:
    """Encoder-decoder Transformer hyperparameters. One joint vocabulary for both languages.

    The encoder is the shared ``core``; the decoder has the core's settings and its own depth.
    """

    task: ClassVar[str] = "translation"
    modality: ClassVar[str] = "text"

    vocab_size: int = 8000
    # Transformer base (Vaswani et al. 2017): ReLU, dropout 0.1; pre-norm trains without warmup
    # tricks (core.norm_first=False gives the paper's post-norm)
    core: CoreConfig = field(
        default_factory=lambda: CoreConfig(dim=512, depth=6, num_heads=8, act="relu", dropout=0.1)
    )
    decoder_depth: int = 6
    # after pruning (zoo prune): per decoder layer, the (self, cross) attention heads it kept
    decoder_heads: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...] | None = None
    pos: str = "sinusoidal"  # "sinusoidal", "learned" or "rotary" (= core.rotary)
    max_len: int = 1024
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    def __post_init__(self) -> None:
        self.pos, self.core = rotary_positions(self.pos, self.core)
        self.decoder_heads = kept_heads(self.decoder_heads, self.decoder_depth,
                                        self.core.num_heads, "decoder_heads", pairs=True)

    def build(self) -> Seq2SeqTransformer:
        return Seq2SeqTransformer(self)


class Seq2SeqTransformer(nn.Module):
    """``src_adapter`` -> ``core`` (encoder); ``tgt_adapter`` -> ``decoder`` -> ``head``.

    Source and target share one embedding table, which is also the output projection.
    """

    def __init__(self, cfg: Seq2SeqConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dim, dropout = cfg.core.dim, cfg.core.dropout
        adapter_pos = "none" if cfg.core.rotary else cfg.pos
        self.src_adapter = TextAdapter(
            cfg.vocab_size, dim, cfg.max_len, cfg.pad_id, adapter_pos, dropout
        )
        self.tgt_adapter = TextAdapter(
            cfg.vocab_size, dim, cfg.max_len, cfg.pad_id, adapter_pos, dropout
        )
        self.tgt_adapter.embed = self.src_adapter.embed  # shared vocabulary
        # the paper's model has no stochastic depth; a core's drop_path stays with the encoder
        self.core = TransformerEncoder.from_config(cfg.core)
        self.decoder = TransformerDecoder.from_config(
            dataclasses.replace(cfg.core, drop_path=0.0), cfg.decoder_depth, cfg.decoder_heads
        )
        self.head = nn.Linear(dim, cfg.vocab_size, bias=False)
        self.head.weight = self.src_adapter.embed.weight  # tied output projection

    def encode(
        self, src: Tensor, src_lengths: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """(B, S) source ids -> memory (B, S, D) and its padding mask (B, S) or None."""
        tokens, mask = self.src_adapter(src, src_lengths)
        return self.core(tokens, mask), mask

    def decode(self, tgt_in: Tensor, memory: Tensor, memory_mask: Tensor | None) -> Tensor:
        """(B, T) target input ids (BOS first) -> (B, T, D) decoder states, all positions."""
        tokens, _ = self.tgt_adapter(tgt_in)
        return self.decoder(tokens, memory, memory_mask)

    def decode_step(
        self, tokens: Tensor, memory: Tensor | None, memory_mask: Tensor | None, cache: DecoderCache
    ) -> Tensor:
        """One incremental step: (B, 1) newest ids -> (B, V) logits of the next token.

        ``cache`` (from ``self.decoder.new_cache()``) holds the earlier steps and the source keys.
        """
        x, _ = self.tgt_adapter(tokens, start_pos=cache.offset)
        x = self.decoder(x, memory, memory_mask, cache=cache)
        return self.head(x)[:, -1]

    def forward_features(
        self, src: Tensor, src_lengths: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """(B, S) source ids -> the core's output tokens (B, S, D) and their padding mask
        (B, S), True at padding (or None); the same as ``encode``."""
        return self.encode(src, src_lengths)

    def forward_head(self, memory: Tensor, memory_mask: Tensor | None, tgt_in: Tensor) -> Tensor:
        """The decoder and output projection: (B, T) target inputs (BOS first) attending to
        the encoded source (B, S, D) -> (B, T, V) logits."""
        return self.head(self.decode(tgt_in, memory, memory_mask))

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher-forced logits (B, T, V) for target inputs (B, T) given sources (B, S)."""
        if src.ndim and tgt_in.ndim and src.shape[0] != tgt_in.shape[0]:
            raise ValueError(f"src {tuple(src.shape)} and tgt_in {tuple(tgt_in.shape)} disagree "
                             "on the batch size (their first axis)")
        memory, mask = self.forward_features(src)
        return self.forward_head(memory, mask, tgt_in)
