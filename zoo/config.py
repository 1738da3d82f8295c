"""Experiment recipes: YAML files validated against typed dataclasses, plus dotted CLI overrides.

A recipe names a task, a registered model, and the data, optimizer, schedule, training and
evaluation settings::

    task: classification
    model: {name: test_vit, overrides: {num_classes: 10}}
    optim: {lr: 1e-3}
    train: {max_steps: 300, batch_size: 64}

Every key is checked against the field annotations of the dataclasses below (no per-key code):
an unknown key, a value of the wrong type or an invalid choice raises `ConfigError` with one
sentence naming the file, the dotted key and what was expected. A task's own settings are
checked the same way, against the dataclasses the task declares (``Task.option_types``, see
``tasks.options``)::

    data: {dataset: fsdd, root: ../shared/data/fsdd, options: {test_speakers: [theo]}}
    tokenizer: {characters: "0123456789"}         # the units the model reads or writes
    augment: {speed_perturb: [0.9, 1.0, 1.1]}     # training-time augmentation
    loss: {ctc_weight: 0.3}
    decode: {beam_size: 8, lm_weight: 0.4}        # evaluation and prediction

A key that has moved is an error naming its new place. One mapping is deliberately free-form:
``model.overrides`` (passed to ``create_model``, which checks them).

One file over 400 lines: the schema, the type checker that reads its annotations and the loader
are one job, read together (each error names a key of the schema), and every layer imports it.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import logging
import math
import operator
import os
import re
import tempfile
import types
import typing
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

import tasks  # noqa: F401  (registers the tasks, whose option dataclasses the checker reads)
from tasks.base import TASKS, Task
from tasks.options import BOUNDS, SECTIONS

log = logging.getLogger(__name__)

# zoo's own tasks, made of the tasks package's (zoo/multitask): the checker knows them by name,
# since they declare no sections of their own and their module imports this one
ZOO_TASKS = ("multitask",)

__all__ = [
    "ConfigError",
    "DataSection",
    "EvalSection",
    "InitFromSection",
    "ModelSection",
    "MultitaskSection",
    "OptimSection",
    "Recipe",
    "ScheduleSection",
    "TrainSection",
    "apply_overrides",
    "check_recipe",
    "check_value",
    "load_recipe",
    "recipe_from_dict",
    "recipe_to_dict",
    "save_recipe",
    "upgrade_recipe",
]


class ConfigError(ValueError):
    """A recipe or override is invalid; the message names the file or override and the key."""


def _bounds(**limits: float) -> dict[str, float]:
    """Field metadata for a numeric range check: any of ge, gt, le, lt (None always passes)."""
    return limits


# ---------------------------------------------------------------------------------------------
# The schema. Field annotations drive all validation; `_bounds` metadata adds range checks.
# ---------------------------------------------------------------------------------------------


@dataclass
class InitFromSection:
    """Parts of the model to initialise from a saved model or run of any task (zoo/transfer.py)."""

    path: str  # a saved model directory, or a run directory (its best/ first)
    # part names (core, decoder, adapter, head, ...) or fnmatch patterns over state-dict names
    parts: list[str] = field(default_factory=lambda: ["core"])


@dataclass
class ModelSection:
    """Which registered model to build, and keyword overrides for its config dataclass."""

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)  # checked by create_model
    # Start from these weights (fine-tuning): a saved model or run directory, or "timm:FILE".
    # A classifier head of another size than the data's classes starts fresh.
    pretrained: str | None = None
    # then these parts from another model (a core of any family): {path: RUN, parts: [core]}
    init_from: InitFromSection | None = None


@dataclass
class DataSection:
    """Where the data comes from; ``options`` holds the task's own data settings."""

    dataset: str = "synthetic"  # "synthetic" is the built-in generated data (no download)
    root: str | None = None
    val_fraction: float = field(default=0.1, metadata=_bounds(ge=0, lt=1))
    num_workers: int = field(default=0, metadata=_bounds(ge=0))
    max_samples: int | None = field(default=None, metadata=_bounds(ge=1))
    options: Any = None  # the task's dataclass (Task.option_types["data.options"])


