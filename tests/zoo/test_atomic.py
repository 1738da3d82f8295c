"""Atomic writes: the old file survives a failed write, no temporary is left, new files get the mode
open() gives, and a full disk is one sentence."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import zoo.atomic
from tests.zoo.tiny_model import tiny_model as _model
from zoo.atomic import DiskFullError, atomic_save_safetensors, atomic_save_torch, atomic_write_bytes
from zoo.saved_model import save_pretrained
from zoo.trainer_state import (
    save_trainer_state,
)


class Unpicklable:
    def __reduce__(self) -> tuple:
        raise RuntimeError("boom mid-write")


def test_atomic_write_keeps_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    atomic_save_torch({"step": 1}, path)
    with pytest.raises(RuntimeError, match="boom mid-write"):
        atomic_save_torch({"step": 2, "big": torch.zeros(1000), "bad": Unpicklable()}, path)
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]
    atomic_write_bytes(tmp_path / "sub" / "a.txt", b"hello")
    assert (tmp_path / "sub" / "a.txt").read_bytes() == b"hello"


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_atomic_writes_get_the_mode_of_a_new_file(tmp_path: Path, umask: int) -> None:
    """safetensors writes its files 0600; a saved model's files are all 0666 less the umask."""
    old = os.umask(umask)
    try:
        save_pretrained(_model(), tmp_path / "model")
        save_trainer_state({"step": 1}, tmp_path / "model" / "trainer_state.pt")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "model").iterdir()}
    assert modes == dict.fromkeys(modes, 0o666 & ~umask) and len(modes) == 3


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        # what safetensors raises (its SafetensorError is a plain Exception)
        Exception("Error while serializing: I/O error: No space left on device (os error 28)"),
    ],
)
def test_a_full_disk_is_one_sentence_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    path = tmp_path / "model.safetensors"
    atomic_save_safetensors({"w": torch.ones(2)}, path)

    def full(tensors: dict, tmp: Path, metadata: dict | None = None) -> None:
        Path(tmp).write_bytes(b"half")
        raise error

    monkeypatch.setattr(zoo.atomic, "save_file", full)
    with pytest.raises(DiskFullError) as raised:
        atomic_save_safetensors({"w": torch.zeros(1000)}, path)
    message = str(raised.value)
    need = "(it needs about 4.0 KB, "
    assert message.startswith(f"no space left on the device to write {path} {need}")
    assert message.endswith(" free)") and raised.value.errno == errno.ENOSPC
    assert torch.equal(load_file(path)["w"], torch.ones(2))  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_torch_save_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.save says only "unexpected pos": too little free space for the file tells why."""

    def fails(obj: object, tmp: Path) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(torch, "save", fails)
    with pytest.raises(RuntimeError, match="unexpected pos"):  # plenty of space: not the disk
        save_trainer_state({"m": torch.zeros(1000)}, tmp_path / "state.pt")
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=1000))
    with pytest.raises(DiskFullError, match=r"state.pt \(it needs about 4.0 KB, 1.0 KB free\)"):
        save_trainer_state({"m": torch.zeros(1000)}, tmp_path / "state.pt")
    assert list(tmp_path.iterdir()) == []
