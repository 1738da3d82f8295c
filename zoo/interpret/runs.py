"""A trained run opened for inspection: its task, model and data, and writing a changed model
(a pruned one) as a saved model that every other command reads like any other."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from tasks.base import Task, get_task, iterate
from zoo.config import Recipe
from zoo.distributed import resolve_device
from zoo.pretrained import load_pretrained
from zoo.records import RECIPE_NAME, STATE_NAME
from zoo.run_dir import atomic_dir
from zoo.run_recipe import require_run_recipe
from zoo.saved_model import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    find_model_dir,
    read_model_config,
    save_pretrained,
)


@dataclass
class OpenRun:
    """A run's task (data prepared, saved vocabulary restored), model and recipe."""

    task: Task
    model: nn.Module
    model_dir: Path
    config: dict[str, Any]  # the saved model's config.json
    recipe: Recipe
    run_dir: Path
    splits: dict[str, Dataset]

    @property
    def metric(self) -> str:
        """The metric that chose the run's best checkpoint."""
        return self.recipe.eval.metric or self.task.metric

    def loader(self, split: str, batch_size: int | None = None,
               max_batches: int | None = None) -> DataLoader:
        """A loader over ``split`` in dataset order; with ``max_batches``, that many batches
        spread evenly over the split (the task's unshuffled order may sort by length).

        Raises:
            ValueError: an unknown split or a budget below 1.
        """
        if split not in self.splits:
            raise ValueError(f"split '{split}' does not exist here; the data has "
                             f"{sorted(self.splits)}")
        if max_batches is not None and max_batches < 1:
            raise ValueError(f"--max-batches must be at least 1, got {max_batches}")
        size = batch_size or self.recipe.eval.batch_size or self.recipe.train.batch_size
        batches = self.task.batches(self.splits[split], size, shuffle=False, epoch_seed=0)
        if max_batches is not None and max_batches < len(batches):
            picks = torch.linspace(0, len(batches) - 1, max_batches).round().long().unique()
            batches = [batches[i] for i in picks.tolist()]
        return DataLoader(self.splits[split], batch_sampler=batches, collate_fn=self.task.collate)

    def batches(self, loader: DataLoader) -> list[dict[str, Any]]:
        """The loader's batches on the model's device."""
        return list(iterate(loader, next(self.model.parameters()).device))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        """The task's metrics of ``model`` over ``loader``."""
        return {k: float(v) for k, v in self.task.evaluate(model, loader).items()}


def open_run(path: str | Path, device: str = "auto") -> OpenRun:
    """The run directory (its best/, else newest checkpoint) or saved model ``path`` with the
    run's recipe (``config.yaml`` beside or above the model) and its data prepared.

    Raises:
        CheckpointError: no saved model, or no recipe to find the data by.
    """
    path = Path(path)
    model_dir = find_model_dir(path)
    config = read_model_config(model_dir)
    why = "this command needs the run's recipe to find its data"
    run_dir, recipe = require_run_recipe(path, model_dir, why)
    task = get_task(config.get("task", recipe.task))(recipe, run_dir=run_dir)
    task.prepare()
    task.load_extra(model_dir, config.get("task_meta") or {})
    model = load_pretrained(model_dir).to(resolve_device(device))
    return OpenRun(task, model, model_dir, config, recipe, run_dir, task.datasets())


def save_changed_model(
    model: nn.Module, source: Path, out: str | Path, note: dict[str, Any],
    run_dir: Path | None = None,
) -> Path:
    """Save ``model`` into the new directory ``out`` as a model derived from the saved model
    in ``source``: its task metadata and files (a tokenizer) come along, ``note`` is recorded
    under its key in config.json, and the run's recipe is copied beside it, so ``zoo eval``,
    the predict commands and ``model.pretrained`` read ``out`` like any saved model.

    Args:
        note: ``{key: JSON value}`` for config.json, e.g. ``{"pruned": {...}}``.

    Raises:
        ValueError: ``out`` already exists.
    """
    out = Path(out)
    if out.exists():
        raise ValueError(f"{out} already exists; choose another --out")
    config = read_model_config(source)
    extra = {k: v for k, v in config.items() if k in ("task", "task_meta")}

    def write(tmp: Path) -> None:
        for item in source.iterdir():  # the task's files, e.g. spm.model
            if item.name not in (WEIGHTS_NAME, CONFIG_NAME, STATE_NAME, RECIPE_NAME):
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)
        if run_dir is not None and (run_dir / RECIPE_NAME).is_file():
            shutil.copy2(run_dir / RECIPE_NAME, tmp / RECIPE_NAME)
        save_pretrained(model, tmp, extra={**extra, **json.loads(json.dumps(note))})
        load_pretrained(tmp)  # the result must load

    atomic_dir(out, write)
    return out