@dataclass
class OptimSection:
    """Optimizer settings."""

    name: Literal["adamw"] = "adamw"  # the one optimizer zoo/optim.py builds; add choices there
    lr: float = field(default=1e-3, metadata=_bounds(ge=0))
    weight_decay: float = field(default=0.05, metadata=_bounds(ge=0))
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = field(default=1e-8, metadata=_bounds(gt=0))
    # Layer-wise LR decay (fine-tuning): block i of L trains at lr * layer_decay ** (L - i),
    # the adapter at lr * layer_decay ** (L + 1), the head at lr. None: one LR for all.
    layer_decay: float | None = field(default=None, metadata=_bounds(gt=0, le=1))


@dataclass
class ScheduleSection:
    """Learning-rate schedule: linear warmup, then the named decay."""

    name: Literal["cosine", "inverse_sqrt", "constant"] = "cosine"
    warmup_steps: int = field(default=0, metadata=_bounds(ge=0))
    min_lr_ratio: float = field(default=0.0, metadata=_bounds(ge=0, le=1))  # floor, x lr
    # the last N steps fall linearly to 0 from wherever the schedule is (warmup-stable-decay)
    cooldown_steps: int = field(default=0, metadata=_bounds(ge=0))


@dataclass
class TrainSection:
    """Training loop settings. Step counts are optimizer steps; set max_steps, epochs or both."""

    max_steps: int | None = field(default=None, metadata=_bounds(ge=1))
    epochs: int | None = field(default=None, metadata=_bounds(ge=1))
    batch_size: int = field(default=32, metadata=_bounds(ge=1))  # global, per micro-step
    eval_every: int = field(default=200, metadata=_bounds(ge=1))
    checkpoint_every: int = field(default=200, metadata=_bounds(ge=1))
    keep_last: int = field(default=3, metadata=_bounds(ge=1))
    seed: int = 0
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    grad_accum: int = field(default=1, metadata=_bounds(ge=1))
    clip_grad: float | None = field(default=1.0, metadata=_bounds(gt=0))  # None: no clipping
    ema_decay: float | None = field(default=None, metadata=_bounds(gt=0, lt=1))  # None: no EMA
    device: str = "auto"  # "auto" picks cuda, then mps, then cpu
    log_every: int = field(default=10, metadata=_bounds(ge=1))
    label_smoothing: float = field(default=0.0, metadata=_bounds(ge=0, lt=1))
    # a preset (linear_probe, frozen_core, fpt) or fnmatch patterns over parameter names;
    # frozen parameters are not optimized (zoo/transfer.py). None: everything trains.
    freeze: str | list[str] | None = None


@dataclass
class EvalSection:
    """Evaluation settings. ``metric`` None means the task's default metric."""

    batch_size: int | None = field(default=None, metadata=_bounds(ge=1))  # None: train's
    split: str = "val"
    metric: str | None = None
    mode: Literal["max", "min"] = "max"  # whether a larger metric is better


@dataclass
class MultitaskSection:
    """Several tasks on one core (``task: multitask``; zoo/multitask, docs/multitask.md).

    Each entry of ``tasks`` is a task section: ``name``, then the keys of a single-task recipe
    (``task``, ``model``, ``data``, ``eval``, ``train.batch_size``/``label_smoothing``), then
    ``loss_weight``, ``lr_mult``, ``steps`` and ``reference``; zoo/multitask/sections.py checks
    them, naming the section.
    """

    core: str | dict[str, Any]  # a named core size ("mini") or core settings ({size: mini, ...})
    tasks: list[dict[str, Any]] = field(default_factory=list)
    # which task trains at each optimizer step: "weighted" by each section's steps (PolyViT),
    # "proportional" to the batches in an epoch of each task, "temperature", "uniform"
    sampling: Literal["weighted", "proportional", "temperature", "uniform"] = "weighted"
    temperature: float = field(default=2.0, metadata=_bounds(gt=0))  # sampling: temperature


