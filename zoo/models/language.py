"""Decoder-only language models (GPT: Radford et al. 2018, "Improving Language Understanding by
Generative Pre-Training"; sizes of nanoGPT's Shakespeare configs, Karpathy 2022)."""

from __future__ import annotations

from encoders.core import CoreConfig, core_size
from tasks.language_modeling import GPTConfig
from zoo.registry import register_model


@register_model
def gpt_mini() -> GPTConfig:
    """GPT on the shared "mini" core (width 128, 6 layers, 4 heads), context 256; its core moves
    to and from ``vit_mini_patch4_28``, ``mt_transformer_mini`` and ``asr_transformer_ctc_mini``."""
    return GPTConfig(core=core_size("mini", dropout=0.1), max_len=256)


@register_model
def gpt_nano_shakespeare() -> GPTConfig:
    """nanoGPT's CPU Shakespeare model (config/train_shakespeare_char.py, "baby GPT" on a
    MacBook): width 128, 4 layers, 4 heads, context 64, no dropout."""
    return GPTConfig(core=CoreConfig(dim=128, depth=4, num_heads=4), max_len=64)


@register_model
def gpt_small_shakespeare() -> GPTConfig:
    """nanoGPT's GPU Shakespeare model (config/train_shakespeare_char.py): width 384, 6 layers,
    6 heads, context 256, dropout 0.2."""
    return GPTConfig(core=CoreConfig(dim=384, depth=6, num_heads=6, dropout=0.2), max_len=256)


@register_model
def test_gpt() -> GPTConfig:
    """Tiny GPT for tests and smoke runs; its core is the "test" size."""
    return GPTConfig(vocab_size=100, core=core_size("test"), max_len=128)
