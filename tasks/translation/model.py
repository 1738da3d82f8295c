"""Machine translation: a Transformer encoder-decoder (Vaswani et al. 2017) on the shared core."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from encoders import DecoderCache, TextAdapter, TransformerDecoder, TransformerEncoder


@dataclass
class Seq2SeqConfig:
    """Encoder-decoder Transformer hyperparameters. One joint vocabulary for both languages."""

    task: ClassVar[str] = "translation"
    modality: ClassVar[str] = "text"

    vocab_size: int = 8000
    dim: int = 512
    depth: int = 6  # encoder layers
    decoder_depth: int = 6
    num_heads: int = 8
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    dropout: float = 0.1
    attn_drop: float = 0.0
    act: str = "relu"
    norm_first: bool = True  # pre-norm trains without warmup tricks; False = the paper's post-norm
    pos: str = "sinusoidal"  # "sinusoidal", "learned" or "rotary"
    max_len: int = 1024
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    def build(self) -> Seq2SeqTransformer:
        return Seq2SeqTransformer(self)


class Seq2SeqTransformer(nn.Module):
    """``src_adapter`` -> ``core`` (encoder); ``tgt_adapter`` -> ``decoder`` -> ``head``.

    Source and target share one embedding table, which is also the output projection.
    """

    def __init__(self, cfg: Seq2SeqConfig) -> None:
        super().__init__()
        self.cfg = cfg
        rotary = cfg.pos == "rotary"
        adapter_pos = "none" if rotary else cfg.pos
        self.src_adapter = TextAdapter(
            cfg.vocab_size, cfg.dim, cfg.max_len, cfg.pad_id, adapter_pos, cfg.dropout
        )
        self.tgt_adapter = TextAdapter(
            cfg.vocab_size, cfg.dim, cfg.max_len, cfg.pad_id, adapter_pos, cfg.dropout
        )
        self.tgt_adapter.embed = self.src_adapter.embed  # shared vocabulary
        common = dict(
            mlp_ratio=cfg.mlp_ratio,
            qkv_bias=cfg.qkv_bias,
            dropout=cfg.dropout,
            attn_drop=cfg.attn_drop,
            act=cfg.act,
            norm_first=cfg.norm_first,
            rotary=rotary,
        )
        self.core = TransformerEncoder(cfg.dim, cfg.depth, cfg.num_heads, **common)
        self.decoder = TransformerDecoder(cfg.dim, cfg.decoder_depth, cfg.num_heads, **common)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
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
        return self.forward_head(x)[:, -1]

    def forward_features(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        """(B, S) source ids, (B, T) target input ids -> (B, T, D) decoder states."""
        memory, mask = self.encode(src)
        return self.decode(tgt_in, memory, mask)

    def forward_head(self, features: Tensor) -> Tensor:
        """(B, T, D) -> (B, T, V) logits."""
        return self.head(features)

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher-forced logits (B, T, V) for target inputs (B, T) given sources (B, S)."""
        return self.forward_head(self.forward_features(src, tgt_in))
