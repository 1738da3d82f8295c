"""Encoder-decoder Transformer variants (Vaswani et al. 2017, "Attention Is All You Need")."""

from __future__ import annotations

from encoders.core import CoreConfig, core_size
from tasks.translation import Seq2SeqConfig
from zoo.registry import register_model


@register_model
def mt_transformer_tiny() -> Seq2SeqConfig:
    """Tiny translation Transformer: width 128, 2+2 layers, 4 heads (demo data)."""
    core = CoreConfig(dim=128, depth=2, num_heads=4, act="relu", dropout=0.1)
    return Seq2SeqConfig(core=core, decoder_depth=2)


@register_model
def mt_transformer_mini() -> Seq2SeqConfig:
    """The shared "mini" core (width 128, 6 layers, 4 heads, GELU) as the encoder, 3 decoder
    layers; its core moves to and from ``vit_mini_patch4_28`` and ``asr_transformer_ctc_mini``."""
    return Seq2SeqConfig(core=core_size("mini", dropout=0.1), decoder_depth=3)


@register_model
def mt_transformer_small() -> Seq2SeqConfig:
    """Small translation Transformer for Multi30k-sized data: width 256, 3+3 layers, 4 heads,
    FFN 1024."""
    core = CoreConfig(dim=256, depth=3, num_heads=4, act="relu", dropout=0.2)
    return Seq2SeqConfig(core=core, decoder_depth=3)


@register_model
def mt_transformer_base() -> Seq2SeqConfig:
    """Transformer base (Vaswani et al. 2017): width 512, 8 heads, 6+6 layers, FFN 2048."""
    core = CoreConfig(dim=512, depth=6, num_heads=8, act="relu", dropout=0.1)
    return Seq2SeqConfig(core=core, decoder_depth=6)


@register_model
def test_mt_transformer() -> Seq2SeqConfig:
    """Tiny encoder-decoder for tests and smoke runs; its core is the "test" size."""
    return Seq2SeqConfig(vocab_size=100, core=core_size("test"), decoder_depth=2)
