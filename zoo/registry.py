"""The model registry: name -> config -> model, nothing else.

A variant is a function returning its config dataclass; its name is the model name. The
variants register when ``zoo.models`` is imported (``zoo.create_model`` and the ``zoo`` command
do that); this module imports none of them. Where a model's weights come from (a saved model, a
run, a timm file) is `zoo.pretrained`'s business.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
import inspect
import os
import typing
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from encoders.core import CORE_FIELDS, CoreConfig, make_core_config
from zoo.config import ConfigError, check_value

_MODELS: dict[str, Callable[[], Any]] = {}


def register_model(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Register a variant function under its own name. A name registered twice raises."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model '{name}' is already registered")
    _MODELS[name] = fn
    return fn


def _variant(name: str) -> Callable[[], Any]:
    try:
        return _MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_MODELS), n=5, cutoff=0.4)
        hint = f"; closest: {', '.join(close)}" if close else "; see `zoo list`"
        raise ValueError(f"unknown model '{name}'{hint}") from None


def get_config(name: str, **overrides: Any) -> Any:
    """The config dataclass of variant ``name`` with ``overrides`` applied.

    ``core`` takes a core config, a named size (``"mini"``) or a dict of core settings; the
    core's settings can also be given on their own (``depth=4``, as timm takes its kwargs), and
    apply on top of ``core``.

    Raises:
        ValueError: unknown model name (the message lists the closest names).
        TypeError: an override that is not a setting of the model or its core, or a value
            not of the setting's type (``dim="64"``); the message names the key.
    """
    return resolve_config(name, overrides, f"model '{name}'")


def resolve_config(name: str, overrides: dict[str, Any], where: str) -> Any:
    """`get_config` whose messages say the settings come from ``where`` (e.g. a file)."""
    cfg = _variant(name)()
    return apply_overrides(cfg, overrides, f"model '{name}'", where)


def apply_overrides(cfg: Any, overrides: dict[str, Any], owner: str, where: str = "") -> Any:
    """``cfg`` with ``overrides`` applied (see ``get_config``), each value checked against its
    setting's type; ``owner`` names the config in errors, ``where`` the file it came from."""
    valid = {f.name for f in dataclasses.fields(cfg)}
    hints, core_hints = typing.get_type_hints(type(cfg)), typing.get_type_hints(CoreConfig)
    fields, core_fields = {}, {}
    try:  # ints become floats and lists tuples (JSON has no tuples), as in recipes
        for key, value in overrides.items():
            if key in CORE_FIELDS and "core" in valid:
                core_fields[key] = check_value(value, core_hints[key], key, where or owner)
            elif key not in valid:
                close = difflib.get_close_matches(key, [*valid, *CORE_FIELDS], n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise TypeError(f"{owner} has no setting '{key}'{hint}")
            elif key == "core":
                fields[key] = _checked_core(value, core_hints, where or owner)
            else:
                fields[key] = check_value(value, hints[key], key, where or owner)
    except ConfigError as e:
        raise TypeError(str(e)) from None
    if "core" in valid:
        fields["core"] = make_core_config(fields.get("core", cfg.core), **core_fields)
    return dataclasses.replace(cfg, **fields)


def _checked_core(value: Any, hints: dict[str, Any], where: str) -> Any:
    """A ``core`` override (a size name, a CoreConfig or a dict) with a dict's values checked;
    its keys are checked by ``make_core_config``."""
    if not isinstance(value, dict):
        return value
    return {k: check_value(v, hints[k], f"core.{k}", where) if k in hints else v
            for k, v in value.items()}


def _largest(tensors: list[tuple[str, Tensor]]) -> tuple[str, Tensor]:
    return max(tensors, key=lambda item: item[1].numel())


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not on this system
        return None


def meta_model(name: str, cfg: Any) -> nn.Module:
    """The model of ``cfg`` on the meta device: shapes without memory."""
    with torch.device("meta"):
        return cfg.build()


def check_size(name: str, model: nn.Module) -> None:
    """Refuse a model (on the meta device) whose weights would not fit in this machine's
    memory, naming its largest tensor, before anything is allocated (``num_classes=10**11``
    otherwise fails deep inside PyTorch)."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    nbytes = sum(t.numel() * t.element_size() for _, t in tensors)
    memory = _memory_bytes()
    if tensors and memory is not None and nbytes > memory:
        key, tensor = _largest(tensors)
        raise ValueError(
            f"model '{name}' with these settings needs {nbytes / 2**30:,.0f} GiB for its "
            f"weights, more than this machine's {memory / 2**30:,.0f} GiB (its largest tensor "
            f"is '{key}' of shape {tuple(tensor.shape)}); check its sizes"
        )


def build_model(name: str, cfg: Any) -> nn.Module:
    """Build the model of a config, and tag it with its name and config. Its inputs are
    checked on every call (see `check_inputs`)."""
    check_size(name, meta_model(name, cfg))  # before anything is allocated
    model = cfg.build()
    model.cfg, model.model_name = cfg, name
    model.register_forward_pre_hook(check_inputs, with_kwargs=True)
    return model


@functools.cache
def _input_names(cls: type) -> list[str]:
    return list(inspect.signature(cls.forward).parameters)[1:]  # without self


def check_inputs(model: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
    """Forward pre-hook of the models the registry builds: all tensor inputs share the batch
    size (e.g. a masked autoencoder's images and masking noise; a mismatch fails deep inside
    otherwise). The inputs themselves are checked once, by the models' adapters.

    Raises:
        ValueError: one sentence naming the inputs at fault.
    """
    names = _input_names(type(model))
    inputs = {**dict(zip(names, args)), **kwargs}
    batched = {n: t for n, t in inputs.items() if isinstance(t, Tensor) and t.ndim > 0}
    sizes = [t.shape[0] for t in batched.values()]  # symbolic under torch.export: no set
    if any(size != sizes[0] for size in sizes[1:]):
        shown = ", ".join(f"{n} {tuple(t.shape)}" for n, t in batched.items())
        raise ValueError(
            f"the inputs of {type(model).__name__} disagree on the batch size (their first "
            f"axis): {shown}"
        )


def list_models(
    pattern: str = "*", task: str | None = None, modality: str | None = None
) -> list[str]:
    """Sorted registered names matching an fnmatch ``pattern``, optionally one task/modality."""
    names = []
    for name, fn in _MODELS.items():
        if not fnmatch.fnmatch(name, pattern):
            continue
        cfg_cls = type(fn())
        if task is not None and cfg_cls.task != task:
            continue
        if modality is not None and cfg_cls.modality != modality:
            continue
        names.append(name)
    return sorted(names)


def model_info(name: str) -> dict[str, Any]:
    """Task, modality, parameter count and default config of a registered model."""
    cfg = get_config(name)
    with torch.device("meta"):  # count parameters without allocating or initialising them
        model = cfg.build()
    return {
        "name": name,
        "task": cfg.task,
        "modality": cfg.modality,
        "num_params": sum(p.numel() for p in model.parameters()),
        "config": dataclasses.asdict(cfg),
    }
