"""Position information: sinusoidal, learned and rotary."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def sinusoidal_table(num_positions: int, dim: int) -> Tensor:
    """The table of "Attention Is All You Need": PE(pos, 2i) = sin(pos / 10000^(2i/d)),
    PE(pos, 2i+1) = cos(pos / 10000^(2i/d)).

    Returns:
        (num_positions, dim) float32.
    """
    position = torch.arange(num_positions, dtype=torch.float64)[:, None]  # (N, 1)
    two_i = torch.arange(0, dim, 2, dtype=torch.float64)  # (ceil(D/2),)
    angle = position / torch.pow(10000.0, two_i / dim)  # (N, ceil(D/2))
    table = torch.zeros(num_positions, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle[:, : dim // 2])
    return table.float()


class SinusoidalPositionalEmbedding(nn.Module):
    """Adds the fixed sinusoidal table; it has no parameters and is not saved."""

    def __init__(self, dim: int, max_len: int = 4096) -> None:
        super().__init__()
        self.register_buffer("table", sinusoidal_table(max_len, dim), persistent=False)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """x: (B, N, D) -> x + PE[offset : offset + N]."""
        n = x.shape[1]
        if offset + n > self.table.shape[0]:
            raise ValueError(
                f"sequence of {offset + n} positions exceeds max_len {self.table.shape[0]}"
            )
        return x + self.table[offset : offset + n].to(x.dtype)


class LearnedPositionalEmbedding(nn.Module):
    """A learned vector per position, added to the input."""

    def __init__(self, dim: int, max_len: int = 1024) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_len, dim))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """x: (B, N, D) -> x + P[offset : offset + N]."""
        n = x.shape[1]
        if offset + n > self.weight.shape[0]:
            raise ValueError(
                f"sequence of {offset + n} positions exceeds max_len {self.weight.shape[0]}"
            )
        return x + self.weight[offset : offset + n]


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoFormer, Su et al. 2021) on queries and keys.

    Pairs of channels (i, i + Dh/2) are rotated by an angle pos * base^(-2i/Dh), so that
    q·k depends on the relative position only.
    """

    def __init__(self, head_dim: int, base: float = 10000.0, max_len: int = 4096) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embedding needs an even head dimension, got {head_dim}")
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        angle = torch.arange(max_len, dtype=torch.float64)[:, None] * inv_freq  # (N, Dh/2)
        self.register_buffer("cos", angle.cos().float(), persistent=False)
        self.register_buffer("sin", angle.sin().float(), persistent=False)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """x: (B, H, N, Dh) at positions offset .. offset+N-1 -> rotated x, same shape."""
        n = x.shape[2]
        if offset + n > self.cos.shape[0]:  # slicing would silently come up short
            raise ValueError(
                f"sequence of {offset + n} positions exceeds max_len {self.cos.shape[0]}"
            )
        cos = self.cos[offset : offset + n].to(x.dtype)  # (N, Dh/2)
        sin = self.sin[offset : offset + n].to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def interpolate_pos_embed(
    pos_embed: Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int], num_prefix: int
) -> Tensor:
    """Resize ViT patch position embeddings (1, P + Gh*Gw, D) to another grid, bicubic.

    The ``num_prefix`` leading positions (cls token) are kept as they are.
    """
    if old_grid == new_grid:
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    d = grid.shape[-1]
    # (1, Gh*Gw, D) -> (1, D, Gh, Gw) for image-style interpolation
    grid = grid.reshape(1, old_grid[0], old_grid[1], d).permute(0, 3, 1, 2)
    grid = nn.functional.interpolate(
        grid.float(), size=new_grid, mode="bicubic", align_corners=False
    ).to(pos_embed.dtype)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], d)
    return torch.cat([prefix, grid], dim=1)
