"""The run directory: what a run keeps in it, and how a training process starts in it safely.

A training process holds ``RUN/.zoo.lock`` (see `zoo.lock`) from before it looks at the
directory until it ends, so two processes never share a run. It starts in three steps:

1. `RunDir.open`: create the directory, take the lock, decide what the directory holds (a run
   to resume, a run that stopped before its first checkpoint, or nothing of a run), remove what
   a killed run of this program left (only names of its own), and make ``RUN/.zoo-start/``,
   where the task writes its files (a vocabulary) during start-up. A resumed run finds there
   the files saved beside its checkpoint, so it never picks up a file of another run.
2. The engine builds the task, data and model.
3. `RunDir.commit`: move the staged files into the run, write ``config.yaml``. If start-up
   fails instead, `RunDir.abort` removes everything this start wrote, the directory included
   when this start created it.

Nothing that this program did not write is touched: temporaries are recognized by their
``.zoo-`` prefix, and a run that stopped early is replaced only when the lock file marks the
directory as one a ``zoo train`` used.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zoo.atomic import DiskFullError, PathLike
from zoo.config import ConfigError, Recipe, load_recipe, save_recipe
from zoo.errors import CheckpointError
from zoo.lock import LOCK_NAME, RunLock
from zoo.records import (
    BEST,
    CHECKPOINTS,
    CURVES_NAME,
    METRICS_NAME,
    RECIPE_NAME,
    STATE_NAME,
    TENSORBOARD_NAME,
    append_event,
    truncate_metrics,
)
from zoo.run_recipe import fixed_at_resume, recipe_changes
from zoo.saved_model import CONFIG_NAME, WEIGHTS_NAME, step_of

logger = logging.getLogger(__name__)

STAGE_NAME = ".zoo-start"
# What a run writes at the top of its directory; a run that stopped early is replaced by these.
RUN_FILES = (RECIPE_NAME, METRICS_NAME, CHECKPOINTS, BEST, CURVES_NAME, TENSORBOARD_NAME)
# The temporaries of atomic_dir for the directories a training run writes.
_TEMPORARY = re.compile(r"\.zoo-(tmp|old)-(best|step_\d+)-[0-9a-f]{8}")


# ---------------------------------------------------------------------------------------------
# Checkpoint directories and atomic directory writes


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """The finished checkpoints of a run, oldest first (hidden temporaries are not finished)."""
    found = [p for p in (Path(run_dir) / CHECKPOINTS).glob("step_*") if p.is_dir()]
    return sorted((p for p in found if p.name[5:].isdigit()), key=lambda p: int(p.name[5:]))


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
        step = step_of(path)
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


def atomic_dir(target: Path, write: Callable[[Path], None]) -> None:
    """Fill a hidden temporary directory with ``write(tmp)``, then rename it to ``target``.

    A crash leaves the old ``target`` (or none), never half of a new one; the temporaries are
    named ``.zoo-tmp-NAME-TAG`` and ``.zoo-old-NAME-TAG`` so that a cleanup finds only its own.
    """
    tag = secrets.token_hex(4)
    tmp = target.with_name(f".zoo-tmp-{target.name}-{tag}")
    tmp.mkdir(parents=True)
    try:
        write(tmp)
    except DiskFullError as e:  # name the file where it was to go, not the temporary one
        shutil.rmtree(tmp, ignore_errors=True)
        path = target / e.path.relative_to(tmp) if e.path.is_relative_to(tmp) else e.path
        raise DiskFullError(path, e.needed, e.then) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.with_name(f".zoo-old-{target.name}-{tag}")
    if target.exists():
        os.rename(target, old)
    os.rename(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def clean_temporaries(run_dir: Path) -> None:
    """Remove the temporaries a killed run left; put back a ``best/`` caught mid-swap."""
    for parent in (run_dir, run_dir / CHECKPOINTS):
        found = [p for p in parent.glob(".zoo-*") if _TEMPORARY.fullmatch(p.name)]
        for path in sorted(found):
            kind, name = _TEMPORARY.fullmatch(path.name).groups()
            if kind == "old" and not (parent / name).exists():
                os.rename(path, parent / name)
            else:
                shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(run_dir / STAGE_NAME, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# One training process's hold on its run directory


class RunDir:
    """The run directory as one training process uses it: ``open``, then ``commit`` or ``abort``,
    then ``close``. Only the main process (``main``) writes; the others only look.

    Args:
        path: the run directory.
        resume: continue the run in ``path`` (or start it over when it has no checkpoint).
        main: whether this is the process that writes (rank 0).
    """

    def __init__(self, path: Path, resume: bool, main: bool = True) -> None:
        self.path, self.resume, self.main = Path(path), resume, main
        self.stage = self.path / STAGE_NAME
        self.lock = RunLock(self.path)
        self.changes: dict[str, tuple[Any, Any]] = {}
        self._created: list[Path] = []  # directories this start made, outermost first
        self._replacing: list[str] = []  # files of a run that stopped before its first checkpoint
        self._from_checkpoint = False

    def open(self, recipe: Recipe) -> Path | None:
        """Lock the directory and prepare the start; return the checkpoint to resume from.

        Raises:
            RunDirBusy: another process trains in ``path``.
            CheckpointError: ``resume`` and there is no run to resume.
            ConfigError: ``resume`` with a setting that cannot change
                (`zoo.run_recipe.FIXED_AT_RESUME`).
            ValueError: a new run, but ``path`` holds one with checkpoints.
            OSError: ``path`` cannot be created or written.
        """
        if not self.main:
            found = checkpoint_dirs(self.path)
            return found[-1] if self.resume and found else None
        self._make_dirs()
        try:
            self._lock()
            resume_from = self._check()
            self.changes = self._recipe_changes(recipe)
            clean_temporaries(self.path)
            self._stage(resume_from)
        except BaseException:
            self.abort()
            raise
        return resume_from

    def _make_dirs(self) -> None:
        missing, p = [], self.path
        while not p.exists() and not p.is_symlink() and p != p.parent:
            missing.append(p)
            p = p.parent
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _unwritable(self.path, e) from None
        self._created = missing[::-1]

    def _lock(self) -> None:
        try:
            self.lock.acquire()
        except OSError as e:  # RunDirBusy is a ValueError, not an OSError
            raise _unwritable(self.path, e) from None

    def _check(self) -> Path | None:
        """What the directory holds, and whether this start may go on there."""
        found = checkpoint_dirs(self.path)
        run_files = [n for n in RUN_FILES if (self.path / n).exists()]
        if self.resume:
            if found:
                self._from_checkpoint = True
                return found[-1]
            if not run_files:
                raise CheckpointError(
                    f"nothing to resume: {self.path} has no checkpoint in {CHECKPOINTS}/; "
                    "run without --resume to start a new run"
                )
            logger.warning("%s has no checkpoint: starting its run over from step 0", self.path)
        elif found:
            raise ValueError(
                f"{self.path} already holds a run ({CHECKPOINTS}/{found[-1].name}); pass --resume "
                "to continue it, or choose another --out"
            )
        elif run_files and self.lock.created:  # not marked as a zoo run: maybe the user's files
            raise ValueError(
                f"{self.path} already holds {run_files[0]} but no checkpoint; pass --resume to "
                "start that run over, or choose another --out"
            )
        elif run_files:
            logger.warning(
                "%s holds a run that stopped before its first checkpoint; this run replaces it",
                self.path,
            )
        self._replacing = run_files
        return None

    def _recipe_changes(self, recipe: Recipe) -> dict[str, tuple[Any, Any]]:
        """How ``recipe`` differs from the one the run recorded; refuse what cannot change."""
        recorded = self.path / RECIPE_NAME
        if not self.resume or not recorded.is_file():
            return {}
        changes = recipe_changes(load_recipe(recorded, upgrade=True), recipe)
        fixed = [k for k in changes if fixed_at_resume(k)]
        if fixed and self._from_checkpoint:
            old, new = changes[fixed[0]]
            raise ConfigError(
                f"cannot resume {self.path} with {fixed[0]} {new!r}: its recipe ({recorded}) "
                f"has {old!r} and its checkpoints hold that model; start a new run with another "
                "--out instead"
            )
        for key, (old, new) in changes.items():
            logger.warning("resuming with %s = %r (the run's recipe had %r)", key, new, old)
        return changes

    def _stage(self, resume_from: Path | None) -> None:
        """Make ``.zoo-start/``; a resumed run gets the files saved beside its checkpoint."""
        self.stage.mkdir()
        if resume_from is None:
            return
        for item in resume_from.iterdir():
            if item.name in (CONFIG_NAME, WEIGHTS_NAME, STATE_NAME) or item.name.startswith("."):
                continue
            copy = shutil.copytree if item.is_dir() else shutil.copy2
            copy(item, self.stage / item.name)

    def commit(self, recipe: Recipe, step: int, epoch: float) -> None:
        """Start-up succeeded: replace a run that stopped early, move the staged files in,
        record the recipe (and, for a resumed run, what changed in it, in metrics.jsonl)."""
        if not self.main:
            return
        for name in self._replacing:
            _remove(self.path / name)
        for item in sorted(self.stage.iterdir()):
            if (self.path / item.name).is_dir():
                shutil.rmtree(self.path / item.name)
            os.replace(item, self.path / item.name)
        self.stage.rmdir()
        if self.changes or not self._from_checkpoint or not (self.path / RECIPE_NAME).is_file():
            save_recipe(recipe, self.path / RECIPE_NAME)
        truncate_metrics(self.path, step)  # a resumed run trains the later steps again
        if self.changes and self._from_checkpoint:
            changed = {k: {"from": old, "to": new} for k, (old, new) in self.changes.items()}
            append_event(self.path, {"type": "config", "step": step, "epoch": epoch,
                                     "changed": changed})  # fmt: skip

    def abort(self) -> None:
        """Start-up failed: remove what this start wrote (nothing else), release the lock."""
        if not self.main:
            return
        shutil.rmtree(self.stage, ignore_errors=True)
        self.lock.release(remove=self.lock.created)
        for directory in reversed(self._created):
            with contextlib.suppress(OSError):  # only when empty: never lose a file
                directory.rmdir()

    def close(self) -> None:
        """The run ended (however): release the lock."""
        self.lock.release()


def _unwritable(path: Path, e: OSError) -> OSError:
    return OSError(f"cannot write to output directory {path} ({e.strerror or e})")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


__all__ = [
    "LOCK_NAME",
    "RUN_FILES",
    "STAGE_NAME",
    "RunDir",
    "atomic_dir",
    "checkpoint_dirs",
    "clean_temporaries",
    "keep_last",
]
