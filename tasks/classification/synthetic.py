"""Built-in generated images: ten classes of procedurally drawn shapes (no download).

Each image is one bright shape on a dark, noisy background; position, size, stroke width and
colours are random, so the class is the shape alone. Deterministic from the seed, and
learnable: a two-layer ViT gets well above chance within a few hundred steps.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

SYNTHETIC_CLASSES = (
    "horizontal_bar", "vertical_bar", "diagonal", "anti_diagonal", "ring",
    "disc", "plus", "checkerboard", "square", "triangle",
)  # fmt: skip


def _masks(label: Tensor, dx: Tensor, dy: Tensor, r: Tensor, t: Tensor) -> Tensor:
    """Shape masks (B, S, S) for per-image labels (B,); dx, dy: (B, S, S) offsets from the shape
    centre; r: half-size and t: stroke half-width, both (B, 1, 1)."""
    ax, ay = dx.abs(), dy.abs()
    u, v = (dx + dy).abs() / math.sqrt(2), (dx - dy).abs() / math.sqrt(2)  # diagonal axes
    radius = (dx**2 + dy**2).sqrt()
    box = torch.maximum(ax, ay)
    cell = (r / 2).clamp(min=1.0)  # 4 x 4 checks over the box
    checks = ((torch.floor(dx / cell) + torch.floor(dy / cell)) % 2 == 0) & (box < r)
    shapes = torch.stack(
        [
            (ay < t) & (ax < r),  # horizontal bar
            (ax < t) & (ay < r),  # vertical bar
            (u < t) & (v < r),  # "/" (image y points down)
            (v < t) & (u < r),  # "\"
            (radius - r).abs() < t,  # ring
            radius < r,  # disc
            ((ay < t) & (ax < r)) | ((ax < t) & (ay < r)),  # plus
            checks,  # checkerboard
            (box - r).abs() < t,  # square outline
            (dy < r) & (ax < (dy + r) / 2),  # triangle pointing up
        ]
    )  # (10, B, S, S)
    return shapes[label, torch.arange(len(label))]


def make_synthetic(
    num: int, image_size: int = 32, channels: int = 3, seed: int = 0, num_classes: int = 10
) -> tuple[Tensor, Tensor]:
    """Generate ``num`` labelled shape images.

    Args:
        num: number of images.
        image_size: side S in pixels.
        channels: 3 for colour, 1 for grey.
        seed: the same seed gives the same images.
        num_classes: use the first ``num_classes`` shapes (at most 10).
    Returns:
        images (num, channels, S, S) uint8 and labels (num,) int64, classes balanced.
    """
    if not 1 <= num_classes <= len(SYNTHETIC_CLASSES):
        raise ValueError(
            f"synthetic data has 1 to {len(SYNTHETIC_CLASSES)} classes, not {num_classes}"
        )
    g = torch.Generator().manual_seed(seed)
    s = image_size

    def uniform(lo: float, hi: float, *shape: int) -> Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=g)

    labels = torch.arange(num) % num_classes
    labels = labels[torch.randperm(num, generator=g)]
    r = uniform(0.18 * s, 0.34 * s, num, 1, 1)
    t = (r * uniform(0.18, 0.3, num, 1, 1)).clamp(min=1.0)
    cx, cy = uniform(0.3 * s, 0.7 * s, num, 1, 1), uniform(0.3 * s, 0.7 * s, num, 1, 1)
    ys, xs = torch.meshgrid(torch.arange(s) + 0.5, torch.arange(s) + 0.5, indexing="ij")
    mask = _masks(labels, xs - cx, ys - cy, r, t).unsqueeze(1).float()  # (B, 1, S, S)
    fg = uniform(0.55, 1.0, num, channels, 1, 1)  # a bright random colour
    bg = uniform(0.0, 0.3, num, channels, 1, 1)  # on a dark random colour
    noise = 0.08 * torch.randn(num, channels, s, s, generator=g)
    images = (bg + mask * (fg - bg) + noise).clamp(0, 1)
    return (images * 255).round().to(torch.uint8), labels
