"""Using a trained run: find its recipe and saved model, load the task (with what it saved
beside the model: a vocabulary, class names) and the model for prediction, optionally as an
ensemble with other runs' models, and evaluate it on a split.

A run directory is found by its ``config.yaml``; a saved model that stands alone gets its
task's defaults. ``zoo eval``, ``zoo classify``, ``zoo translate`` and ``zoo transcribe`` are
thin commands over these functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

import tasks  # noqa: F401  (registers the tasks that get_task finds)
from tasks.base import Task, get_task
from zoo.config import recipe_from_dict
from zoo.distributed import resolve_device
from zoo.multitask.runs import multitask_for_prediction, only_section
from zoo.pretrained import load_pretrained
from zoo.run_recipe import find_run_recipe, require_run_recipe
from zoo.saved_model import find_model_dir, read_model_config


def with_ensemble(
    task: Task, model: torch.nn.Module, runs: Sequence[str | Path], device: torch.device
) -> torch.nn.Module:
    """``model`` alone when ``runs`` is empty, else the task's ensemble of it and the models
    of ``runs`` (run directories or saved model directories, loaded onto ``device``).

    Raises:
        CheckpointError: a path holds no saved model.
        ValueError: a model of another task, or one the task cannot average with ``model``.
    """
    if not runs:
        return model
    others = []
    for run in runs:
        model_dir, config = _saved_model(run, task.name, ", so it cannot join the ensemble")
        meta = config.get("task_meta") or {}
        others.append((model_dir, load_pretrained(model_dir).to(device), meta))
    return task.ensemble(model, others)


def _saved_model(run: str | Path, task_name: str, purpose: str = "") -> tuple[Path, dict]:
    """The model directory of ``run`` and its config.json, which must be a ``task_name``
    model (a config without a task is taken as one).

    Raises:
        CheckpointError: the path holds no saved model.
        ValueError: the saved model belongs to another task.
    """
    model_dir = find_model_dir(Path(run))
    config = read_model_config(model_dir)
    saved_task = config.get("task", task_name)
    if saved_task != task_name:
        raise ValueError(f"{model_dir} holds a {saved_task} model, not a {task_name} "
                         f"model{purpose}")
    return model_dir, config


def load_for_prediction(
    run: str | Path,
    task_name: str,
    device: str = "auto",
    ensemble: Sequence[str | Path] = (),
    section: str | None = None,
) -> tuple[Task, torch.nn.Module]:
    """The task (with what it saved beside the model: vocabulary, class names) and the model
    of a run directory (its best/, else newest checkpoint) or a saved model directory;
    averaged with the models of the ``ensemble`` runs when there are any. For a multitask run,
    its ``task_name`` section's task and model (``section`` names one, see zoo/multitask/runs).

    Raises:
        CheckpointError: the path holds no saved model.
        ValueError: the saved model belongs to another task.
    """
    run = Path(run)
    picked = multitask_for_prediction(run, task_name, section, device)
    if picked is not None:
        if ensemble:
            raise ValueError("--ensemble takes single-task models: write this run's task out "
                             "with zoo extract first")
        return picked
    model_dir, config = _saved_model(run, task_name)
    found = find_run_recipe(run, model_dir)
    if found is None:  # a bare saved model: the task's defaults
        minimal = {"task": task_name, "model": {"name": config["model"]}, "train": {"max_steps": 1}}
        recipe = recipe_from_dict(minimal)
    else:
        recipe = found[1]
    task = get_task(task_name)(recipe)
    task.load_extra(model_dir, config.get("task_meta") or {})
    device = resolve_device(device, setting="--device")
    model = with_ensemble(task, load_pretrained(model_dir).to(device), ensemble, device)
    return task, model


def evaluate_run(
    path: str | Path,
    split: str = "val",
    batch_size: int | None = None,
    device: str = "auto",
    report: bool = False,
    overrides: Sequence[str] = (),
    ensemble: Sequence[str | Path] = (),
    section: str | None = None,
) -> tuple[Path, dict[str, float], list[str]]:
    """Evaluate the model saved in a run (its best/, else newest checkpoint) or a model dir.

    Args:
        report: let the task write its report of the evaluation into the run directory (for
            classification ``confusion_{split}.png`` and ``per_class_{split}.json``).
        overrides: ``dotted.key=value`` changes to the run's recipe for this evaluation only
            (e.g. ``decode.beam_size=1`` or ``decode.len_penalty=0.6``); the run's
            ``config.yaml`` is not rewritten.
        ensemble: further runs (or model directories) whose models are averaged with this
            one's (speech recognition: frame by frame); its report is written to ``path``'s
            run as ``<split>_ensemble``.
        section: of a multitask run, evaluate this task section only.
    Returns:
        The model directory evaluated, its metrics on ``split`` and the report's lines.
    """
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    path = Path(path)
    model_dir = find_model_dir(path)
    run_dir, recipe = require_run_recipe(path, model_dir, "eval needs the run's recipe", overrides)
    config = read_model_config(model_dir)
    task = get_task(config.get("task", recipe.task))(recipe, run_dir=run_dir)
    if section is not None:
        task = only_section(task, section)
    task.prepare()
    task.load_extra(model_dir, config.get("task_meta") or {})
    splits = task.datasets()
    if split not in splits:
        raise ValueError(f"split '{split}' does not exist here; the data has {sorted(splits)}")
    device = resolve_device(device, setting="--device")
    model = with_ensemble(task, load_pretrained(model_dir).to(device), ensemble, device)
    batch_size = batch_size or recipe.eval.batch_size or recipe.train.batch_size
    loader = task.loader(splits[split], batch_size)
    with torch.no_grad():
        metrics = {k: float(v) for k, v in task.evaluate(model, loader).items()}
    # an ensemble's report is named apart, so it does not replace the run's own
    name = f"{split}_ensemble" if ensemble else split
    lines = task.write_report(run_dir, name) if report else []
    return model_dir, metrics, lines
