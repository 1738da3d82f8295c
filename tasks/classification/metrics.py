"""Classification metrics: top-k correct counts, the confusion matrix and its plot."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from tasks.base import iterate

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


@torch.no_grad()
def collect_confusion(model: nn.Module, loader: DataLoader, num_classes: int) -> Tensor:
    """The (K, K) confusion matrix of ``model`` over a loader of ``{"images", "labels"}``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.long)
    for batch in iterate(loader, device):
        labels = batch["labels"]
        labels = labels.argmax(1) if labels.ndim == 2 else labels  # soft targets: their argmax
        preds = model(batch["images"]).argmax(1)
        matrix += confusion_matrix(preds.cpu(), labels.cpu(), num_classes)
    model.train(was_training)
    return matrix


def plot_confusion_matrix(matrix: Tensor, class_names: Sequence[str], path: str | Path) -> bool:
    """Write the row-normalised matrix as a PNG; False (and a warning) without matplotlib."""
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
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix (row-normalised)")
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


def save_confusion_matrix(
    model: nn.Module, loader: DataLoader, path: str | Path, class_names: Sequence[str]
) -> dict[str, float]:
    """Evaluate ``model`` over ``loader``, write the confusion matrix PNG to ``path`` (when
    matplotlib is there) and return each class's accuracy in percent, by class name."""
    matrix = collect_confusion(model, loader, len(class_names))
    plot_confusion_matrix(matrix, class_names, path)
    accuracy = per_class_accuracy(matrix) * 100
    return {name: float(a) for name, a in zip(class_names, accuracy)}
