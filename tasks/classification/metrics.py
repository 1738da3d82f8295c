"""Classification metrics: top-k correct counts, the confusion matrix and its plot."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

log = logging.getLogger(__name__)


def topk_correct(logits: Tensor, labels: Tensor, ks: Sequence[int] = (1, 5)) -> list[int]:
    """How many rows have their label among the k highest logits, for each k.

    Args:
        logits: (B, K) scores.
        labels: (B,) class indices.
        ks: the k values; each is capped at K.
    """
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices  # (B, kmax), best first
    hits = top == labels[:, None]  # (B, kmax)
    return [int(hits[:, :k].any(1).sum()) for k in ks]


def confusion_matrix(preds: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """(K, K) counts: row = true class, column = predicted class. preds, labels: (N,)."""
    flat = labels * num_classes + preds
    return torch.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_accuracy(matrix: Tensor) -> Tensor:
    """(K,) fraction of each true class predicted right (NaN for a class with no samples)."""
    return matrix.diag().float() / matrix.sum(1).float()


def plot_confusion_matrix(
    matrix: Tensor, class_names: Sequence[str], path: str | Path, split: str = ""
) -> bool:
    """Write the row-normalised matrix as a PNG, titled with the split and the overall accuracy;
    False (and a warning) without matplotlib."""
    try:
        from matplotlib.figure import Figure  # the object API: no pyplot backend state
    except ImportError:
        log.warning("matplotlib is not installed; no confusion-matrix plot written")
        return False
    k = len(class_names)
    rates = (matrix.float() / matrix.sum(1, keepdim=True).clamp(min=1)).numpy()
    side = max(4.0, 0.45 * k + 2)
    fig = Figure(figsize=(side, side))
    ax = fig.add_subplot()
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046)
    accuracy = 100 * float(matrix.diag().sum()) / max(int(matrix.sum()), 1)
    where = f"{split} split, " if split else ""
    title = f"confusion matrix (row-normalised)\n{where}top-1 {accuracy:.2f}%"
    ax.set(xlabel="predicted", ylabel="true", title=title)
    if k <= 30:  # beyond that the labels overlap
        ax.set_xticks(range(k), class_names, rotation=90)
        ax.set_yticks(range(k), class_names)
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    colour = "white" if rates[i, j] > 0.5 else "black"
                    ax.text(
                        j, i, int(matrix[i, j]), ha="center", va="center", color=colour, fontsize=7
                    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True
