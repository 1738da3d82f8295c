"""ViT variants (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words"; Ti/S sizes from
Touvron et al. 2021, DeiT). The core sizes are the shared ones of ``encoders.core.CORE_SIZES``."""

from __future__ import annotations

from encoders.core import core_size
from tasks.classification import ViTConfig
from zoo.registry import register_model

GREY = dict(in_chans=1, num_classes=10, mean=(0.5,), std=(0.5,))  # MNIST, Fashion-MNIST


@register_model
def vit_tiny_patch16_224() -> ViTConfig:
    """ViT-Ti/16 at 224 px (DeiT-Ti): width 192, 12 layers, 3 heads."""
    return ViTConfig(core=core_size("tiny"))


@register_model
def vit_small_patch16_224() -> ViTConfig:
    """ViT-S/16 at 224 px (DeiT-S): width 384, 12 layers, 6 heads."""
    return ViTConfig(core=core_size("small"))


@register_model
def vit_base_patch16_224() -> ViTConfig:
    """ViT-B/16 at 224 px (Dosovitskiy et al. 2021): width 768, 12 layers, 12 heads."""
    return ViTConfig(core=core_size("base"))


@register_model
def vit_tiny_patch4_28() -> ViTConfig:
    """ViT-Ti width on 28 px grey images (MNIST, Fashion-MNIST): 4 px patches, 49 tokens."""
    return ViTConfig(img_size=28, patch_size=4, core=core_size("tiny"), **GREY)


@register_model
def vit_mini_patch4_28() -> ViTConfig:
    """The shared "mini" core (width 128, 6 layers, 4 heads) on 28 px grey images, 4 px patches
    (Fashion-MNIST); its core moves to and from ``mt_transformer_mini`` and
    ``asr_transformer_ctc_mini``."""
    return ViTConfig(img_size=28, patch_size=4, core=core_size("mini"), **GREY)


@register_model
def vit_tiny_patch4_32() -> ViTConfig:
    """ViT-Ti width on 32 px colour images (CIFAR): 4 px patches, 64 tokens."""
    return ViTConfig(img_size=32, patch_size=4, num_classes=10, core=core_size("tiny"))


@register_model
def test_vit() -> ViTConfig:
    """Tiny ViT for tests and smoke runs; its core (the "test" size) is every test model's."""
    return ViTConfig(img_size=32, patch_size=8, num_classes=10, core=core_size("test"))
