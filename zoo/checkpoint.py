"""Saving and loading: saved model directories, trainer state, atomic writes, averaging.

A saved model is a directory holding ``config.json`` (the registry name and the config dataclass
as a dict) and ``model.safetensors`` (the weights, each tied tensor stored once). Trainer state
(optimizer, scheduler, scaler, EMA, step, RNG) is a ``torch.save`` file that loads with
``weights_only=True``: tensors, numbers, strings and containers, never code.

Every write goes to a hidden temporary file beside the target, is fsynced, then renamed over the
target, so a crash leaves either the old file or the new one, never half of one. The file gets
the mode a plain ``open()`` would give it (0666 less the umask), whatever the writer chose. A
full disk is reported as `DiskFullError`: one sentence naming the file and the space it needs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import os
import pickle
import random
import re
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from zoo.ema import unwrap_model

logger = logging.getLogger(__name__)

FORMAT = "transformer-zoo"
VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_RESERVED_KEYS = frozenset({"format", "version", "model", "config"})
# Where a run directory keeps its saved models, in order of preference (see find_model_dir).
_RUN_MODEL_DIRS = ("best", "final", "last", "model")

PathLike = str | os.PathLike


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or does not fit the model; the message names the file."""


class DiskFullError(OSError):
    """No space left on the device for ``path``; the message says how much it needs.

    Args:
        path: the file that could not be written.
        needed: about how many bytes it needs (None: unknown).
        then: what the user can do next, appended to the message.
    """

    def __init__(self, path: PathLike, needed: int | None, then: str = "") -> None:
        self.path, self.needed, self.then = Path(path), needed, then
        self.free = free_space(self.path.parent)
        need = f"it needs about {_size(needed)}, " if needed else ""
        free = f"{_size(self.free)} free" if self.free is not None else "free space unknown"
        self.message = f"no space left on the device to write {path} ({need}{free})"
        self.message += f"; {then}" if then else ""
        super().__init__(errno.ENOSPC, self.message, str(path))

    def __str__(self) -> str:
        return self.message


def free_space(directory: Path) -> int | None:
    """Bytes free for this user on the file system of ``directory`` (or a parent of it)."""
    for folder in (directory, *directory.parents):
        with contextlib.suppress(OSError):
            return shutil.disk_usage(folder).free
    return None


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


# ---------------------------------------------------------------------------------------------
# Atomic writes


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk; not possible on Windows.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _new_file_mode() -> int:
    """0666 less the umask: what ``open(path, "w")`` gives a new file."""
    with contextlib.suppress(OSError, ValueError):  # Linux tells the umask without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _is_disk_full(error: BaseException, directory: Path, needed: int | None) -> bool:
    """Whether a writer failed for want of space: an ENOSPC OSError, safetensors' wrapped
    "os error 28", or another writer's error (torch.save says "unexpected pos") with less
    space left than the file needs."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)
    if "No space left on device" in text or "os error 28" in text:
        return True
    free = free_space(directory) if isinstance(error, RuntimeError | OSError) else None
    return needed is not None and free is not None and free < needed


@contextlib.contextmanager
def _atomic_target(
    path: PathLike, verify: Callable[[Path], None] | None = None, needed: int | None = None
) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; once written, fsync it, verify it, rename it over.

    ``needed`` (about how many bytes the file takes) lets a full disk be told from other errors.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Hidden, so that globs (keep_last, glob("*.safetensors")) never see a half-written file.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _new_file_mode())  # safetensors writes 0600, torch.save and open() 0644
        if verify is not None:
            verify(tmp)
        os.replace(tmp, path)
    except Exception as e:
        tmp.unlink(missing_ok=True)
        if _is_disk_full(e, path.parent, needed):
            raise DiskFullError(path, needed) from e
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _tensor_bytes(obj: Any) -> int:
    """The bytes of the tensors in a nest of dicts, lists and tuples."""
    if isinstance(obj, Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (creating parent directories)."""
    with _atomic_target(path, needed=len(data)) as tmp:
        tmp.write_bytes(data)


def atomic_save_torch(obj: Any, path: PathLike) -> None:
    """``torch.save(obj, path)`` atomically: an error mid-way leaves any existing file intact."""
    with _atomic_target(path, needed=_tensor_bytes(obj)) as tmp:
        torch.save(obj, tmp)


def _tied_names(state: dict[str, Tensor]) -> dict[str, list[str]]:
    """Map each name in ``state`` whose tensor is exactly shared with other names to that group."""
    groups: dict[tuple, list[str]] = {}
    for name, t in state.items():
        if t.numel() == 0 or t.device.type == "meta":
            continue  # empty and meta tensors have no storage to share
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), t.shape, t.stride())
        groups.setdefault(key, []).append(name)
    return {name: names for names in groups.values() if len(names) > 1 for name in names}


