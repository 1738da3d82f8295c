"""A run's recorded recipe (``RUN/config.yaml``): the recipe a resumed run continues, how two
recipes differ and which settings a resumed run cannot change, and the run and recipe a trained
model belongs to (``zoo eval``, the predict and interpret commands)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zoo.config import ConfigError, Recipe, load_recipe, recipe_to_dict
from zoo.errors import CheckpointError
from zoo.records import RECIPE_NAME

logger = logging.getLogger(__name__)

# Recipe keys a resumed run cannot change: its checkpoints hold this model and vocabulary.
FIXED_AT_RESUME = ("task", "model", "tokenizer.vocab_size", "multitask.core", "multitask.tasks")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in d.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def recipe_changes(old: Recipe, new: Recipe) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (old value, new value)}`` for every setting that differs (not out_dir)."""
    a, b = _flatten(recipe_to_dict(old)), _flatten(recipe_to_dict(new))
    keys = sorted((a.keys() | b.keys()) - {"out_dir"})
    return {k: (a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k)}


def fixed_at_resume(key: str) -> bool:
    """Whether the dotted recipe ``key`` is one a resumed run cannot change."""
    return any(key == f or key.startswith(f + ".") for f in FIXED_AT_RESUME)


def resume_recipe(run_dir: Path, recipe_path: str | Path, overrides: list[str]) -> Recipe:
    """The recipe ``zoo train RECIPE --resume`` continues: the run's own ``config.yaml`` (what
    it was started with, overrides included) with this command's ``overrides`` on top.

    The recipe file must train the same task and model; where its other values differ from
    the run's, a warning says that they are not used.

    Raises:
        ConfigError: the recipe file trains another task or model than the run.
    """
    recorded = run_dir / RECIPE_NAME
    given = load_recipe(recipe_path, overrides, upgrade=True)
    if not recorded.is_file():  # a run from before config.yaml existed: nothing else to go by
        return given
    own = load_recipe(recorded, overrides, upgrade=True)
    if (given.task, given.model.name) != (own.task, own.model.name):
        raise ConfigError(
            f"{recipe_path} trains {given.model.name} for {given.task}, but {run_dir} holds a "
            f"run of {own.model.name} for {own.task}; resume it with its own recipe "
            f"({recorded}) or choose another --out"
        )
    ignored = recipe_changes(own, given)
    if ignored:
        logger.warning(
            "resuming with the run's own recipe %s; %s in %s differ%s and %s not used "
            "(give key=value to change a setting)",
            recorded, ", ".join(ignored), recipe_path, "" if len(ignored) > 1 else "s",
            "are" if len(ignored) > 1 else "is",
        )  # fmt: skip
    return own


def find_run_recipe(
    path: Path, model_dir: Path, overrides: Sequence[str] = ()
) -> tuple[Path, Recipe] | None:
    """The run directory and its recipe (``config.yaml``, with ``overrides`` applied) of a
    trained model given to a command as ``path``, or found above its model directory; None
    for a saved model that stands alone."""
    for folder in (path, model_dir, model_dir.parent, model_dir.parent.parent):
        if (folder / RECIPE_NAME).is_file():
            return folder, load_recipe(folder / RECIPE_NAME, overrides, upgrade=True)
    return None


def require_run_recipe(
    path: Path, model_dir: Path, why: str, overrides: Sequence[str] = ()
) -> tuple[Path, Recipe]:
    """`find_run_recipe` for a command that cannot do without the recipe (``why`` says so).

    Raises:
        CheckpointError: the model has no run recipe beside or above it.
    """
    found = find_run_recipe(path, model_dir, overrides)
    if found is None:
        raise CheckpointError(f"no {RECIPE_NAME} beside {model_dir}: {why}")
    return found
