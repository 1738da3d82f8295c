"""Masked autoencoder (MAE, He et al. 2021) on the shared core: the ViT adapter's patches and
positions, a random 75% of the patches dropped, the core over the visible ones, and a light
decoder that predicts the pixels of every patch from the encoded ones and mask tokens."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

import torch
from einops import rearrange
from torch import Tensor, nn

from encoders import TransformerEncoder, VisionAdapter
from encoders.core import CoreConfig, core_size

PIXEL_NORM_EPS = 1e-6  # MAE's per-patch target normalisation: (x - mean) / sqrt(var + eps)


@dataclass
class MAEConfig:
    """Masked autoencoder hyperparameters. The encoder (``adapter`` + ``core``) is a ViT's with
    a class token: its keys equal those of a ``ViTConfig`` with the same image geometry and core,
    so ``ImageClassifier`` loads them (``encoder_state_dict``)."""

    task: ClassVar[str] = "masked_image"
    modality: ClassVar[str] = "vision"

    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    core: CoreConfig = field(default_factory=lambda: core_size("base"))
    mask_ratio: float = 0.75  # share of the patches hidden from the encoder
    # the decoder: its own width, depth and heads (MAE's default: 512 wide, 8 blocks, 16 heads)
    decoder_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    norm_pix_loss: bool = True  # predict each patch's pixels normalised by its own mean and std
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)  # input normalisation, kept with the model
    std: tuple[float, ...] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        if not 0 < self.mask_ratio < 1:
            raise ValueError(f"mask_ratio must lie strictly between 0 and 1, got {self.mask_ratio}")
        if self.decoder_dim % self.decoder_num_heads:
            raise ValueError(f"decoder_dim {self.decoder_dim} is not divisible by "
                             f"decoder_num_heads {self.decoder_num_heads}")

    def build(self) -> MaskedAutoencoder:
        return MaskedAutoencoder(self)


class MAEOutput(NamedTuple):
    """What ``MaskedAutoencoder.forward`` returns; L patches of P = p * p * C values each.

    Attributes:
        pred: (B, L, P) predicted (normalised) pixels of every patch.
        target: (B, L, P) the pixels to predict (per-patch normalised with ``norm_pix_loss``).
        mask: (B, L) bool, True at the patches hidden from the encoder (the loss is theirs).
    """

    pred: Tensor
    target: Tensor
    mask: Tensor


class MAEDecoder(nn.Module):
    """Encoded visible tokens + mask tokens in their places -> decoder states (B, P + L, d)."""

    def __init__(self, dim: int, num_pos: int, decoder_dim: int, depth: int, num_heads: int):
        super().__init__()
        self.embed = nn.Linear(dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_pos, decoder_dim))
        self.blocks = TransformerEncoder(decoder_dim, depth, num_heads)
        nn.init.normal_(self.mask_token, std=0.02)  # as MAE
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.embed.weight, std=0.02)
        nn.init.zeros_(self.embed.bias)

    def forward(self, latent: Tensor, ids_restore: Tensor, num_prefix: int) -> Tensor:
        """latent (B, P + K, D) (P prefix tokens, K visible patches in shuffled order),
        ids_restore (B, L) -> (B, P + L, d) with patches back in image order."""
        x = self.embed(latent)
        b, num_patches = ids_restore.shape
        fill = self.mask_token.expand(b, num_patches + num_prefix - x.shape[1], -1)
        patches = torch.cat([x[:, num_prefix:], fill], dim=1)  # shuffled order
        index = ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1])
        patches = torch.gather(patches, 1, index)  # image order
        x = torch.cat([x[:, :num_prefix], patches], dim=1) + self.pos_embed
        return self.blocks(x)


class MaskedAutoencoder(nn.Module):
    """``adapter`` (ViT patches + positions) -> drop masked patches -> ``core`` ->
    ``decoder`` (mask tokens, own positions and blocks) -> ``head`` (pixels per patch)."""

    def __init__(self, cfg: MAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.adapter = VisionAdapter(cfg.img_size, cfg.patch_size, cfg.in_chans, cfg.core.dim,
                                     class_token=True, dropout=cfg.core.dropout)
        self.core = TransformerEncoder.from_config(cfg.core)
        num_pos = self.adapter.pos_embed.shape[1]
        self.decoder = MAEDecoder(cfg.core.dim, num_pos, cfg.decoder_dim, cfg.decoder_depth,
                                  cfg.decoder_num_heads)
        self.head = nn.Linear(cfg.decoder_dim, cfg.patch_size**2 * cfg.in_chans)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    @property
    def num_patches(self) -> int:
        return self.adapter.grid[0] * self.adapter.grid[1]

    def _check(self, images: Tensor) -> None:
        want = (self.cfg.in_chans, self.cfg.img_size, self.cfg.img_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != want:
            raise ValueError(f"expected images of shape (B, {', '.join(map(str, want))}), got "
                             f"shape {tuple(images.shape)}")

    def patchify(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, L, p * p * C), patches in row-major order."""
        p = self.cfg.patch_size
        return rearrange(images, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=p, p2=p)

    def pixel_targets(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, L, P): each patch's pixels, normalised per patch if
        ``norm_pix_loss``."""
        target = self.patchify(images)
        if self.cfg.norm_pix_loss:
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            target = (target - mean) / (var + PIXEL_NORM_EPS).sqrt()
        return target

    def random_masking(self, x: Tensor, noise: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Keep the patches with the lowest noise (a per-sample random shuffle, as MAE).

        Args:
            x: (B, L, D) patch tokens.
            noise: (B, L) scores in [0, 1).
        Returns:
            the kept tokens (B, K, D) with K = int(L * (1 - mask_ratio)), the mask (B, L)
            True at hidden patches, and ids_restore (B, L) that puts shuffled tokens back.
        """
        b, n, d = x.shape
        keep = int(n * (1 - self.cfg.mask_ratio))
        ids_shuffle = noise.argsort(dim=1)
        ids_restore = ids_shuffle.argsort(dim=1)
        kept = torch.gather(x, 1, ids_shuffle[:, :keep, None].expand(-1, -1, d))
        mask = ids_restore >= keep  # a patch is hidden when its rank in the shuffle is >= K
        return kept, mask, ids_restore

    def forward_encoder(
        self, images: Tensor, noise: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(B, C, H, W) -> the core's output over [cls, visible patches] (B, 1 + K, D), the
        mask (B, L) and ids_restore (B, L). ``noise`` (B, L) fixes the mask (default random)."""
        self._check(images)
        a = self.adapter
        pos = a.pos_embed  # (1, 1 + L, D): the cls token's position first
        x = a.patch_embed(images) + pos[:, a.num_prefix :]
        if noise is None:
            noise = torch.rand(x.shape[:2], device=x.device)
        x, mask, ids_restore = self.random_masking(x, noise)
        cls = (a.cls_token + pos[:, : a.num_prefix]).expand(x.shape[0], -1, -1)
        x = a.pos_drop(torch.cat([cls, x], dim=1))
        return self.core(x), mask, ids_restore

    def forward_features(self, images: Tensor) -> tuple[Tensor, None]:
        """(B, C, H, W) -> the core's output over every patch (B, 1 + L, D) and no padding
        mask: the encoder as a ViT uses it (nothing is masked)."""
        tokens, mask = self.adapter(images)
        return self.core(tokens, mask), mask

    def forward_head(self, latent: Tensor, ids_restore: Tensor) -> Tensor:
        """Decode (B, 1 + K, D) encoded tokens -> (B, L, P) pixels of every patch."""
        x = self.decoder(latent, ids_restore, self.adapter.num_prefix)
        return self.head(x[:, self.adapter.num_prefix :])

    def forward(self, images: Tensor, noise: Tensor | None = None) -> MAEOutput:
        """(B, C, H, W) normalised images -> predictions, targets and mask (``MAEOutput``)."""
        latent, mask, ids_restore = self.forward_encoder(images, noise)
        pred = self.forward_head(latent, ids_restore)
        return MAEOutput(pred, self.pixel_targets(images), mask)


def masked_patch_loss(out: MAEOutput) -> Tensor:
    """Mean squared error per patch, averaged over the hidden patches only (MAE's loss)."""
    per_patch = (out.pred.float() - out.target.float()).pow(2).mean(-1)  # (B, L)
    mask = out.mask.float()
    return (per_patch * mask).sum() / mask.sum().clamp(min=1)


def encoder_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The ``adapter.*`` and ``core.*`` weights of a masked autoencoder: what an
    ``ImageClassifier`` with the same image geometry, core and a class token takes (load with
    ``load_state_dict(..., strict=False)``; its ``head`` stays as it is)."""
    return {k: v for k, v in state.items() if k.startswith(("adapter.", "core."))}
