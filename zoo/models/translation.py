"""Encoder-decoder Transformer variants (Vaswani et al. 2017, "Attention Is All You Need")."""

from __future__ import annotations

from tasks.translation import Seq2SeqConfig
from zoo.registry import register_model


@register_model
def mt_transformer_tiny() -> Seq2SeqConfig:
    """Tiny translation Transformer: width 128, 2+2 layers, 4 heads (demo data)."""
    return Seq2SeqConfig(dim=128, depth=2, decoder_depth=2, num_heads=4, dropout=0.1)


@register_model
def mt_transformer_small() -> Seq2SeqConfig:
    """Small translation Transformer for Multi30k-sized data: width 256, 3+3 layers, 4 heads,
    FFN 1024."""
    return Seq2SeqConfig(dim=256, depth=3, decoder_depth=3, num_heads=4, dropout=0.2)


@register_model
def mt_transformer_base() -> Seq2SeqConfig:
    """Transformer base (Vaswani et al. 2017): width 512, 8 heads, 6+6 layers, FFN 2048."""
    return Seq2SeqConfig(dim=512, depth=6, decoder_depth=6, num_heads=8, dropout=0.1)


@register_model
def test_mt_transformer() -> Seq2SeqConfig:
    """Tiny encoder-decoder for tests and smoke runs."""
    return Seq2SeqConfig(vocab_size=100, dim=64, depth=2, decoder_depth=2, num_heads=4, dropout=0.0)
