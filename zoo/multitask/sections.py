"""The task sections of a multitask recipe, checked one by one, every error naming its section.

A section is a single-task recipe's ``task``, ``model``, ``data``, the task's own sections
(``tokenizer``, ``augment``, ``loss``, ``decode``), ``eval`` and (per task)
``train.batch_size`` and ``train.label_smoothing``, plus what only a multitask run has::

    - name: speech                    # prefixes its metrics (speech/cer) and names its folder
      task: speech_recognition
      model: {name: asr_transformer_ctc_mini}
      data: {dataset: fsdd, root: ../shared/data/fsdd}
      augment: {speed_perturb: [0.9, 1.0, 1.1]}
      train: {batch_size: 32}         # this task's batches (tokens for translation)
      decode: {beam_size: 1}
      loss_weight: 1.0                # multiplies this task's loss
      lr_mult: 1.0                    # this task's own parameters train at lr x lr_mult
      steps: 3000                     # the weighted schedule's share of the steps
      reference: 0.02                 # its single-task metric, for choosing the best checkpoint

The rest of the run's recipe (``optim``, ``schedule``, the other ``train`` keys) applies to
every section; each section becomes a full `Recipe` of its task, validated as any recipe is.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from encoders.core import CORE_FIELDS, CoreConfig
from zoo.config import ConfigError, DataSection, Recipe, recipe_from_dict, recipe_to_dict
from zoo.multitask.model import check_core, check_name, core_base, make_core
from zoo.registry import get_config

OWN_KEYS = ("name", "loss_weight", "lr_mult", "steps", "reference")
# a single-task recipe's keys; the task's own sections are checked by its recipe
RECIPE_KEYS = ("task", "model", "data", "tokenizer", "augment", "loss", "decode", "eval", "train")
TRAIN_KEYS = ("batch_size", "label_smoothing")  # the train settings a task may set for itself


@dataclass
class Section:
    """One task of a multitask run: its name, its own recipe and its multitask settings."""

    name: str
    recipe: Recipe  # the single-task recipe this section amounts to
    loss_weight: float = 1.0
    lr_mult: float = 1.0
    steps: int | None = None
    reference: float | None = None

    @property
    def eval_batch_size(self) -> int:
        return self.recipe.eval.batch_size or self.recipe.train.batch_size


def run_core(recipe: Recipe) -> CoreConfig:
    """The run's core (``multitask.core``)."""
    try:
        return make_core(recipe.multitask.core)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"multitask.core: {e}") from None


def parse_sections(recipe: Recipe) -> list[Section]:
    """The sections of a multitask recipe, each checked against the run.

    Raises:
        ConfigError: a missing ``multitask`` section, no task, a name listed twice, a bad key
            or value in a section, a section's model with another core than the run's; each
            message names the section.
    """
    _check_run(recipe)
    run_core(recipe)  # a bad core fails before any section
    core = core_base(recipe.multitask.core)
    sections: list[Section] = []
    for i, raw in enumerate(recipe.multitask.tasks):
        section = _parse_one(recipe, raw, f"multitask.tasks[{i}]")
        if any(s.name == section.name for s in sections):
            raise ConfigError(f"task section '{section.name}' is listed twice in multitask.tasks "
                              "(each section needs its own name)")
        _check_model(section, core)
        sections.append(section)
    return sections


def _check_run(recipe: Recipe) -> None:
    if recipe.multitask is None:
        raise ConfigError("task 'multitask' needs a 'multitask' section (core and tasks)")
    if not recipe.multitask.tasks:
        raise ConfigError("multitask.tasks lists no task section")
    if recipe.model.name != "multitask":
        raise ConfigError(f"a multitask recipe trains model 'multitask' (its parts come from "
                          f"multitask.tasks), not model.name '{recipe.model.name}'")
    if recipe.data != DataSection(num_workers=recipe.data.num_workers) or any(
        getattr(recipe, section, None) is not None for section in ("tokenizer", "augment", "loss",
                                                                    "decode")
    ):
        raise ConfigError("a multitask run's data (and tokenizer, augment, loss, decode) belong "
                          "in its task sections (multitask.tasks[i]); the run's own data takes "
                          "only num_workers")


