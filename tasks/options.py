"""Typed task options: how a task declares the recipe settings it reads.

A task declares one dataclass per recipe section it reads, in ``Task.option_types``:

- ``data.options``: settings of its datasets (sizes, splits, files, a data seed);
- ``augment``: training-time augmentation;
- ``loss``: the loss beyond ``train.label_smoothing``;
- ``decode``: search and language model at evaluation and prediction (``beam_size``...);
- ``tokenizer``: the units the model reads or writes.

The recipe checker (``zoo.config``) builds these dataclasses from a recipe and checks every key
against their field annotations, so each setting has its type, range and default in one place:
the dataclass. Field metadata, written with `setting`, adds what an annotation cannot say:
``ge``/``gt``/``le``/``lt`` bound a number (or every number of a list), and ``datasets`` names
the values of ``data.dataset`` a data option applies to (another value than the default there is
an error). A dataclass may check how its fields fit together in ``__post_init__``, raising
ValueError with a sentence that names the field.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

SECTIONS = ("data.options", "augment", "loss", "decode", "tokenizer")
BOUNDS = ("ge", "gt", "le", "lt")


def setting(
    default: Any,
    *,
    datasets: tuple[str, ...] | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A dataclass field of a task option: its default, its range and the datasets it is for.

    Args:
        default: the default value (immutable: use a tuple for a list).
        datasets: the ``data.dataset`` values the option applies to; None for all.
        ge, gt, le, lt: bounds of a number, or of each number of a tuple; None always passes.
    """
    limits = {"ge": ge, "gt": gt, "le": le, "lt": lt}
    metadata: dict[str, Any] = {k: v for k, v in limits.items() if v is not None}
    if datasets is not None:
        metadata["datasets"] = tuple(datasets)
    return field(default=default, metadata=metadata)