@dataclass
class Recipe:
    """A full experiment: what to train, on what, and how. ``tokenizer``, ``augment``, ``loss``
    and ``decode`` (and ``data.options``) hold the task's dataclasses for them, or None where the
    task has none."""

    task: str  # a registered task (tasks.base.TASKS)
    model: ModelSection
    data: DataSection = field(default_factory=DataSection)
    tokenizer: Any = None
    augment: Any = None
    loss: Any = None
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    decode: Any = None
    out_dir: str | None = None  # None: the CLI picks runs/<recipe name>
    multitask: MultitaskSection | None = None  # task "multitask" only


# ---------------------------------------------------------------------------------------------
# YAML loading
# ---------------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """`yaml.SafeLoader` that reads ``1e-3`` as a float and rejects duplicate keys and aliases.

    PyYAML follows YAML 1.1, where a float needs a dot, so ``lr: 1e-3`` would load as the
    string "1e-3". A duplicate key would silently keep the last value. Aliases (``*name``) let
    a 1 KB file expand to billions of values ("billion laughs"), which ``str()`` or the saved
    ``config.yaml`` would then spell out; a recipe has no need for them.
    """

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None,
                None,
                f"YAML aliases (*{event.anchor}) are not allowed in a recipe; write the value out",
                event.start_mark,
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _parse_yaml(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"cannot parse {where}{at}: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse {where}: {e}") from None


# ---------------------------------------------------------------------------------------------
# Type checking driven by annotations
# ---------------------------------------------------------------------------------------------


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(tp: Any) -> str:
    """A type as a user reads it in a message, in YAML words (null, mapping, list)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0])}"
        return f"a list of {len(args)} ({', '.join(_describe(a) for a in args)})"
    if origin is list:
        return f"a list of {_describe(args[0])}" if args else "a list"
    if tp is dict or origin is dict or dataclasses.is_dataclass(tp):
        return "a mapping"
    names = {int: "an int", float: "a number", str: "a string", bool: "true or false"}
    return names.get(tp, "null" if tp is type(None) else getattr(tp, "__name__", str(tp)))


def _show(value: Any) -> str:
    if value is None:
        return "null"
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _type_error(value: Any, tp: Any, key: str, where: str) -> ConfigError:
    return ConfigError(f"key '{key}' in {where} expects {_describe(tp)}, got {_show(value)}")


def _convert(value: Any, tp: Any, key: str, where: str, shown: Any = None) -> Any:
    """Check `value` against annotation `tp` and return it in canonical form.

    ints are accepted for floats (and become floats), bools are not ints, lists are accepted for
    tuples, None only where the annotation allows it, mappings for nested dataclasses. `shown`
    is the type named in a type error (the whole ``int | None`` rather than its ``int``).
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return copy.deepcopy(value)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key, where)
    if origin in (typing.Union, types.UnionType):
        return _convert_union(value, tp, key, where)
    if origin is Literal:
        return _check_choice(value, args, key, where)
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):  # .inf, .nan or 1e999: no setting means that
            raise ConfigError(f"key '{key}' in {where} must be a finite number, got {value}")
        return float(value)
    if tp in (int, str, bool) and type(value) is tp:
        return value
    if origin in (tuple, list) and isinstance(value, list | tuple):
        return _convert_sequence(value, tp, key, where)
    if (tp is dict or origin is dict) and isinstance(value, Mapping):
        kt, vt = args or (Any, Any)
        return {
            _convert(k, kt, key, where): _convert(v, vt, f"{key}.{k}", where)
            for k, v in value.items()
        }
    raise _type_error(value, shown or tp, key, where)


def check_value(value: Any, tp: Any, key: str, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` as a recipe's values are checked, and
    return it in canonical form (ints as floats for float, lists as tuples for tuple).

    Raises:
        ConfigError: ``"key 'KEY' in WHERE expects an int, got '64' (str)"`` and the like.
    """
    return _convert(value, tp, key, where)


