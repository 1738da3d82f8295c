"""The model registry: a variant is a function returning its config; its name is the model name."""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
import inspect
import os
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from encoders.core import CORE_FIELDS, CoreConfig, make_core_config

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
    return _config(name, overrides, f"model '{name}'")


def _config(name: str, overrides: dict[str, Any], where: str) -> Any:
    """`get_config` whose messages say the settings come from ``where`` (e.g. a file)."""
    cfg = _variant(name)()
    return apply_overrides(cfg, overrides, f"model '{name}'", where)


def apply_overrides(cfg: Any, overrides: dict[str, Any], owner: str, where: str = "") -> Any:
    """``cfg`` with ``overrides`` applied (see ``get_config``), each value checked against its
    setting's type; ``owner`` names the config in errors, ``where`` the file it came from."""
    from zoo.config import ConfigError, check_value  # zoo.config imports no registry

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
    from zoo.config import check_value

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


def check_saved_config(saved: dict[str, Any], directory: str | Path) -> Any:
    """The config a saved model's ``config.json`` describes (as `read_model_config` returns
    it), checked before any weight is allocated: a registered model, known settings of the
    right types, and tensor shapes that agree with ``model.safetensors``.

    Raises:
        CheckpointError: naming ``config.json`` (and the weights file for a shape).
    """
    from zoo.checkpoint import CONFIG_NAME, WEIGHTS_NAME, CheckpointError, weight_shapes

    path = Path(directory) / CONFIG_NAME
    try:
        cfg = _config(saved["model"], dict(saved["config"]), str(path))
        model = meta_model(saved["model"], cfg)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: {e}" if str(path) not in str(e) else str(e)) from e
    weights = Path(directory) / WEIGHTS_NAME
    shapes = weight_shapes(weights)
    for key, tensor in model.state_dict().items():  # in the model's order: weights first
        if key in shapes and tuple(tensor.shape) != shapes[key]:
            raise CheckpointError(
                f"{path} describes a model whose '{key}' has shape {tuple(tensor.shape)}, but "
                f"{weights} holds {shapes[key]}: one of the two files was changed"
            )
    try:
        check_size(saved["model"], model)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from e
    return cfg


def create_model(name: str, pretrained: str | Path | None = None, **overrides: Any) -> nn.Module:
    """Build a registered model by name.

    Args:
        name: a registered variant, e.g. ``"vit_tiny_patch16_224"``.
        pretrained: a saved model directory (``save_pretrained``) or a run directory holding
            one; its architecture settings are used, then ``overrides``. With ``num_classes``
            (or ``vocab_size``) overridden to another size, the head starts fresh (fine-tuning),
            as it does for ``"timm:FILE"``, a timm ViT checkpoint.
        **overrides: config fields to change, e.g. ``num_classes=10``.
    """
    if pretrained is None:
        return build_model(name, get_config(name, **overrides))
    if not isinstance(pretrained, (str, Path)):
        raise TypeError(
            f"pretrained={pretrained!r}: the zoo downloads no weights; pretrained takes a saved "
            "model directory, a run directory or 'timm:FILE'"
        )
    if str(pretrained).startswith("timm:"):  # a timm ViT checkpoint file (zoo/interop/timm.py)
        from zoo.interop.timm import create_from_timm_checkpoint

        return create_from_timm_checkpoint(name, str(pretrained)[len("timm:") :], **overrides)
    from zoo.checkpoint import CheckpointError, find_model_dir, load_weights, read_model_config

    model_dir = find_model_dir(pretrained)
    saved = read_model_config(model_dir)
    check_saved_config(saved, model_dir)
    saved_task, task = type(_variant(saved["model"])()).task, type(_variant(name)()).task
    if saved_task != task:
        raise CheckpointError(
            f"{model_dir} holds a {saved_task} model ({saved['model']}), not a {task} model "
            f"like {name}"
        )
    model = build_model(name, get_config(name, **{**saved["config"], **overrides}))
    resized = any(
        key in overrides and overrides[key] != saved["config"].get(key)
        for key in ("num_classes", "vocab_size")
    )
    fresh = ("head.",) if resized else ()
    if (saved["config"].get("core") or {}).get("head_gate_l0") is None:
        fresh += _gate_prefixes(model)  # gates added to a model trained without: start open
    load_weights(model, model_dir / "model.safetensors", fresh=fresh or None)
    return model


def _gate_prefixes(model: nn.Module) -> tuple[str, ...]:
    """The key prefixes of the model's learned head gates (``core.head_gate_l0``)."""
    from encoders.gates import HardConcreteGate

    return tuple(f"{n}." for n, m in model.named_modules() if isinstance(m, HardConcreteGate))


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
