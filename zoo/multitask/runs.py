"""One task of a multitask run, for the commands that use a trained model.

``zoo classify/translate/transcribe RUN`` on a multitask run take the run's section of their
task type (``--task NAME`` picks one when there are several) and run that task's own code on
its single-task model inside the multitask model. ``zoo extract RUN --task NAME --out DIR``
writes that model out as a saved single-task model (with the task's files and its section's
recipe), which ``zoo.load_pretrained`` and every command read like any other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from tasks.base import Task, get_task
from zoo.config import Recipe, recipe_from_dict, save_recipe
from zoo.distributed import resolve_device
from zoo.multitask.task import MultiTask, copy_task_files
from zoo.pretrained import load_pretrained
from zoo.records import RECIPE_NAME
from zoo.run_dir import atomic_dir
from zoo.run_recipe import find_run_recipe
from zoo.saved_model import find_model_dir, read_model_config, save_pretrained


def _run_recipe(run: Path, model_dir: Path) -> Recipe | None:
    found = find_run_recipe(run, model_dir)
    return found[1] if found is not None else None


def _task_types(config: dict[str, Any]) -> dict[str, str]:
    """Each section's task type, from the saved multitask model's config (section order)."""
    from zoo.registry import get_config

    return {t["name"]: type(get_config(t["model"])).task for t in config["config"]["tasks"]}


def pick_section(config: dict[str, Any], where: Path, task_type: str | None,
                 name: str | None) -> str:
    """The section of a saved multitask model that a command of ``task_type`` uses: ``name``,
    or the one section of that type.

    Raises:
        ValueError: no such section, a section of another type, or several of the type and
            no name.
    """
    types = _task_types(config)
    listed = ", ".join(f"{n} ({t})" for n, t in types.items())
    if name is not None:
        if name not in types:
            raise ValueError(f"{where} has no task section '{name}'; it has {listed}")
        if task_type is not None and types[name] != task_type:
            raise ValueError(f"task section '{name}' of {where} is a {types[name]} task, "
                             f"not {task_type}")
        return name
    found = [n for n, t in types.items() if t == task_type]
    if not found:
        raise ValueError(f"{where} has no {task_type} task; its sections are {listed}")
    if len(found) > 1:
        raise ValueError(f"{where} has several {task_type} sections ({', '.join(found)}); "
                         "choose one with --task")
    return found[0]


def section_task(
    model_dir: Path, config: dict[str, Any], name: str, recipe: Recipe | None
) -> Task:
    """Section ``name``'s own task object, with the files it saved beside the model."""
    if recipe is not None:
        task = MultiTask(recipe).tasks[name]
    else:  # a saved multitask model on its own: the task's defaults
        entry = next(t for t in config["config"]["tasks"] if t["name"] == name)
        kind = _task_types(config)[name]
        minimal = {"task": kind, "model": {"name": entry["model"]}, "train": {"max_steps": 1}}
        task = get_task(kind)(recipe_from_dict(minimal))
    meta = ((config.get("task_meta") or {}).get("sections") or {}).get(name) or {}
    task.load_extra(Path(model_dir) / name, meta)
    return task


def multitask_for_prediction(
    run: str | Path, task_type: str, name: str | None, device: str = "auto"
) -> tuple[Task, nn.Module] | None:
    """For a multitask run (or saved multitask model): the task and single-task model of its
    ``task_type`` section (``name`` picks one). None for a single-task run.

    Raises:
        ValueError: ``name`` given for a single-task run, or no fitting section.
        CheckpointError: the path holds no saved model.
    """
    run = Path(run)
    model_dir = find_model_dir(run)
    config = read_model_config(model_dir)
    if config.get("task") != "multitask":
        if name is not None:
            raise ValueError(f"--task {name}: {model_dir} holds a {config.get('task')} model, "
                             "not a multitask one")
        return None
    section = pick_section(config, model_dir, task_type, name)
    task = section_task(model_dir, config, section, _run_recipe(run, model_dir))
    model = load_pretrained(model_dir).tasks[section]
    return task, model.to(resolve_device(device)).eval()


def extract(run: str | Path, name: str, out: str | Path) -> Path:
    """Write section ``name`` of a multitask run (its best/, else newest checkpoint) as a saved
    single-task model in ``out``: config.json and weights, the task's files, and the section's
    recipe as config.yaml when the run has one.

    Raises:
        ValueError: not a multitask run, no such section, or ``out`` exists.
    """
    run, out = Path(run), Path(out)
    model_dir = find_model_dir(run)
    config = read_model_config(model_dir)
    if config.get("task") != "multitask":
        raise ValueError(f"{model_dir} holds a {config.get('task')} model, not a multitask one; "
                         "there is nothing to extract")
    name = pick_section(config, model_dir, None, name)
    if out.exists():
        raise ValueError(f"{out} already exists; choose another --out")
    model = load_pretrained(model_dir).tasks[name]
    recipe = _run_recipe(run, model_dir)
    meta = ((config.get("task_meta") or {}).get("sections") or {}).get(name) or {}
    extra = {"task": model.cfg.task, "task_meta": meta, "extracted_from": str(model_dir),
             "section": name}

    def write(tmp: Path) -> None:
        save_pretrained(model, tmp, extra=extra)
        copy_task_files(model_dir, name, tmp)
        if recipe is not None:
            save_recipe(MultiTask(recipe).section(name).recipe, tmp / RECIPE_NAME)
        load_pretrained(tmp)  # the result must load on its own

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_dir(out, write)
    return out


def only_section(task: Task, name: str) -> Task:
    """``task`` (a `MultiTask`) reduced to section ``name``, for ``zoo eval RUN --task NAME``.

    Raises:
        ValueError: ``task`` is a single task, or has no such section.
    """
    if not isinstance(task, MultiTask):
        raise ValueError(f"--task {name}: this run trains one {task.name} task, not several")
    return task.keep(name)