def _convert_union(value: Any, tp: Any, key: str, where: str) -> Any:
    args = typing.get_args(tp)
    if value is None:
        if type(None) in args:
            return None
        raise _type_error(value, tp, key, where)
    options = [a for a in args if a is not type(None)]
    if len(options) == 1:  # X | None: X's own error, naming the whole type
        return _convert(value, options[0], key, where, shown=tp)
    for option in options:
        try:
            return _convert(value, option, key, where)
        except ConfigError:
            continue
    raise _type_error(value, tp, key, where)


def _nearest(word: Any, choices: Sequence[Any]) -> str | None:
    """The choice closest in spelling to ``word``, if any is close: the one "did you mean"."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return close[0] if close else None


def _check_choice(value: Any, choices: tuple, key: str, where: str) -> Any:
    if any(type(value) is type(c) and value == c for c in choices):
        return value
    listed = ", ".join(repr(c) for c in choices)
    close = _nearest(value, choices)
    hint = f"; did you mean '{close}'?" if close else ""
    raise ConfigError(f"key '{key}' in {where} must be one of {listed}, got {_show(value)}{hint}")


def _convert_sequence(value: Sequence, tp: Any, key: str, where: str) -> tuple | list:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is list:
        item = args[0] if args else Any
        return [_convert(v, item, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if len(args) == 2 and args[1] is Ellipsis:
        args = (args[0],) * len(value)
    if len(args) != len(value):
        raise _type_error(value, tp, key, where)
    return tuple(_convert(v, a, f"{key}[{i}]", where) for i, (v, a) in enumerate(zip(value, args)))


_BOUND_TESTS = {
    "ge": (operator.ge, ">="),
    "gt": (operator.gt, ">"),
    "le": (operator.le, "<="),
    "lt": (operator.lt, "<"),
}


def _check_bounds(value: Any, limits: Mapping[str, Any], key: str, where: str) -> None:
    """Field metadata ``ge``/``gt``/``le``/``lt`` against a number, or each number of a list."""
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_bounds(item, limits, f"{key}[{i}]", where)
        return
    for name in BOUNDS:
        ok, symbol = _BOUND_TESTS[name]
        bound = limits.get(name)
        if bound is not None and isinstance(value, int | float) and not ok(value, bound):
            raise ConfigError(f"key '{key}' in {where} must be {symbol} {bound}, got {value}")


def _unknown_key(key: str, valid: list[str], prefix: str, where: str) -> ConfigError:
    dotted = prefix + str(key)
    close = _nearest(key, valid)
    if close:
        return ConfigError(f"unknown key '{dotted}' in {where}; did you mean '{prefix}{close}'?")
    return ConfigError(f"unknown key '{dotted}' in {where}; valid keys: {', '.join(valid)}")


def _build(cls: type, value: Any, key: str, where: str) -> Any:
    """Build dataclass `cls` from a mapping; `key` is its dotted path ("" for the recipe)."""
    if value is None and key:  # a section whose keys are all commented out
        value = {}
    if not isinstance(value, Mapping):
        what = f"key '{key}'" if key else "the recipe"
        raise ConfigError(f"{what} in {where} must be a mapping, got {_show(value)}")
    prefix = f"{key}." if key else ""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in value:
        if name not in fields:
            raise _unknown_key(name, list(fields), prefix, where)
    kwargs = {}
    for name, f in fields.items():
        if name not in value:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"missing required key '{prefix}{name}' in {where}")
            continue
        kwargs[name] = _convert(value[name], _hints(cls)[name], prefix + name, where)
        _check_bounds(kwargs[name], f.metadata, prefix + name, where)
    try:
        return cls(**kwargs)
    except ValueError as err:  # a task's dataclass checks how its fields fit together
        raise ConfigError(f"{key or 'the recipe'} in {where}: {err}") from None


# ---------------------------------------------------------------------------------------------
# The task's own sections, moved keys and the schedule of a short run
# ---------------------------------------------------------------------------------------------

_MISSING = object()
# keys of earlier versions that every task has dropped or moved (a run's config.yaml holds them)
_RETIRED = (
    "data.image_size", "data.src_lang", "data.tgt_lang", "data.vocab_size", "data.sample_rate",
    "eval.beam_size",
)  # fmt: skip


def _lookup(d: Any, dotted: str) -> Any:
    """The value at a dotted key of nested mappings, or ``_MISSING``."""
    for part in dotted.split("."):
        if not isinstance(d, Mapping) or part not in d:
            return _MISSING
        d = d[part]
    return d


def _task_class(d: Any, where: str) -> type[Task]:
    """The task class the recipe names; zoo's own tasks (`ZOO_TASKS`) may not be registered yet
    (``import zoo.multitask`` does that) and are checked as tasks without sections of their own."""
    if not isinstance(d, Mapping):
        raise ConfigError(f"the recipe in {where} must be a mapping, got {_show(d)}")
    if "task" not in d:
        raise ConfigError(f"missing required key 'task' in {where}")
    names = tuple(sorted({*TASKS, *ZOO_TASKS}))
    return TASKS.get(_check_choice(d["task"], names, "task", where), Task)


def _section_type(task: type[Task], section: str, where: str) -> type:
    """The dataclass ``task`` declares for ``section`` (e.g. "decode")."""
    if section not in task.option_types:
        has = ", ".join(task.option_types) or "none"
        raise ConfigError(f"key '{section}' in {where} is not a section of task '{task.name}' "
                          f"(its sections: {has})")
    return task.option_types[section]


def _check_moved(d: Mapping[str, Any], task: type[Task], where: str) -> None:
    for old, new in task.moved_keys.items():
        if _lookup(d, old) is not _MISSING:
            raise ConfigError(f"key '{old}' in {where} moved to '{new}'")


def _build_sections(recipe: Recipe, d: Mapping[str, Any], task: type[Task], where: str) -> None:
    """Build the task's dataclasses of ``d``'s sections into ``recipe``; a section the task
    does not declare must be absent or empty."""
    if task.dataset_names:
        _check_choice(recipe.data.dataset, task.dataset_names, "data.dataset", where)
    for section in SECTIONS:
        raw = _lookup(d, section)
        value = None
        if section in task.option_types or raw not in (_MISSING, None, {}):
            raw = None if raw is _MISSING else raw
            value = _build(_section_type(task, section, where), raw, section, where)
        owner, _, name = section.rpartition(".")
        setattr(recipe.data if owner else recipe, name, value)
    _check_datasets(recipe.data, _lookup(d, "data.options"), where)


def _check_datasets(data: DataSection, raw: Any, where: str) -> None:
    """A data option set (to another value than its default) for a dataset it is not for."""
    if data.options is None or not isinstance(raw, Mapping):
        return
    for f in dataclasses.fields(data.options):
        for_datasets = f.metadata.get("datasets")
        if f.name not in raw or not for_datasets or data.dataset in for_datasets:
            continue
        if getattr(data.options, f.name) != f.default:
            listed = " or ".join(f"'{n}'" for n in for_datasets)
            raise ConfigError(f"key 'data.options.{f.name}' in {where} applies to dataset "
                              f"{listed}, not '{data.dataset}'")


def _fit_schedule(recipe: Recipe, where: str) -> None:
    """Shorten a warmup or cooldown that does not fit in ``train.max_steps`` (a short smoke run
    of a long recipe) to a tenth of the run, saying so, rather than refusing to start."""
    s, steps = recipe.schedule, recipe.train.max_steps
    if steps is None:
        return
    if s.warmup_steps > steps:
        log.warning("%s: schedule.warmup_steps (%d) is longer than the run's %d steps "
                    "(train.max_steps): shortened to a tenth of the run, %d steps", where,
                    s.warmup_steps, steps, steps // 10)
        s.warmup_steps = steps // 10
    if s.cooldown_steps > steps - s.warmup_steps:
        short = min(steps // 10, steps - s.warmup_steps)
        log.warning("%s: schedule.cooldown_steps (%d) does not fit after the warmup in the run's "
                    "%d steps (train.max_steps): shortened to a tenth of the run, %d steps",
                    where, s.cooldown_steps, steps, short)
        s.cooldown_steps = short


def upgrade_recipe(d: Mapping[str, Any], where: str = "<recipe>") -> dict[str, Any]:
    """A recipe written by an earlier version (a run's ``config.yaml``) in today's keys: every
    moved key is read at its new place (a warning lists them), and settings that no longer
    exist and did nothing for the task are dropped. A key set at both places keeps the new one.

    Args:
        d: the recipe as nested mappings; not modified.
        where: the file, for the warning.
    """
    d = copy.deepcopy(dict(d))
    task = TASKS.get(d.get("task")) if isinstance(d.get("task"), str) else None
    if task is None:
        return d
    moved = []
    for old in [*task.moved_keys, *_RETIRED]:
        *parents, name = old.split(".")
        owner = _lookup(d, ".".join(parents))
        if not isinstance(owner, dict) or name not in owner:
            continue
        value, new = owner.pop(name), task.moved_keys.get(old)
        if new is not None and value is not None and _lookup(d, new) is _MISSING:
            *parents, name = new.split(".")
            node = d
            for part in parents:
                node[part] = node[part] if isinstance(node.get(part), dict) else {}
                node = node[part]
            node[name] = value
            moved.append(f"{old} as {new}")
    if moved:
        log.warning("%s was written by an earlier version: read %s", where, ", ".join(moved))
    return d


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def recipe_from_dict(d: Mapping[str, Any], source: str = "<recipe>") -> Recipe:
    """Validate a plain mapping (as loaded from YAML) and build a `Recipe`.

    Args:
        d: the recipe as nested mappings.
        source: where it came from (a file name), used in error messages.

    The task's sections (``data.options``, ``tokenizer``, ``augment``, ``loss``, ``decode``)
    become the dataclasses the task declares. A warmup or cooldown longer than
    ``train.max_steps`` is shortened to a tenth of the run, with a warning.

    Raises:
        ConfigError: an unknown, moved or missing key, a wrong type, an invalid choice or range.
    """
    task = _task_class(d, source)
    _check_moved(d, task, source)
    recipe = _build(Recipe, d, "", source)
    _build_sections(recipe, d, task, source)
    if recipe.train.max_steps is None and recipe.train.epochs is None:
        raise ConfigError(f"{source} must set train.max_steps or train.epochs (or both)")
    _fit_schedule(recipe, source)
    if (recipe.task == "multitask") != (recipe.multitask is not None):
        raise ConfigError(f"{source}: a 'multitask' section goes with task: multitask, and "
                          "task: multitask needs one (its core and task sections)")
    return recipe


def check_recipe(recipe: Recipe, source: str = "the recipe") -> None:
    """Validate a `Recipe` object again, as `recipe_from_dict` does a mapping: one built or
    changed in Python has not been through the checks of a file.

    Raises:
        ConfigError: as `recipe_from_dict`.
    """
    recipe_from_dict(recipe_to_dict(recipe), source=source)


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The recipe as plain YAML-safe types (tuples become lists); inverse of `recipe_from_dict`."""

    def plain(x: Any) -> Any:
        if isinstance(x, Mapping):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [plain(v) for v in x]
        return x

    return plain(dataclasses.asdict(recipe))


def _field_type(
    parts: list[str], where: str, task: type[Task] | None
) -> tuple[Any, Mapping[str, float]]:
    """The annotation at a dotted path and its bounds (the task's dataclass for its sections;
    Any without a valid task), or Any (no bounds) below a free-form mapping (model.overrides)."""
    tp: Any = Recipe
    bounds: Mapping[str, float] = {}
    for i, part in enumerate(parts):
        if tp is Any:
            return Any, {}
        if not dataclasses.is_dataclass(tp):
            if tp is dict or typing.get_origin(tp) is dict:
                return Any, {}
            raise ConfigError(f"key '{'.'.join(parts[:i])}' in {where} is a value, not a section")
        hints = _hints(tp)
        if part not in hints:
            prefix = ".".join(parts[:i]) + "." if i else ""
            raise _unknown_key(part, list(hints), prefix, where)
        bounds = {f.name: f.metadata for f in dataclasses.fields(tp)}[part]
        tp = _optional_section(hints[part]) if i < len(parts) - 1 else hints[part]
        section = ".".join(parts[: i + 1])
        if section in SECTIONS and task is not None:
            tp = _section_type(task, section, where)
    return tp, bounds


def _optional_section(tp: Any) -> Any:
    """The dataclass of an optional section (``InitFromSection | None``), else ``tp``."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        sections = [a for a in args if dataclasses.is_dataclass(a)]
        if len(sections) == 1:
            return sections[0]
    return tp


def _takes_str(tp: Any) -> bool:
    return tp is str or (
        typing.get_origin(tp) in (typing.Union, types.UnionType) and str in typing.get_args(tp)
    )


def apply_overrides(recipe_dict: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides to a recipe mapping and return a new mapping.

    Values are parsed as YAML (``3e-4`` is a float, ``null`` is None, ``[0.9, 0.98]`` a list)
    and checked against the field's annotation; a string field keeps the text as written
    (``data.options.tgt_lang=no`` is "no", not false). Keys below ``model.overrides`` are
    free-form; the task's sections are checked against its dataclasses. Missing sections are
    created. The input is not modified.

    Args:
        recipe_dict: the recipe as nested mappings.
        overrides: e.g. ``["optim.lr=3e-4", "model.overrides.num_classes=5"]``.

    Raises:
        ConfigError: a malformed override, an unknown key or a value of the wrong type.
    """
    result = copy.deepcopy(dict(recipe_dict))
    for text in overrides:
        where = f"override '{text}'"
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key or any(not p for p in key.split(".")):
            raise ConfigError(f"{where} must look like dotted.key=value, e.g. optim.lr=3e-4")
        parts = key.split(".")
        value = _parse_yaml(raw, where) if raw.strip() else None
        task = TASKS.get(result.get("task")) if isinstance(result.get("task"), str) else None
        if task is not None and key in task.moved_keys:
            raise ConfigError(f"key '{key}' in {where} moved to '{task.moved_keys[key]}'")
        tp, bounds = _field_type(parts, where, task)
        if _takes_str(tp) and isinstance(value, bool | int | float):
            value = raw.strip()  # data.tgt_lang=no, data.root=2024: YAML reads a bool, an int
        # fail here, naming the override, not the file
        _check_bounds(_convert(value, tp, key, where), bounds, key, where)
        node = result
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"key '{'.'.join(parts[: i + 1])}' in {where} is not a mapping")
            node = child
        node[parts[-1]] = value  # the parsed YAML value: plain types, re-checked on build
    return result


