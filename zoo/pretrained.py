"""Where a model's weights come from: a saved model directory, a run directory holding one, or
a timm ViT file (``"timm:FILE"``). The one place that puts the registry (name -> config -> model)
and saved models (`zoo.saved_model`) together: `create_model` (the public ``zoo.create_model``)
and `load_pretrained`, with the checks a saved ``config.json`` passes before anything is
allocated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

import zoo.models  # noqa: F401  (registers the variants that names refer to)
from encoders.gates import HardConcreteGate
from zoo.atomic import PathLike
from zoo.errors import CheckpointError
from zoo.interop.timm import create_from_timm_checkpoint
from zoo.registry import build_model, check_size, get_config, meta_model, resolve_config
from zoo.saved_model import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    find_model_dir,
    load_weights,
    read_model_config,
    weight_shapes,
)

TIMM_PREFIX = "timm:"
# Config fields that size the head: overriding one to another size starts the head fresh.
_HEAD_SIZES = ("num_classes", "vocab_size")


def check_saved_config(saved: dict[str, Any], directory: str | Path) -> Any:
    """The config a saved model's ``config.json`` describes (as `read_model_config` returns
    it), checked before any weight is allocated: a registered model, known settings of the
    right types, and tensor shapes that agree with ``model.safetensors``.

    Raises:
        CheckpointError: naming ``config.json`` (and the weights file for a shape).
    """
    path = Path(directory) / CONFIG_NAME
    try:
        cfg = resolve_config(saved["model"], dict(saved["config"]), str(path))
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

    Raises:
        ValueError: unknown model name (the message lists the closest names).
        TypeError: an unknown override, or ``pretrained`` that is not a path.
        CheckpointError: ``pretrained`` holds no usable saved model, or one of another task.
    """
    if pretrained is None:
        return build_model(name, get_config(name, **overrides))
    if not isinstance(pretrained, (str, Path)):
        raise TypeError(
            f"pretrained={pretrained!r}: the zoo downloads no weights; pretrained takes a saved "
            "model directory, a run directory or 'timm:FILE'"
        )
    if str(pretrained).startswith(TIMM_PREFIX):  # a timm ViT checkpoint file
        return create_from_timm_checkpoint(name, str(pretrained)[len(TIMM_PREFIX) :], **overrides)
    return _from_saved(name, find_model_dir(pretrained), overrides)


def _from_saved(name: str, model_dir: Path, overrides: dict[str, Any]) -> nn.Module:
    """Model ``name`` with the saved model's settings, then ``overrides``, and its weights."""
    saved = read_model_config(model_dir)
    saved_task = type(check_saved_config(saved, model_dir)).task
    task = type(get_config(name)).task
    if saved_task != task:
        raise CheckpointError(
            f"{model_dir} holds a {saved_task} model ({saved['model']}), not a {task} model "
            f"like {name}"
        )
    model = build_model(name, get_config(name, **{**saved["config"], **overrides}))
    resized = any(
        key in overrides and overrides[key] != saved["config"].get(key) for key in _HEAD_SIZES
    )
    fresh = ("head.",) if resized else ()
    if (saved["config"].get("core") or {}).get("head_gate_l0") is None:
        fresh += _gate_prefixes(model)  # gates added to a model trained without: start open
    load_weights(model, model_dir / WEIGHTS_NAME, fresh=fresh or None)
    return model


def _gate_prefixes(model: nn.Module) -> tuple[str, ...]:
    """The key prefixes of the model's learned head gates (``core.head_gate_l0``)."""
    return tuple(f"{n}." for n, m in model.named_modules() if isinstance(m, HardConcreteGate))


def load_pretrained(directory: PathLike, **overrides: Any) -> nn.Module:
    """Rebuild a saved model by its registry name and config, load its weights, set eval mode.

    Args:
        directory: A directory written by `zoo.saved_model.save_pretrained`.
        **overrides: Config fields to change (e.g. ``num_classes``; shapes must still fit).

    Raises:
        CheckpointError: the directory, its ``config.json`` or its weights are missing,
            corrupt or do not fit each other (the message names the file).
    """
    config = read_model_config(directory)
    check_saved_config(config, directory)  # names config.json; nothing allocated yet
    model = create_model(config["model"], **{**config["config"], **overrides})
    load_weights(model, Path(directory) / WEIGHTS_NAME)
    return model.eval()
