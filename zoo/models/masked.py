"""Masked pre-training variants: BERT-style masked language models (Devlin et al. 2019),
masked autoencoders (He et al. 2021) and masked acoustic models (Liu et al. 2020, 2021). Their
encoders are those of the translation, ViT and speech variants of the same core size, so the
pre-trained weights initialise them."""

from __future__ import annotations

from encoders.core import CoreConfig, core_size
from tasks.masked_image import MAEConfig
from tasks.masked_lm import BertConfig
from tasks.masked_speech import MaskedSpeechConfig
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


@register_model
def masked_asr_conformer_tiny() -> MaskedSpeechConfig:
    """Masked acoustic model (Liu et al. 2020, "Mockingjay"; 2021, "TERA") with
    ``asr_conformer_ctc_tiny``'s encoder (Conformer, width 144, 6 layers, 4 heads, kernel 15,
    80 mel bins): its ``adapter.*`` and ``core.*`` initialise that recogniser."""
    core = CoreConfig(dim=144, depth=6, num_heads=4, dropout=0.1, conformer=True, conv_kernel=15)
    return MaskedSpeechConfig(core=core)


@register_model
def test_masked_asr() -> MaskedSpeechConfig:
    """Tiny masked acoustic model for tests and smoke runs: ``test_asr_transformer``'s encoder
    (the "test" core, 40 mel bins)."""
    return MaskedSpeechConfig(core=core_size("test"), n_mels=40)
