"""What the zoo tests share: a tiny classification recipe, a run's weights and files, crashing a
run in process after a given step, and real ``zoo`` processes to kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from zoo.engine import Trainer, train

ROOT = Path(__file__).resolve().parents[2]


def tiny_vit(model: dict | None = None, data: dict | None = None, train: dict | None = None,
             **sections: Any) -> dict[str, Any]:
    """A classification recipe that trains in about a second: ``test_vit`` shrunk to one layer
    of width 32 on 16-pixel synthetic images (64 to train on, 32 each to validate and test).
    ``model``, ``data`` and ``train`` change the model's overrides, the data options and the
    train section; ``sections`` add or replace whole sections."""
    return {
        "task": "classification",
        "model": {"name": "test_vit",
                  "overrides": {"depth": 1, "dim": 32, "num_heads": 2, **(model or {})}},
        "data": {"dataset": "synthetic", "options": {
            "num_train": 64, "num_val": 32, "num_test": 32, "native_size": 16, **(data or {})}},
        "schedule": {"warmup_steps": 1},
        "train": {"max_steps": 8, "batch_size": 16, **(train or {})},
        **sections,
    }  # fmt: skip


def weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a saved model directory (a checkpoint, ``best/``)."""
    return load_file(path / "model.safetensors")


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder``, to show that a command changed nothing there."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


class Interrupt(Exception):
    """Stands for a crash in the middle of a run."""


def stop_at_step(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Make the next run crash right after optimizer step ``step`` (its logging, evaluation and
    checkpoint done); ``monkeypatch.undo()`` lets runs finish again."""
    after_step = Trainer._after_step

    def crash(self: Trainer) -> None:
        after_step(self)
        if self.pos.step == step:
            raise Interrupt

    monkeypatch.setattr(Trainer, "_after_step", crash)


def crash_and_resume(recipe: Any, run: Path, step: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Train ``recipe`` into ``run``, crashing right after step ``step``, then resume it to the
    end in the same process."""
    stop_at_step(monkeypatch, step)
    with pytest.raises(Interrupt):
        train(recipe, run)
    monkeypatch.undo()
    train(recipe, run, resume=True)


def zoo_process(*args: str, **popen: Any) -> subprocess.Popen:
    """``python -m zoo ARGS`` from the repository root, one thread, output on one pipe."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "zoo", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


def finish(proc: subprocess.Popen, timeout: float = 120) -> str:
    """Wait for a zoo process that must succeed; its output."""
    out = proc.communicate(timeout=timeout)[0]
    out = out.decode() if isinstance(out, bytes) else out
    assert proc.returncode == 0, out
    return out


def kill_after_checkpoint(proc: subprocess.Popen, run: Path, past: int, within: float = 120) -> int:
    """SIGKILL ``proc`` as soon as it has a checkpoint beyond step ``past``; return that step."""
    deadline = time.monotonic() + within

    def newest() -> int:
        steps = [int(p.name[5:]) for p in (run / "checkpoints").glob("step_*")]
        return max(steps, default=0)

    while newest() <= past and proc.poll() is None:
        assert time.monotonic() < deadline, f"no new checkpoint within {within:g} s"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    return newest()
