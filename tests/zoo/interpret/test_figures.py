"""Drawing helpers: legible long inputs, the layers x heads heat map, PNG files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from zoo.interpret import figures as fg

PNG = b"\x89PNG\r\n\x1a\n"


def capture_figures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every figure the interpret modules save, kept for inspection (still written)."""
    figures: list[Any] = []
    save = fg.save

    def keep(fig: Any, path: Path) -> Path:
        figures.append(fig)
        return save(fig, path)

    monkeypatch.setattr(fg, "save", keep)
    return figures


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG


def bar_labels(fig: Any) -> list[str]:
    """The labels of a figure's colour bars (the axes that are not panels)."""
    return [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]


def test_long_matrices_are_averaged_in_blocks() -> None:
    matrix = torch.arange(1000 * 10, dtype=torch.float32).reshape(1000, 10)
    small, rows, cols = fg.shrink(matrix, max_side=400)
    assert (rows, cols) == (3, 1) and small.shape == (334, 10)
    torch.testing.assert_close(small[0], matrix[:3].mean(0))
    same, rows, cols = fg.shrink(matrix[:50])
    assert same is not None and (rows, cols) == (1, 1) and same.shape == (50, 10)


def test_ticks_are_thinned_to_stay_readable() -> None:
    positions, labels = fg.ticks([f"t{i}" for i in range(200)], max_ticks=50)
    assert len(positions) == 50 and labels[1] == "t4"
    assert fg.ticks(["a", "b"]) == ([0, 1], ["a", "b"])


def test_heads_figure_has_a_panel_per_score_with_pruned_heads_blank(tmp_path, monkeypatch):
    figures = capture_figures(monkeypatch)
    heads = {"core.blocks.0.attn": (0, 1, 2, 3), "core.blocks.1.attn": (1, 3)}
    importance = {"core.blocks.0.attn": torch.rand(4), "core.blocks.1.attn": torch.rand(2)}
    change = {n: -v for n, v in importance.items()}
    path = fg.heads_figure({"importance": importance, "top1 change": change}, heads, "run",
                           tmp_path / "heads.png")
    assert is_png(path)
    (fig,) = figures
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert [ax.get_title() for ax in panels] == ["importance", "top1 change"]
    assert panels[0].get_xlabel() == "head" and panels[0].get_ylabel() == "attention layer"
    assert [t.get_text() for t in panels[0].get_yticklabels()] == ["enc 0", "enc 1"]
    drawn = panels[0].images[0].get_array()
    assert drawn.mask[1, 0] and drawn.mask[1, 2] and not drawn.mask[1, 1]  # pruned: blank
    assert panels[1].images[0].get_cmap().name == "RdBu"  # signed changes: a diverging map
    assert bar_labels(fig) == ["importance", "top1 change"]