def load_recipe(
    path: str | os.PathLike, overrides: Sequence[str] = (), upgrade: bool = False
) -> Recipe:
    """Read a YAML recipe, apply dotted overrides, validate, and return the `Recipe`.

    Args:
        path: the YAML file.
        overrides: ``dotted.key=value`` strings, applied in order (see `apply_overrides`).
        upgrade: the file may be a recipe of an earlier version (a run's ``config.yaml``): read
            moved keys at their new place (see `upgrade_recipe`) instead of refusing them.

    Raises:
        ConfigError: the file is missing or unparsable, or the recipe is invalid.
    """
    path = Path(path)
    if not path.is_file():  # a device such as /dev/zero would be read for ever
        what = "not found"
        if path.exists():
            what = "is a directory, not a recipe file" if path.is_dir() else "is not a regular file"
        raise ConfigError(f"recipe file {what}: {path}")
    data = _parse_yaml(path.read_text(encoding="utf-8"), str(path))
    if data is None:
        raise ConfigError(f"recipe file is empty: {path}")
    if not isinstance(data, Mapping):
        raise ConfigError(f"the recipe in {path} must be a mapping, got {_show(data)}")
    if upgrade:
        data = upgrade_recipe(data, str(path))
    return recipe_from_dict(apply_overrides(data, overrides), source=str(path))


def save_recipe(recipe: Recipe, path: str | os.PathLike) -> None:
    """Write the recipe as YAML, atomically (temp file in the same directory, then rename).

    Args:
        recipe: the recipe to save.
        path: the destination file; its directory is created if missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False, default_flow_style=False)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; a recipe is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
