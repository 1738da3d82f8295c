"""Saved models: a directory holding ``config.json`` (the registry name and the config
dataclass as a dict) and ``model.safetensors`` (the weights, each tied tensor stored once).

Writing one (`save_pretrained`), reading and checking its ``config.json``
(`read_model_config`), finding one inside a run directory (`find_model_dir`) and loading its
weights strictly into a built model (`load_weights`), with the checks that NaN or infinite
weights are never used. Building the model a saved config names is `zoo.pretrained`'s job.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor, nn

from zoo.atomic import PathLike, atomic_save_safetensors, atomic_write_bytes, tied_names
from zoo.ema import unwrap_model
from zoo.errors import CheckpointError

logger = logging.getLogger(__name__)

FORMAT = "transformer-zoo"
VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_RESERVED_KEYS = frozenset({"format", "version", "model", "config"})
# Where a run directory keeps its saved models, in order of preference (see find_model_dir).
_RUN_MODEL_DIRS = ("best", "final", "last", "model")

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "CheckpointError",
    "find_model_dir",
    "finite_weights_file",
    "first_nonfinite",
    "load_weights",
    "read_model_config",
    "mismatches",
    "read_safetensors",
    "save_pretrained",
    "step_of",
    "weight_shapes",
]


def _config_json(model: nn.Module, extra: dict[str, Any] | None) -> str:
    cfg, name = getattr(model, "cfg", None), getattr(model, "model_name", None)
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type) or not isinstance(name, str):
        raise TypeError(
            f"save_pretrained needs a model with a dataclass .cfg and a str .model_name, "
            f"got {type(model).__name__}"
        )
    clash = sorted(_RESERVED_KEYS & set(extra or {}))
    if clash:
        raise ValueError(f"extra key {clash[0]!r} is reserved in {CONFIG_NAME}")
    config = {
        "format": FORMAT,
        "version": VERSION,
        "model": name,
        "config": dataclasses.asdict(cfg),
        **(extra or {}),
    }
    try:
        return json.dumps(config, indent=2) + "\n"
    except (TypeError, ValueError) as e:
        raise TypeError(f"config of model {name!r} cannot be written as JSON: {e}") from e


def save_pretrained(
    model: nn.Module, directory: PathLike, extra: dict[str, Any] | None = None
) -> Path:
    """Save ``model`` as ``directory/config.json`` + ``directory/model.safetensors``.

    Args:
        model: A module with ``.cfg`` (a dataclass) and ``.model_name`` (its registry name);
            DDP and ``torch.compile`` wrappers are unwrapped.
        directory: Created if missing; existing files are replaced atomically.
        extra: More top-level keys for ``config.json`` (e.g. ``data_config``, ``tokenizer``).

    Returns:
        The directory.
    """
    model = unwrap_model(model)
    directory = Path(directory)
    text = _config_json(model, extra)  # fails before anything is written
    atomic_save_safetensors(model.state_dict(), directory / WEIGHTS_NAME)
    atomic_write_bytes(directory / CONFIG_NAME, text.encode("utf-8"))
    logger.debug("saved %s to %s", model.model_name, directory)
    return directory


def _not_a_directory(path: Path, what: str) -> str:
    if path.exists():
        return f"{what} {path} is a file, not a directory (give the run or model directory)"
    return f"{what} {path} does not exist"


def read_model_config(directory: PathLike) -> dict[str, Any]:
    """Read and check ``directory/config.json`` of a saved model.

    Raises:
        CheckpointError: If the directory or file is missing, not JSON, or not a transformer-zoo
            model config of a version this code reads.
    """
    directory = Path(directory)
    path = directory / CONFIG_NAME
    if not directory.is_dir():
        raise CheckpointError(_not_a_directory(directory, "saved model directory"))
    if not path.is_file():
        raise CheckpointError(f"{path} not found: {directory} is not a saved transformer-zoo model")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from e
    fmt = config.get("format") if isinstance(config, dict) else None
    if fmt != FORMAT:
        raise CheckpointError(f"{path} has format {fmt!r}, expected {FORMAT!r}")
    version = config.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(
            f"{path} has version {version!r}; this transformer-zoo reads {VERSION}"
        )
    if not isinstance(config.get("model"), str) or not isinstance(config.get("config"), dict):
        raise CheckpointError(f"{path} lacks a 'model' name string or a 'config' object")
    return config


def find_model_dir(path: PathLike) -> Path:
    """The saved model directory at ``path``, or inside the run directory ``path``.

    A directory holding ``config.json`` is a saved model. Otherwise the first of ``path/best``,
    ``path/final``, ``path/last``, ``path/model`` that is one wins, then the highest-step saved
    model among the subdirectories of ``path`` and ``path/checkpoints``.

    Raises:
        CheckpointError: If ``path`` does not exist or holds no saved model.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(_not_a_directory(path, "model directory"))
    if (path / CONFIG_NAME).is_file():
        return path
    for name in _RUN_MODEL_DIRS:
        if (path / name / CONFIG_NAME).is_file():
            return path / name
    configs = [*path.glob(f"*/{CONFIG_NAME}"), *path.glob(f"checkpoints/*/{CONFIG_NAME}")]
    found = [p.parent for p in configs if not p.parent.name.startswith(".")]
    stepped = [p for p in found if step_of(p) is not None]
    if stepped:
        return max(stepped, key=lambda p: (step_of(p), p.name))
    raise CheckpointError(f"{path} holds no saved model ({CONFIG_NAME} + {WEIGHTS_NAME})")


