"""Masked pre-training variants: BERT-style masked language models (Devlin et al. 2019) and
masked autoencoders (He et al. 2021). Their encoders are those of the translation and ViT
variants of the same core size, so the pre-trained weights initialise them."""

from __future__ import annotations

from encoders.core import core_size
from tasks.masked_image import MAEConfig
from tasks.masked_lm import BertConfig
from zoo.registry import register_model

GREY = dict(in_chans=1, mean=(0.5,), std=(0.5,))  # MNIST, Fashion-MNIST (as vit_*_28)


@register_model
def bert_mini() -> BertConfig:
    """Masked LM (Devlin et al. 2019, "BERT") on the shared "mini" core (width 128, 6 layers,
    4 heads, dropout 0.1); its ``adapter.*`` and ``core.*`` initialise
    ``mt_transformer_mini``'s encoder (``translation_encoder_state``)."""
    return BertConfig(core=core_size("mini", dropout=0.1))


@register_model
def test_bert() -> BertConfig:
    """Tiny masked LM for tests and smoke runs; its core is the "test" size."""
    return BertConfig(vocab_size=100, core=core_size("test"))


@register_model
def mae_vit_mini_patch4_28() -> MAEConfig:
    """Masked autoencoder (He et al. 2021, "Masked Autoencoders Are Scalable Vision Learners")
    with ``vit_mini_patch4_28``'s encoder (the "mini" core, 28 px grey images, 4 px patches, 49
    tokens) and a decoder of width 64, 2 layers, 4 heads."""
    return MAEConfig(img_size=28, patch_size=4, core=core_size("mini"), decoder_dim=64,
                     decoder_depth=2, decoder_num_heads=4, **GREY)


@register_model
def mae_vit_base_patch16_224() -> MAEConfig:
    """MAE ViT-B/16 at 224 px (He et al. 2021): the paper's decoder, width 512, 8 blocks,
    16 heads; its encoder is ``vit_base_patch16_224``'s."""
    return MAEConfig(core=core_size("base"))


@register_model
def test_mae() -> MAEConfig:
    """Tiny masked autoencoder for tests and smoke runs: ``test_vit``'s encoder (32 px, 8 px
    patches, the "test" core) and a decoder of width 32, 1 layer."""
    return MAEConfig(img_size=32, patch_size=8, core=core_size("test"), decoder_dim=32,
                     decoder_depth=1, decoder_num_heads=4)
