"""The model registry: a variant is a function returning its config; its name is the model name."""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from encoders.core import CORE_FIELDS, make_core_config

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
        TypeError: an override that is not a setting of the model or its core.
    """
    cfg = _variant(name)()
    return apply_overrides(cfg, overrides, f"model '{name}'")


def apply_overrides(cfg: Any, overrides: dict[str, Any], owner: str) -> Any:
    """``cfg`` with ``overrides`` applied (see ``get_config``); ``owner`` names it in errors."""
    valid = [f.name for f in dataclasses.fields(cfg)]
    fields, core_fields = {}, {}
    for key, value in overrides.items():
        if key in CORE_FIELDS and "core" in valid:
            core_fields[key] = value
            continue
        if key not in valid:
            close = difflib.get_close_matches(key, [*valid, *CORE_FIELDS], n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise TypeError(f"{owner} has no setting '{key}'{hint}")
        fields[key] = tuple(value) if isinstance(value, list) else value  # JSON: tuple -> list
    if "core" in valid:
        fields["core"] = make_core_config(fields.get("core", cfg.core), **core_fields)
    return dataclasses.replace(cfg, **fields)


def build_model(name: str, cfg: Any) -> nn.Module:
    """Build the model of a config, and tag it with its name and config."""
    model = cfg.build()
    model.cfg, model.model_name = cfg, name
    return model


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
    from zoo.checkpoint import find_model_dir, load_weights, read_model_config

    model_dir = find_model_dir(pretrained)
    saved = read_model_config(model_dir)
    model = build_model(name, get_config(name, **{**saved["config"], **overrides}))
    resized = any(
        key in overrides and overrides[key] != saved["config"].get(key)
        for key in ("num_classes", "vocab_size")
    )
    load_weights(model, model_dir / "model.safetensors", fresh="head." if resized else None)
    return model


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
