"""Image classification: vision adapter + shared encoder core + classifier head (ViT)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from encoders import TransformerEncoder, VisionAdapter
from encoders.layers import NORM_EPS

POOLS = ("cls", "avg")


@dataclass
class ViTConfig:
    """Vision Transformer (Dosovitskiy et al. 2021) hyperparameters."""

    task: ClassVar[str] = "classification"
    modality: ClassVar[str] = "image"

    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    global_pool: str = "cls"  # "cls" token or "avg" of patch tokens (then normed after pooling)
    stem: str = "patch"  # "patch" (ViT) or "conv" (3x3 stride-2 convolutions, Xiao et al. 2021)
    stem_depth: int = 1  # conv stem: 3x3 convolutions per resolution (the first has stride 2)
    dropout: float = 0.0
    attn_drop: float = 0.0
    drop_path: float = 0.0
    layer_scale: float | None = None  # initial LayerScale value, None = off
    act: str = "gelu"
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)  # input normalisation, kept with the model
    std: tuple[float, ...] = (0.5, 0.5, 0.5)

    def build(self) -> ImageClassifier:
        return ImageClassifier(self)


class ClassifierHead(nn.Module):
    """Pool tokens, normalise (mean pooling only), dropout, linear."""

    def __init__(self, dim: int, num_classes: int, pool: str, num_prefix: int, dropout: float):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"unknown global_pool '{pool}'; expected one of {POOLS}")
        self.pool, self.num_prefix = pool, num_prefix
        self.norm = nn.LayerNorm(dim, eps=NORM_EPS) if pool == "avg" else nn.Identity()
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """(B, N, D) tokens -> (B, num_classes) logits, or (B, D) pooled features."""
        x = x[:, 0] if self.pool == "cls" else x[:, self.num_prefix :].mean(1)
        x = self.drop(self.norm(x))
        return x if pre_logits else self.fc(x)


class ImageClassifier(nn.Module):
    """ViT classifier: ``adapter`` (patches + positions) -> ``core`` -> ``head``."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.adapter = VisionAdapter(
            cfg.img_size,
            cfg.patch_size,
            cfg.in_chans,
            cfg.dim,
            class_token=cfg.global_pool == "cls",
            dropout=cfg.dropout,
            stem=cfg.stem,
            stem_depth=cfg.stem_depth,
        )
        self.core = TransformerEncoder(
            cfg.dim,
            cfg.depth,
            cfg.num_heads,
            cfg.mlp_ratio,
            cfg.qkv_bias,
            cfg.dropout,
            cfg.attn_drop,
            cfg.drop_path,
            cfg.act,
            layer_scale=cfg.layer_scale,
        )
        if cfg.global_pool == "avg":
            self.core.norm = nn.Identity()  # as in timm: mean pooling normalises after pooling
        self.head = ClassifierHead(
            cfg.dim, cfg.num_classes, cfg.global_pool, self.adapter.num_prefix, cfg.dropout
        )

    def forward_features(self, images: Tensor) -> Tensor:
        """(B, C, H, W) images -> (B, N, D) encoded tokens."""
        tokens, _ = self.adapter(images)
        return self.core(tokens)

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        """(B, N, D) tokens -> (B, num_classes) logits."""
        return self.head(features, pre_logits)

    def forward(self, images: Tensor) -> Tensor:
        """(B, C, H, W) images -> (B, num_classes) logits."""
        return self.forward_head(self.forward_features(images))
