"""The Task contract: everything the training engine needs to know about one task.

A task owns its data (building datasets from a recipe's ``data`` section), batching, loss,
metrics and prediction. The engine owns the loop. Tasks never import ``zoo``: the recipe
sections arrive as plain objects with attributes, the task's own sections (``data.options``,
``augment``, ``loss``, ``decode``, ``tokenizer``) as the dataclasses it declares in
``option_types`` (see ``tasks.options``), built and checked by the recipe checker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

Batch = dict[str, Any]


class Task:
    """Base class of the tasks. Subclasses set ``name``, ``metric`` and ``metric_mode`` and
    implement the methods that raise ``NotImplementedError``.

    Args:
        recipe: the experiment recipe (``zoo.config.Recipe`` or any object with the same
            attributes): ``recipe.data`` (dataset, root, val_fraction, max_samples, options),
            ``recipe.train`` (seed, label_smoothing, ...), and the sections of ``option_types``.
        run_dir: the run directory, where a task may save files it creates (a tokenizer).
    """

    name: ClassVar[str] = ""
    metric: ClassVar[str] = ""  # the metric that chooses the best checkpoint
    metric_mode: ClassVar[str] = "max"  # "max" or "min"
    # every key ``evaluate`` returns, so that a recipe's eval.metric is checked before training;
    # empty: not declared (no check)
    metrics: ClassVar[tuple[str, ...]] = ()
    unit: ClassVar[str] = "samples"  # what throughput counts
    dataset_names: ClassVar[tuple[str, ...]] = ()  # the values of data.dataset; () for any
    # recipe section ("data.options", "augment", "loss", "decode", "tokenizer") -> its dataclass
    option_types: ClassVar[dict[str, type]] = {}
    # old dotted recipe key -> its new place, named in the error (or read there from a saved run)
    moved_keys: ClassVar[dict[str, str]] = {}

    def __init__(self, recipe: Any, run_dir: str | Path | None = None) -> None:
        self.recipe = recipe
        self.data = recipe.data
        self.seed = recipe.train.seed
        self.run_dir = Path(run_dir) if run_dir is not None else None

    def section(self, name: str) -> Any:
        """The typed settings of recipe section ``name`` (a key of ``option_types``, e.g.
        "decode"): the recipe's dataclass, or its defaults when the recipe has none.

        Raises:
            TypeError: the recipe holds something else there (build recipes with
                ``zoo.config.recipe_from_dict``, which checks them).
        """
        cls = self.option_types[name]
        value = self.recipe
        for part in name.split("."):
            value = getattr(value, part, None)
        if value is None:
            return cls()
        if not isinstance(value, cls):
            raise TypeError(f"recipe section '{name}' of a {self.name} recipe must be a "
                            f"{cls.__name__}, got {type(value).__name__}")
        return value

    # -- data ---------------------------------------------------------------------------------
    def prepare(self) -> dict[str, Any]:
        """Read or generate the data once, before the model exists.

        Returns:
            model overrides the data implies (``num_classes``, ``vocab_size``, ``in_chans``...).
        """
        raise NotImplementedError

    def datasets(self) -> dict[str, Dataset]:
        """The splits: ``train`` and ``val`` always, ``test`` when the data has one."""
        raise NotImplementedError

    def collate(self, samples: list[Any]) -> Batch:
        """Samples of a dataset -> a batch dict of tensors."""
        raise NotImplementedError

    def batches(
        self, dataset: Dataset, batch_size: int, shuffle: bool, epoch_seed: int
    ) -> list[list[int]]:
        """The batches of one epoch as lists of dataset indices, a pure function of its
        arguments (exact resume replays it). Default: a seeded shuffle cut into equal batches;
        a task may override it (e.g. token-budget buckets for text)."""
        n = len(dataset)
        if shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed)).tolist()
        else:
            order = list(range(n))
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]

    def loader(self, dataset: Dataset, batch_size: int, num_workers: int = 0) -> DataLoader:
        """An evaluation loader in dataset order."""
        return DataLoader(
            dataset,
            batch_sampler=self.batches(dataset, batch_size, shuffle=False, epoch_seed=0),
            collate_fn=self.collate,
            num_workers=num_workers,
        )

    def count(self, batch: Batch) -> int:
        """How many ``unit``s a batch holds (for throughput)."""
        return len(next(iter(v for v in batch.values() if isinstance(v, Tensor))))

    def batch_task(self, batch: Batch) -> str | None:
        """The name of the task a training batch belongs to, for a run of several tasks that
        logs each one's values apart (a multitask run); None for a task of its own."""
        return None

    # -- model --------------------------------------------------------------------------------
    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        """Forward a batch; return the scalar loss to minimise and values to log."""
        raise NotImplementedError

    def lr_scales(self) -> Callable[[str], float] | None:
        """A ``parameter name -> LR scale`` hook for the optimizer's groups (a multitask run's
        per-task LR multipliers); None: every parameter at the recipe's LR."""
        return None

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        """Metrics of ``model`` over a loader; must include ``self.metric``."""
        raise NotImplementedError

    def write_report(self, directory: Path, split: str) -> list[str]:
        """Write files describing the last ``evaluate`` call (plots, per-class scores) into
        ``directory``, named after ``split``; return lines worth printing. Default: nothing."""
        return []

    def predict(self, model: nn.Module, inputs: Sequence[str], **options: Any) -> list[str]:
        """Human-readable predictions for the CLI (inputs are file paths or sentences)."""
        raise NotImplementedError

    def check_input(self, model: nn.Module, item: str) -> str | None:
        """Why ``predict`` cannot take ``item`` (a file path or sentence) with ``model``, in one
        sentence naming it (e.g. audio longer than the model reads); None when it can. The CLI
        names such inputs and predicts the others. Default: every input is taken."""
        return None

    @classmethod
    def example_input(cls, cfg: Any) -> tuple[tuple[Any, ...], str]:
        """The positional inputs of one sample for a model of this task built from ``cfg`` (its
        family config), and a few words saying what it is (``zoo info`` counts FLOPs on it)."""
        raise NotImplementedError

    def ensemble(
        self, model: nn.Module, others: list[tuple[Path, nn.Module, dict[str, Any]]]
    ) -> nn.Module:
        """One model that averages ``model`` and ``others`` (each: its directory, the model and
        its saved ``task_meta``), for ``evaluate`` and ``predict``. Default: not supported."""
        raise ValueError(f"ensembles are not supported for {self.name} models")

    # -- saved with the model -----------------------------------------------------------------
    def save_extra(self, directory: Path) -> dict[str, Any]:
        """Write files the task needs at prediction time into ``directory`` (beside the model)
        and return JSON-able metadata stored in config.json under "task"."""
        return {}

    def load_extra(self, directory: Path, meta: dict[str, Any]) -> None:
        """Restore what ``save_extra`` wrote, so ``predict`` works on a saved model."""


TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make a task available under ``cls.name``."""
    if cls.name in TASKS:
        raise ValueError(f"task '{cls.name}' is already registered")
    TASKS[cls.name] = cls
    return cls


def get_task(name: str) -> type[Task]:
    """The task class registered as ``name``."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task '{name}'; expected one of {sorted(TASKS)}") from None


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while isinstance(getattr(model, "module", None), nn.Module) or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def iterate(loader: DataLoader, device: torch.device) -> Iterator[Batch]:
    """Batches of a loader with their tensors moved to ``device``."""
    for batch in loader:
        yield {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
