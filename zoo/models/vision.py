"""ViT variants (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words"; Ti/S sizes from
Touvron et al. 2021, DeiT)."""

from __future__ import annotations

from tasks.classification import ViTConfig
from zoo.registry import register_model


@register_model
def vit_tiny_patch16_224() -> ViTConfig:
    """ViT-Ti/16 at 224 px (DeiT-Ti): width 192, 12 layers, 3 heads."""
    return ViTConfig(dim=192, depth=12, num_heads=3)


@register_model
def vit_small_patch16_224() -> ViTConfig:
    """ViT-S/16 at 224 px (DeiT-S): width 384, 12 layers, 6 heads."""
    return ViTConfig(dim=384, depth=12, num_heads=6)


@register_model
def vit_base_patch16_224() -> ViTConfig:
    """ViT-B/16 at 224 px (Dosovitskiy et al. 2021): width 768, 12 layers, 12 heads."""
    return ViTConfig(dim=768, depth=12, num_heads=12)


@register_model
def vit_tiny_patch4_28() -> ViTConfig:
    """ViT-Ti width on 28 px grey images (MNIST, Fashion-MNIST): 4 px patches, 49 tokens."""
    return ViTConfig(
        img_size=28,
        patch_size=4,
        in_chans=1,
        num_classes=10,
        dim=192,
        depth=12,
        num_heads=3,
        mean=(0.5,),
        std=(0.5,),
    )


@register_model
def vit_tiny_patch4_32() -> ViTConfig:
    """ViT-Ti width on 32 px colour images (CIFAR): 4 px patches, 64 tokens."""
    return ViTConfig(img_size=32, patch_size=4, num_classes=10, dim=192, depth=12, num_heads=3)


@register_model
def test_vit() -> ViTConfig:
    """Tiny ViT for tests and smoke runs; its core matches ``test_asr_transformer``'s."""
    return ViTConfig(img_size=32, patch_size=8, num_classes=10, dim=64, depth=2, num_heads=4)