def _parse_one(recipe: Recipe, raw: Any, where: str) -> Section:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping (a task section), got {raw!r}")
    if "name" not in raw:
        raise ConfigError(f"{where} has no 'name' (it prefixes the task's metrics)")
    try:
        name = check_name(raw["name"])
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    label = f"task section '{name}'"
    unknown = sorted(set(raw) - {*OWN_KEYS, *RECIPE_KEYS})
    if unknown:
        valid = ", ".join((*OWN_KEYS, *RECIPE_KEYS))
        raise ConfigError(f"unknown key '{unknown[0]}' in {label}; valid keys: {valid}")
    own = {k: raw[k] for k in OWN_KEYS if k in raw and k != "name"}
    own_checked = _own_settings(own, label)
    sub = _section_recipe(recipe, raw, label)
    return Section(name=name, recipe=sub, **own_checked)


def _own_settings(own: dict[str, Any], label: str) -> dict[str, Any]:
    checks = {
        "loss_weight": (lambda v: isinstance(v, int | float) and v >= 0, "a number >= 0"),
        "lr_mult": (lambda v: isinstance(v, int | float) and v > 0, "a number > 0"),
        "steps": (lambda v: v is None or (type(v) is int and v >= 1), "an int >= 1"),
        "reference": (lambda v: v is None or (isinstance(v, int | float) and v != 0),
                      "a non-zero number"),
    }
    for key, value in own.items():
        ok, expected = checks[key]
        if isinstance(value, bool) or not ok(value):
            raise ConfigError(f"key '{key}' in {label} expects {expected}, got {value!r}")
    return {k: float(v) if k != "steps" and v is not None else v for k, v in own.items()}


def _section_recipe(recipe: Recipe, raw: Mapping[str, Any], label: str) -> Recipe:
    """The section as a full single-task recipe: its keys over the run's optim, schedule and
    train."""
    train = raw.get("train") or {}
    if not isinstance(train, Mapping):
        raise ConfigError(f"key 'train' in {label} must be a mapping, got {train!r}")
    shared = sorted(set(train) - set(TRAIN_KEYS))
    if shared:
        raise ConfigError(f"train.{shared[0]} in {label} is a setting of the whole run; a task "
                          f"section sets only {', '.join('train.' + k for k in TRAIN_KEYS)}")
    evaluation = raw.get("eval") or {}
    if isinstance(evaluation, Mapping) and "split" in evaluation:
        raise ConfigError(f"eval.split in {label}: every task is evaluated on the run's "
                          "eval.split")
    run = recipe_to_dict(recipe)
    sub = {key: copy.deepcopy(raw[key]) for key in RECIPE_KEYS if raw.get(key) is not None}
    sub.update(eval=copy.deepcopy(evaluation), optim=run["optim"], schedule=run["schedule"],
               train={**run["train"], **train})
    if "task" not in sub or "model" not in sub:
        raise ConfigError(f"{label} needs 'task' and 'model' (a registered model of that task)")
    if isinstance(sub["eval"], dict):
        sub["eval"].setdefault("split", recipe.eval.split)
    parsed = recipe_from_dict(sub, source=label)
    if parsed.task == "multitask":
        raise ConfigError(f"{label} is itself a multitask recipe; a section trains one task")
    for key in ("pretrained", "init_from"):
        if getattr(parsed.model, key, None) is not None:
            raise ConfigError(f"model.{key} in {label}: a section starts from the run's "
                              f"model.{key}, not from its own")
    return parsed


def _check_model(section: Section, core: CoreConfig) -> None:
    """The section's model exists, takes its overrides and has the run's core."""
    model, label = section.recipe.model, f"task section '{section.name}'"
    core_keys = sorted(k for k in model.overrides if k in CORE_FIELDS or k == "core")
    if core_keys:
        raise ConfigError(f"model.overrides.{core_keys[0]} in {label} is a core setting; the "
                          "run's core is set once, in multitask.core")
    try:
        cfg = get_config(model.name, **model.overrides)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{label}: {e}") from None
    if cfg.task != section.recipe.task:
        raise ConfigError(f"{label} trains {section.recipe.task}, but model {model.name} is a "
                          f"{cfg.task} model")
    try:
        check_core(section.name, model.name, cfg.core, core)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def section_names(recipe: Recipe) -> list[str]:
    """The section names of a multitask recipe, in order (unchecked)."""
    return [t.get("name") for t in recipe.multitask.tasks if isinstance(t, Mapping)]


