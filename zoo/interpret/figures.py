"""Drawing helpers shared by the attention figures: matplotlib (Agg, no display), labelled
heat maps, and keeping long inputs legible."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

MAX_TICKS = 60  # more tick labels than this on an axis are thinned out
MAX_SIDE = 400  # attention matrices longer than this are averaged in blocks before drawing


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (files only, no window).

    Raises:
        ImportError: matplotlib is not installed (the message says how to get it).
    """
    try:
        import matplotlib
    except ImportError:
        raise ImportError("drawing figures needs matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def grid(rows: int, cols: int, cell: tuple[float, float] = (2.6, 2.4)) -> tuple[Any, Any]:
    """A figure of rows x cols axes (always a 2-D array of axes)."""
    plt = pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(cell[0] * cols + 1.0, cell[1] * rows + 0.8),
                             squeeze=False, layout="constrained")
    return fig, axes


def save(fig: Any, path: Path) -> Path:
    """Write ``fig`` to ``path`` (PNG) and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)  # the constrained layout already fits titles and bars
    pyplot().close(fig)
    return path


def shrink(matrix: Tensor, max_side: int = MAX_SIDE) -> tuple[Tensor, int, int]:
    """Average a (R, C) matrix in blocks so neither side exceeds ``max_side``.

    Returns:
        the matrix and the block heights and widths (1, 1 when it was small enough).
    """
    r, c = matrix.shape
    fr, fc = math.ceil(r / max_side), math.ceil(c / max_side)
    if fr == 1 and fc == 1:
        return matrix, 1, 1
    pooled = F.avg_pool2d(matrix[None, None].float(), (fr, fc), ceil_mode=True)
    return pooled[0, 0], fr, fc


def ticks(labels: Sequence[str], max_ticks: int = MAX_TICKS) -> tuple[list[int], list[str]]:
    """Positions and labels of at most ``max_ticks`` evenly spaced ticks."""
    step = max(1, math.ceil(len(labels) / max_ticks))
    positions = list(range(0, len(labels), step))
    return positions, [labels[i] for i in positions]


def heatmap(
    ax: Any,
    matrix: Tensor,
    xlabels: Sequence[str] | None = None,
    ylabels: Sequence[str] | None = None,
    **style: Any,
) -> Any:
    """Draw (R, C) values on ``ax`` with tokens as tick labels; returns the image (for a colour
    bar). ``style``: imshow options (cmap, vmin, vmax, extent, aspect)."""
    style = {"cmap": "viridis", "aspect": "auto", "interpolation": "nearest", **style}
    image = ax.imshow(matrix.detach().float().cpu().numpy(), **style)
    if xlabels is not None:
        pos, text = ticks(list(xlabels))
        ax.set_xticks(pos, text, rotation=90, fontsize=7)
    if ylabels is not None:
        pos, text = ticks(list(ylabels))
        ax.set_yticks(pos, text, fontsize=7)
    return image


def colorbar(fig: Any, image: Any, axes: Any, label: str = "attention weight") -> None:
    """A labelled colour bar for ``image`` beside ``axes``."""
    bar = fig.colorbar(image, ax=axes, fraction=0.046, pad=0.02)
    bar.set_label(label)


def suptitle(fig: Any, title: str, note: str = "") -> None:
    """The figure's title, with ``note`` (what was cut or averaged) on a line of its own."""
    fig.suptitle(f"{title}\n({note})" if note else title, fontsize=10)


def as_cpu(t: Tensor) -> Tensor:
    """A float CPU copy for drawing."""
    return t.detach().float().cpu() if isinstance(t, Tensor) else torch.as_tensor(t)


def heads_figure(
    panels: dict[str, dict[str, Tensor]], heads: dict[str, tuple[int, ...]], title: str,
    path: Path,
) -> Path:
    """Layers x heads heat maps, one panel per entry of ``panels`` (its title -> per module
    (H,) values); a pruned head's cell is left blank, small grids print their values."""
    from zoo.interpret.extract import short_name

    names = list(heads)
    total = max(max(h) for h in heads.values()) + 1
    fig, axes = grid(1, len(panels), cell=(0.6 * total + 2.4, 0.32 * len(names) + 1.2))
    for ax, (name, values) in zip(axes[0], panels.items()):
        matrix = torch.full((len(names), total), float("nan"))
        for row, module in enumerate(names):
            matrix[row, list(heads[module])] = as_cpu(values[module])
        signed = bool((matrix.nan_to_num() < 0).any())
        limit = float(matrix.nan_to_num().abs().max()) or 1.0
        style = {"cmap": "RdBu", "vmin": -limit, "vmax": limit} if signed else {"vmin": 0.0}
        image = heatmap(ax, matrix, [str(h) for h in range(total)],
                        [short_name(n) for n in names], **style)
        if matrix.numel() <= 400:  # small grids: the numbers too
            _annotate(ax, matrix, white_below=-math.inf if signed else limit / 2)
        ax.set_xlabel("head")
        ax.set_ylabel("attention layer")
        ax.set_title(name, fontsize=9)
        colorbar(fig, image, ax, name)
    fig.suptitle(title, fontsize=10)
    return save(fig, path)


def _annotate(ax: Any, matrix: Tensor, white_below: float) -> None:
    """Write each cell's value in it (NaN cells stay empty); white on the map's dark end."""
    for r, row in enumerate(matrix.tolist()):
        for c, v in enumerate(row):
            if v == v:  # not NaN
                color = "white" if v < white_below else "black"
                ax.text(c, r, f"{v:.2g}", ha="center", va="center", fontsize=6, color=color)
