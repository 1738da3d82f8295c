"""Trainer state: what a checkpoint holds besides the weights (optimizer, scheduler, scaler,
EMA, position, every RNG), written with ``torch.save`` and read back with ``weights_only=True``:
tensors, numbers, strings and containers, never code.
"""

from __future__ import annotations

import logging
import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.atomic import PathLike, atomic_target, tensor_bytes
from zoo.errors import CheckpointError

logger = logging.getLogger(__name__)


def load_reason(err: BaseException) -> str:
    """Why ``torch.load`` failed, in a few words. For a file holding objects that
    ``weights_only=True`` refuses, PyTorch's message spans lines and advises loading with
    ``weights_only=False``, which would run whatever code the file holds; only the object
    refused is kept (``Unsupported global: GLOBAL builtins.print``)."""
    text = str(err).strip()
    if not _refused(err):
        return text.splitlines()[0] if text else type(err).__name__
    found = re.search(r"WeightsUnpickler error: (.*?)(?:\. Please|\n|$)", text)
    detail = f": {found.group(1)}" if found else ""
    return f"it holds objects other than tensors, numbers and strings{detail}"


def _refused(err: BaseException) -> bool:
    """Whether ``torch.load(weights_only=True)`` refused an object (not a corrupt file)."""
    return isinstance(err, pickle.UnpicklingError) and "weights_only" in str(err)


def _check_weights_only(tmp: Path, path: Path) -> None:
    try:
        torch.load(tmp, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        reason = load_reason(e)
        raise TypeError(
            f"trainer state for {path} holds objects that torch.load(weights_only=True) "
            f"refuses, so nothing was written ({reason})"
        ) from e


def save_trainer_state(state: dict[str, Any], path: PathLike) -> None:
    """Atomically ``torch.save`` a trainer state, checking first that it loads ``weights_only``.

    Raises:
        TypeError: If ``state`` holds anything but tensors, numbers, strings and containers
            (the existing file, if any, is left intact).
    """
    # Checked before the rename: a state that cannot be resumed from must not replace one that can.
    verify = lambda tmp: _check_weights_only(tmp, Path(path))
    with atomic_target(path, verify, needed=tensor_bytes(state)) as tmp:
        torch.save(state, tmp)


def load_trainer_state(path: PathLike) -> dict[str, Any]:
    """Load a trainer state saved by :func:`save_trainer_state` onto the CPU (``weights_only``).

    Raises:
        CheckpointError: If the file is missing, truncated or corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"trainer state file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # zip, unpickling and EOF errors
        what = "was not loaded, since loading it could run code" if _refused(e) else (
            "is corrupt or truncated")
        raise CheckpointError(f"trainer state file {path} {what} ({load_reason(e)})") from e
    if not isinstance(state, dict):
        raise CheckpointError(
            f"trainer state file {path} holds a {type(state).__name__}, not a dict"
        )
    return state


def capture_rng_state() -> dict[str, Any]:
    """The python, numpy, torch (and initialized CUDA) RNG states, as weights_only-safe values."""
    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(keys.astype(np.int64)),  # uint32 -> int64: exact
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    # Reading CUDA state would create a CUDA context in a CPU run; an uninitialized CUDA RNG
    # has not been drawn from, so there is nothing to save.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore RNG states captured by :func:`capture_rng_state`; absent parts are left alone."""
    if "python" in state:
        py = state["python"]
        random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    if "numpy" in state:
        n = state["numpy"]
        keys = np.asarray(n["keys"], dtype=np.int64).astype(np.uint32)  # tensor or list
        np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        saved = state["cuda"]
        if len(saved) != torch.cuda.device_count():
            logger.warning(
                "restoring CUDA RNG of %d devices on %d", len(saved), torch.cuda.device_count()
            )
        torch.cuda.set_rng_state_all(saved[: torch.cuda.device_count()])

