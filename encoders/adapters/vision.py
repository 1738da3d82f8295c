"""Vision adapter: images -> patch tokens (+ cls token) + learned positions (ViT)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from encoders.adapters.checks import check_float, check_not_empty
from encoders.positional import interpolate_pos_embed


class PatchEmbed(nn.Module):
    """Image -> one token per p x p patch: (B, C, H, W) -> (B, H/p * W/p, D).

    ``stem="patch"`` is ViT's strided p x p convolution over non-overlapping patches.
    ``stem="conv"`` is the convolutional stem of Xiao et al. 2021 ("Early convolutions help
    transformers see better"): log2(p) 3x3 stride-2 convolutions with BatchNorm and ReLU, widths
    doubling up to D, then a 1x1 convolution to D. It costs little next to the transformer and
    makes training from scratch on small datasets converge much faster. ``stem_depth`` > 1
    follows each stride-2 convolution with ``stem_depth - 1`` more 3x3 convolutions (stride 1,
    same width): more convolutional capacity at the stem's finer resolutions.
    """

    def __init__(
        self, patch_size: int, in_chans: int, dim: int, stem: str = "patch", stem_depth: int = 1
    ) -> None:
        super().__init__()
        if stem_depth < 1:
            raise ValueError(f"stem_depth must be at least 1, got {stem_depth}")
        if stem_depth > 1 and stem != "conv":
            raise ValueError(f"stem_depth {stem_depth} needs stem 'conv', got stem '{stem}'")
        self.patch_size = patch_size
        if stem == "patch":
            self.stem = nn.Identity()
            self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)
        elif stem == "conv":
            n = patch_size.bit_length() - 1
            if patch_size < 2 or 2**n != patch_size:
                raise ValueError(f"the conv stem needs a power-of-two patch_size, got {patch_size}")
            widths = [max(dim >> (n - 1 - i), 8) for i in range(n)]  # ..., D/2, D
            layers: list[nn.Module] = []
            for c_in, c_out in zip([in_chans, *widths], widths):
                for k in range(stem_depth):
                    layers += [
                        nn.Conv2d(c_in if k == 0 else c_out, c_out, 3, stride=2 if k == 0 else 1,
                                  padding=1, bias=False),
                        nn.BatchNorm2d(c_out),
                        nn.ReLU(inplace=True),
                    ]
            self.stem = nn.Sequential(*layers)
            self.proj = nn.Conv2d(widths[-1], dim, kernel_size=1)
        else:
            raise ValueError(f"unknown stem '{stem}'; expected 'patch' or 'conv'")

    def forward(self, x: Tensor) -> Tensor:
        x = self.proj(self.stem(x))  # (B, D, Gh, Gw)
        return x.flatten(2).transpose(1, 2)  # (B, Gh*Gw, D)


class VisionAdapter(nn.Module):
    """ViT front end (Dosovitskiy et al. 2021). Parameter names follow timm
    (``patch_embed.proj``, ``cls_token``, ``pos_embed``) so its weights load by renaming.

    Args:
        img_size: the image size the position table is made for.
        patch_size: patch side p; the image sides must be multiples of p.
        in_chans: image channels C.
        dim: width D.
        class_token: prepend a learned cls token.
        dropout: dropout after adding positions.
        stem: "patch" (ViT) or "conv" (a convolutional stem, see `PatchEmbed`).
        stem_depth: 3x3 convolutions per resolution of the conv stem (default 1).
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        dim: int = 768,
        class_token: bool = True,
        dropout: float = 0.0,
        stem: str = "patch",
        stem_depth: int = 1,
    ) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not divisible by patch_size {patch_size}")
        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.grid = (img_size // patch_size, img_size // patch_size)
        self.num_prefix = 1 if class_token else 0
        self.patch_embed = PatchEmbed(patch_size, in_chans, dim, stem, stem_depth)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if class_token else None
        num_pos = self.grid[0] * self.grid[1] + self.num_prefix
        self.pos_embed = nn.Parameter(torch.empty(1, num_pos, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        self.pos_drop = nn.Dropout(dropout)

    def check_input(self, x: Tensor) -> None:
        """Refuse images that are not float (B, C, H, W) with the model's channels and sides
        that are multiples of the patch size (a ``ValueError`` naming the problem)."""
        if x.ndim != 4:
            raise ValueError(f"expected images of shape (B, C, H, W), got shape {tuple(x.shape)}")
        check_not_empty(x, "images", "(B, C, H, W)")
        hint = "convert them with images.float() / 255, then normalise"
        check_float(x, "images", self.patch_embed.proj.weight, hint)
        if x.shape[1] != self.in_chans:
            raise ValueError(f"expected {self.in_chans} image channels, got {x.shape[1]}")
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"image size {h}x{w} is not divisible by the patch size {self.patch_size}"
            )

    def _pos_embed(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        pos = interpolate_pos_embed(self.pos_embed, self.grid, grid, self.num_prefix)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.pos_drop(x + pos)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, None]:
        """Images (B, C, H, W) -> tokens (B, P + Gh*Gw, D) and no padding mask."""
        self.check_input(x)
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        return self._pos_embed(self.patch_embed(x), grid), None
