"""Checkpoint averaging: the mean of a run's last N checkpoints as one saved model (the weights
of the last few steps averaged, as fairseq's ``average_checkpoints.py`` does for translation)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from zoo.atomic import PathLike, atomic_save_safetensors, atomic_write_bytes
from zoo.errors import CheckpointError
from zoo.pretrained import load_pretrained
from zoo.records import STATE_NAME
from zoo.run_dir import atomic_dir, checkpoint_dirs
from zoo.saved_model import CONFIG_NAME, WEIGHTS_NAME, mismatches, read_safetensors


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
        state = read_safetensors(path)
        if i == 0:
            dtypes = {k: v.dtype for k, v in state.items()}
        elif problems := mismatches(sums, state):
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



def average_run(run: str | Path, last: int, out: str | Path | None = None) -> Path:
    """Average the weights of a run's last ``last`` checkpoints into a saved model directory.

    Raises:
        ValueError: fewer checkpoints than ``last``, or ``out`` already exists.
    """
    run = Path(run)
    found = checkpoint_dirs(run)
    if last < 1 or len(found) < last:
        raise ValueError(f"{run} has {len(found)} checkpoints; cannot average the last {last}")
    chosen = found[-last:]
    out = Path(out) if out else run / "averaged"
    if out.exists():
        raise ValueError(f"{out} already exists; choose another --out")
    averaged = average_checkpoints([c / WEIGHTS_NAME for c in chosen])

    def write(tmp: Path) -> None:
        for item in chosen[-1].iterdir():  # config.json and the task's files
            if item.name not in (WEIGHTS_NAME, STATE_NAME):
                copy = shutil.copytree if item.is_dir() else shutil.copy2
                copy(item, tmp / item.name)
        config = json.loads((tmp / CONFIG_NAME).read_text(encoding="utf-8"))
        config["averaged_from"] = [c.name for c in chosen]
        atomic_write_bytes(tmp / CONFIG_NAME, (json.dumps(config, indent=2) + "\n").encode())
        atomic_save_safetensors(averaged, tmp / WEIGHTS_NAME, metadata={"format": "pt"})
        load_pretrained(tmp)  # the result must load

    atomic_dir(out, write)
    return out
