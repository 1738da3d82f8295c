"""Sinusoidal, learned and rotary positions, and ViT position-table interpolation."""

from __future__ import annotations

import math

import pytest
import torch

from encoders.positional import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEmbedding,
    interpolate_pos_embed,
    sinusoidal_table,
)


@pytest.mark.parametrize("dim", [16, 7])
def test_sinusoidal_table_matches_the_formula(dim: int) -> None:
    table = sinusoidal_table(50, dim)
    assert table.shape == (50, dim) and table.dtype == torch.float32
    for pos in (0, 1, 5, 49):
        for col in range(dim):
            i = col // 2  # PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...)
            angle = pos / 10000 ** (2 * i / dim)
            expected = math.sin(angle) if col % 2 == 0 else math.cos(angle)
            assert table[pos, col].item() == pytest.approx(expected, abs=1e-6), (pos, col)


def test_sinusoidal_embedding_adds_the_table_from_an_offset_and_is_not_saved() -> None:
    pe = SinusoidalPositionalEmbedding(8, max_len=10)
    x = torch.randn(2, 3, 8)
    torch.testing.assert_close(pe(x, offset=4), x + sinusoidal_table(10, 8)[4:7])
    assert pe.state_dict() == {} and list(pe.parameters()) == []
    with pytest.raises(ValueError, match="11 positions exceeds max_len 10"):
        pe(x, offset=8)


def test_learned_embedding_adds_its_rows_from_an_offset() -> None:
    pe = LearnedPositionalEmbedding(8, max_len=10)
    x = torch.randn(2, 3, 8)
    torch.testing.assert_close(pe(x, offset=2), x + pe.weight[2:5])
    with pytest.raises(ValueError, match="12 positions exceeds max_len 10"):
        pe(x, offset=9)


def _at(rope: RotaryEmbedding, vec: torch.Tensor, pos: int) -> torch.Tensor:
    """Rotate one head vector (Dh,) as if it stood at position ``pos``."""
    return rope(vec[None, None, None], offset=pos)[0, 0, 0]


def test_rotary_rotates_channel_pairs_by_position_times_frequency() -> None:
    rope = RotaryEmbedding(4)  # pairs (0, 2) at frequency 1 and (1, 3) at 10000^(-1/2)
    x = torch.tensor([0.3, -1.2, 0.7, 2.0])
    pos = 7
    out = _at(rope, x, pos)
    for a, b, freq in ((0, 2, 1.0), (1, 3, 10000**-0.5)):
        c, s = math.cos(pos * freq), math.sin(pos * freq)
        assert out[a].item() == pytest.approx(x[a].item() * c - x[b].item() * s, abs=1e-6)
        assert out[b].item() == pytest.approx(x[a].item() * s + x[b].item() * c, abs=1e-6)


def test_rotary_dot_product_depends_only_on_relative_position() -> None:
    torch.manual_seed(0)
    rope = RotaryEmbedding(16)
    q, k = torch.randn(16), torch.randn(16)

    def dot(m: int, n: int) -> float:
        return float(_at(rope, q, m) @ _at(rope, k, n))

    for m, n in ((0, 0), (3, 1), (2, 9), (10, 4)):
        for shift in (1, 17, 250):
            assert dot(m + shift, n + shift) == pytest.approx(dot(m, n), abs=1e-4)
    assert dot(0, 3) != pytest.approx(dot(0, 0), abs=1e-3)  # relative position does matter
    torch.testing.assert_close(_at(rope, q, 5).norm(), q.norm())  # a rotation keeps the norm


def test_rotary_needs_an_even_head_dimension_and_enough_positions() -> None:
    with pytest.raises(ValueError, match="even head dimension, got 5"):
        RotaryEmbedding(5)
    with pytest.raises(ValueError, match="12 positions exceeds max_len 10"):
        RotaryEmbedding(4, max_len=10)(torch.randn(1, 1, 3, 4), offset=9)


def test_interpolate_pos_embed_keeps_prefix_and_resizes_the_grid() -> None:
    torch.manual_seed(0)
    pos = torch.randn(1, 1 + 4 * 4, 8)
    assert interpolate_pos_embed(pos, (4, 4), (4, 4), 1) is pos
    resized = interpolate_pos_embed(pos, (4, 4), (6, 3), 1)
    assert resized.shape == (1, 1 + 6 * 3, 8)
    assert torch.equal(resized[:, :1], pos[:, :1])
    # bicubic interpolation of a constant grid is that constant
    const = torch.cat([torch.zeros(1, 1, 8), torch.full((1, 16, 8), 0.25)], dim=1)
    torch.testing.assert_close(
        interpolate_pos_embed(const, (4, 4), (7, 5), 1)[:, 1:], torch.full((1, 35, 8), 0.25)
    )