def read_safetensors(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    try:
        return load_file(path)
    except Exception as e:  # safetensors raises its own SafetensorError, or OSError
        raise CheckpointError(
            f"checkpoint file {path} is corrupt or not a safetensors file ({e})"
        ) from e


def weight_shapes(path: PathLike) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor in a ``.safetensors`` file, from its header (no data read).

    Raises:
        CheckpointError: If the file is missing or not a safetensors file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # safetensors raises its own SafetensorError, or OSError
        raise CheckpointError(
            f"checkpoint file {path} is corrupt or not a safetensors file ({e})"
        ) from e


def mismatches(expected: dict[str, Tensor], found: dict[str, Tensor]) -> list[str]:
    """Why ``found`` does not fit ``expected``, one reason per key, in ``expected``'s order."""
    tied = tied_names(expected)
    problems = []
    for name, tensor in expected.items():
        if name not in found:
            if not any(other in found for other in tied.get(name, ())):
                problems.append(f"key {name!r} is missing")
        elif found[name].shape != tensor.shape:
            problems.append(
                f"key {name!r} has shape {tuple(found[name].shape)} in the file "
                f"vs {tuple(tensor.shape)} expected"
            )
    problems += [f"key {name!r} is unexpected" for name in found if name not in expected]
    return problems


def first_nonfinite(tensors: Mapping[str, Tensor]) -> str | None:
    """The name of the first floating tensor of ``tensors`` holding NaN or inf, else None."""
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None


def finite_weights_file(path: PathLike) -> bool:
    """Whether a ``.safetensors`` file reads and all its floating tensors are finite."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return all(first_nonfinite({k: f.get_tensor(k)}) is None for k in f.keys())
    except Exception:  # missing or corrupt: not a checkpoint to go back to
        return False


def _describe(problems: list[str]) -> str:
    more = f" (and {len(problems) - 1} more mismatches)" if len(problems) > 1 else ""
    return problems[0] + more


def load_weights(
    model: nn.Module, path: PathLike, fresh: str | tuple[str, ...] | None = None
) -> nn.Module:
    """Load a ``.safetensors`` file (or a saved model directory) into ``model``, strictly.

    A key missing from the file is fine when its tensor is tied to a key that is present.
    ``fresh`` is a key prefix (e.g. ``"head."``), or a tuple of them, whose tensors keep the
    model's own initialisation when the file lacks them or their shape differs from the
    file's (a new classifier for fine-tuning, new head gates).

    Raises:
        CheckpointError: If the file is missing or corrupt, a key is missing, unexpected
            or of another shape, or a weight is NaN or infinite; the message names the file
            and the first such key.
    """
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_NAME
    tensors = read_safetensors(path)
    expected = model.state_dict()
    if fresh is not None:
        tensors = {
            k: v
            for k, v in tensors.items()
            if not (k.startswith(fresh) and k in expected and expected[k].shape != v.shape)
        }
        expected = {
            k: v for k, v in expected.items() if k in tensors or not k.startswith(fresh)
        }
    problems = mismatches(expected, tensors)
    if problems:
        raise CheckpointError(
            f"checkpoint file {path} does not fit {type(model).__name__}: {_describe(problems)}"
        )
    bad = first_nonfinite(tensors)
    if bad is not None:  # a diverged run's weights: every output would be NaN
        raise CheckpointError(
            f"checkpoint file {path} holds NaN or infinite weights (key {bad!r}), so it "
            f"cannot be used; take an earlier checkpoint of the run"
        )
    model.load_state_dict(tensors, strict=False)  # strictness checked above, ties included
    return model


def step_of(path: Path) -> int | None:
    digits = re.findall(r"\d+", path.stem)
    return int(digits[-1]) if digits else None

