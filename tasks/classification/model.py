"""Image classification: vision adapter + shared encoder core + classifier head (ViT)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from torch import Tensor, nn

from encoders import TransformerEncoder, VisionAdapter
from encoders.core import CoreConfig, core_size
from encoders.layers import NORM_EPS

POOLS = ("cls", "avg")


@dataclass
class ViTConfig:
    """Vision Transformer (Dosovitskiy et al. 2021) hyperparameters: the patch adapter and the
    head around a shared ``core``."""

    task: ClassVar[str] = "classification"
    modality: ClassVar[str] = "vision"

    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    core: CoreConfig = field(default_factory=lambda: core_size("base"))
    global_pool: str = "cls"  # "cls" token or "avg" of the patch tokens
    # the norm after pooling instead of the core's final norm (timm's layout for mean pooling;
    # the core's norm is then kept, so its keys stay those of every core, but not used)
    fc_norm: bool = False
    class_token: bool | None = None  # None: a cls token only with global_pool="cls"
    stem: str = "patch"  # "patch" (ViT) or "conv" (3x3 stride-2 convolutions, Xiao et al. 2021)
    stem_depth: int = 1  # conv stem: 3x3 convolutions per resolution (the first has stride 2)
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)  # input normalisation, kept with the model
    std: tuple[float, ...] = (0.5, 0.5, 0.5)

    def build(self) -> ImageClassifier:
        return ImageClassifier(self)


class ClassifierHead(nn.Module):
    """Pool tokens, normalise (``fc_norm`` only), dropout, linear."""

    def __init__(
        self, dim: int, num_classes: int, pool: str, num_prefix: int, dropout: float, fc_norm: bool
    ) -> None:
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"unknown global_pool '{pool}'; expected one of {POOLS}")
        self.pool, self.num_prefix = pool, num_prefix
        self.norm = nn.LayerNorm(dim, eps=NORM_EPS) if fc_norm else nn.Identity()
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
        class_token = cfg.global_pool == "cls" if cfg.class_token is None else cfg.class_token
        if cfg.global_pool == "cls" and not class_token:
            raise ValueError("global_pool='cls' needs a class token (class_token=False given)")
        dropout = cfg.core.dropout
        self.adapter = VisionAdapter(
            cfg.img_size,
            cfg.patch_size,
            cfg.in_chans,
            cfg.core.dim,
            class_token=class_token,
            dropout=dropout,
            stem=cfg.stem,
            stem_depth=cfg.stem_depth,
        )
        self.core = TransformerEncoder.from_config(cfg.core)
        if cfg.fc_norm:  # kept for the core's keys, unused: frozen, so DDP sees no idle gradient
            self.core.norm.requires_grad_(False)
        self.head = ClassifierHead(
            cfg.core.dim,
            cfg.num_classes,
            cfg.global_pool,
            self.adapter.num_prefix,
            dropout,
            cfg.fc_norm,
        )

    def forward_features(self, images: Tensor) -> tuple[Tensor, None]:
        """(B, C, H, W) images -> the core's output tokens (B, N, D) and their padding mask
        (None: every image has all its tokens)."""
        tokens, mask = self.adapter(images)
        if self.cfg.fc_norm:  # timm's fc_norm layout: no final norm before pooling
            return self.core.forward_intermediates(tokens, mask, indices=1)[1][0], mask
        return self.core(tokens, mask), mask

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        """(B, N, D) tokens -> (B, num_classes) logits, or (B, D) pooled features."""
        return self.head(features, pre_logits)

    def forward(self, images: Tensor) -> Tensor:
        """(B, C, H, W) images -> (B, num_classes) logits."""
        tokens, _ = self.forward_features(images)
        return self.forward_head(tokens)