def _unique_tensors(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors that safetensors can store: each tied tensor once, each partial view copied.

    Returns the tensors and ``{dropped name: kept name}`` for the tied ones. Partial views are
    common in buffers (``torch.hann_window`` is a slice of a longer tensor); safetensors'
    ``save_model`` refuses them.
    """
    tied = _tied_names(state)
    tensors, aliases = {}, {}
    for name, t in state.items():
        group = tied.get(name)
        if group and group[0] != name:
            aliases[name] = group[0]
            continue
        storage = t.untyped_storage()
        whole = t.data_ptr() == storage.data_ptr()
        whole = whole and t.numel() * t.element_size() == storage.nbytes()
        tensors[name] = t.contiguous() if whole else t.clone(memory_format=torch.contiguous_format)
    return tensors, aliases


def atomic_save_safetensors(
    state_dict: dict[str, Tensor], path: PathLike, metadata: dict[str, str] | None = None
) -> None:
    """``safetensors.torch.save_file`` atomically; tied tensors are stored once.

    The metadata records each dropped tied name (``{dropped: kept}``), then ``metadata``.
    """
    tensors, aliases = _unique_tensors(state_dict)
    with _atomic_target(path, needed=_tensor_bytes(tensors)) as tmp:
        save_file(tensors, tmp, metadata={"format": "pt", **aliases, **(metadata or {})})


# ---------------------------------------------------------------------------------------------
# Saved model directories


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
    stepped = [p for p in found if _step_of(p) is not None]
    if stepped:
        return max(stepped, key=lambda p: (_step_of(p), p.name))
    raise CheckpointError(f"{path} holds no saved model ({CONFIG_NAME} + {WEIGHTS_NAME})")


def _read_safetensors(path: Path) -> dict[str, Tensor]:
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


def _mismatches(expected: dict[str, Tensor], found: dict[str, Tensor]) -> list[str]:
    """Why ``found`` does not fit ``expected``, one reason per key, in ``expected``'s order."""
    tied = _tied_names(expected)
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


def load_weights(model: nn.Module, path: PathLike, fresh: str | None = None) -> nn.Module:
    """Load a ``.safetensors`` file (or a saved model directory) into ``model``, strictly.

    A key missing from the file is fine when its tensor is tied to a key that is present.
    ``fresh`` is a key prefix (e.g. ``"head."``) whose tensors keep the model's own
    initialisation when their shape differs from the file's (a new classifier for fine-tuning).

    Raises:
        CheckpointError: If the file is missing or corrupt, a key is missing, unexpected
            or of another shape, or a weight is NaN or infinite; the message names the file
            and the first such key.
    """
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_NAME
    tensors = _read_safetensors(path)
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
    problems = _mismatches(expected, tensors)
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


def load_pretrained(directory: PathLike, **overrides: Any) -> nn.Module:
    """Rebuild a saved model by its registry name and config, load its weights, set eval mode.

    Args:
        directory: A directory written by :func:`save_pretrained`.
        **overrides: Config fields to change (e.g. ``num_classes``; shapes must still fit).
    """
    # Imported here: zoo.registry imports this module for create_model(pretrained=...).
    from zoo.registry import check_saved_config, create_model

    config = read_model_config(directory)
    check_saved_config(config, directory)  # names config.json; nothing allocated yet
    model = create_model(config["model"], **{**config["config"], **overrides})
    load_weights(model, Path(directory) / WEIGHTS_NAME)
    return model.eval()


# ---------------------------------------------------------------------------------------------
# Trainer state and RNG


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
    with _atomic_target(path, verify, needed=_tensor_bytes(state)) as tmp:
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


# ---------------------------------------------------------------------------------------------
# Averaging and pruning


def average_checkpoints(paths: Sequence[PathLike]) -> dict[str, Tensor]:
    """Average the tensors of several ``.safetensors`` files (e.g. the last N of a run).

    Floating tensors are averaged in float32 (float64 stays float64) and cast back to their
    dtype; integer tensors (counters) are taken from the last path.

    Raises:
        ValueError: If ``paths`` is empty.
        CheckpointError: If a file is corrupt, or its keys or shapes differ from the first file's;
            the message names the file and the key.
    """
    if not paths:
        raise ValueError("average_checkpoints needs at least one path")
    first = Path(paths[0])
    sums: dict[str, Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    for i, path in enumerate(map(Path, paths)):
        state = _read_safetensors(path)
        if i == 0:
            dtypes = {k: v.dtype for k, v in state.items()}
        elif problems := _mismatches(sums, state):
            raise CheckpointError(f"checkpoint file {path} does not match {first}: {problems[0]}")
        for k, v in state.items():
            if not v.is_floating_point():
                sums[k] = v.clone()
            elif i == 0:
                sums[k] = v.to(torch.promote_types(v.dtype, torch.float32), copy=True)
            else:
                sums[k].add_(v)
    n = len(paths)
    return {k: (v / n).to(dtypes[k]) if v.is_floating_point() else v for k, v in sums.items()}


def _step_of(path: Path) -> int | None:
    digits = re.findall(r"\d+", path.stem)
    return int(digits[-1]) if digits else None


def keep_last(directory: PathLike, pattern: str, k: int) -> list[Path]:
    """Delete all but the ``k`` highest-step checkpoints matching ``pattern`` in ``directory``.

    The step is the last integer in a name's stem (``step_000120.safetensors`` -> 120); names
    without one and hidden (temporary) names are never touched. Every entry of a kept step is
    kept (e.g. ``step_100.safetensors`` and ``step_100.trainer.pt``); directories are removed whole.

    Returns:
        The deleted paths, oldest first.
    """
    if k < 0:
        raise ValueError(f"keep_last needs k >= 0, got {k}")
    by_step: dict[int, list[Path]] = {}
    for path in sorted(Path(directory).glob(pattern)):
        step = _step_of(path)
        if step is not None and not path.name.startswith("."):
            by_step.setdefault(step, []).append(path)
    steps = sorted(by_step)
    doomed = [p for step in steps[: max(0, len(steps) - k)] for p in by_step[step]]
    for path in doomed:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        logger.info("removed old checkpoint %s", path)
    return doomed
