"""Atomic writes: a file (bytes, a ``torch.save`` object, a safetensors state dict) appears
whole or not at all.

Every write goes to a hidden temporary file beside the target, is fsynced, then renamed over the
target, so a crash leaves either the old file or the new one, never half of one. The file gets
the mode a plain ``open()`` would give it (0666 less the umask), whatever the writer chose. A
full disk is reported as `DiskFullError`: one sentence naming the file and the space it needs.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

PathLike = str | os.PathLike


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
def atomic_target(
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


def tensor_bytes(obj: Any) -> int:
    """The bytes of the tensors in a nest of dicts, lists and tuples."""
    if isinstance(obj, Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (creating parent directories)."""
    with atomic_target(path, needed=len(data)) as tmp:
        tmp.write_bytes(data)


def atomic_save_torch(obj: Any, path: PathLike) -> None:
    """``torch.save(obj, path)`` atomically: an error mid-way leaves any existing file intact."""
    with atomic_target(path, needed=tensor_bytes(obj)) as tmp:
        torch.save(obj, tmp)


def tied_names(state: dict[str, Tensor]) -> dict[str, list[str]]:
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
    tied = tied_names(state)
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
    with atomic_target(path, needed=tensor_bytes(tensors)) as tmp:
        save_file(tensors, tmp, metadata={"format": "pt", **aliases, **(metadata or {})})

