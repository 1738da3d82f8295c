"""The Trainer's checkpoints: writing ``checkpoints/step_N`` and ``best/``, and resuming from a
checkpoint exactly (weights, optimizer, scheduler, scaler, EMA, position and every RNG).

`CheckpointMixin` is one part of `zoo.engine.Trainer`; it reads the attributes the Trainer
sets up (``recipe``, ``cfg``, ``run_dir``, ``world``, ``task``, ``model``, ``optimizer``,
``scheduler``, ``scaler``, ``ema``, ``pos``, ``last_metrics``, ``_saved_step``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from zoo import distributed as dist
from zoo.ema import unwrap_model
from zoo.errors import CheckpointError, TrainingError
from zoo.records import BEST, CHECKPOINTS, STATE_NAME
from zoo.run_dir import atomic_dir, checkpoint_dirs, keep_last
from zoo.saved_model import (
    WEIGHTS_NAME,
    finite_weights_file,
    first_nonfinite,
    load_weights,
    read_model_config,
    save_pretrained,
)
from zoo.trainer_state import (
    capture_rng_state,
    load_trainer_state,
    restore_rng_state,
    save_trainer_state,
)

logger = logging.getLogger("zoo.engine")


@dataclass
class Position:
    """Where a run stands; saved in every checkpoint so that a resumed run goes on exactly."""

    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch: int = 0  # micro-batches of `epoch` already trained on
    best_metric: float | None = None
    best_step: int | None = None



def _count(value: Any) -> bool:
    return type(value) is int and value >= 0  # not bool, float or tensor


def read_position(state: dict[str, Any]) -> Position:
    """The `Position` saved in a trainer state, checked: counts are ints >= 0, the best
    metric a finite number (a tampered or damaged file must not send the loop astray).

    Raises:
        KeyError: a field is missing.
        ValueError: a field holds an impossible value (named).
    """
    pos = Position(**{k: state[k] for k in vars(Position())})
    for name in ("step", "epoch", "batch"):
        if not _count(getattr(pos, name)):
            raise ValueError(f"'{name}' is {getattr(pos, name)!r}, not a count >= 0")
    if pos.best_step is not None and not (_count(pos.best_step) and pos.best_step <= pos.step):
        raise ValueError(f"'best_step' is {pos.best_step!r}, not a step in [0, {pos.step}]")
    best = pos.best_metric
    if best is not None and (
        isinstance(best, bool) or not isinstance(best, int | float) or not math.isfinite(best)
    ):
        raise ValueError(f"'best_metric' is {best!r}, not a finite number")
    return pos



class CheckpointMixin:
    """Checkpoints, best/ and resume for `zoo.engine.Trainer`."""

    def _extra(self, directory: Path) -> dict[str, Any]:
        return {"task": self.recipe.task, "task_meta": self.task.save_extra(directory)}

    def _state(self, rngs: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            **vars(self.pos),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "rng": rngs,  # one per rank
            "last_metrics": self.last_metrics,
            "data": {"batch_size": self.cfg.batch_size, "grad_accum": self.cfg.grad_accum},
        }

    def save_checkpoint(self) -> None:
        """Write ``checkpoints/step_N`` (weights, config, trainer state), keep the last K."""
        if self._saved_step == self.pos.step:
            return
        self._check_weights()
        rngs = dist.all_gather(capture_rng_state(), self.world)
        if self.world.is_main:
            target = self.run_dir / CHECKPOINTS / f"step_{self.pos.step:08d}"

            def write(tmp: Path) -> None:
                save_pretrained(self.model, tmp, extra=self._extra(tmp))
                save_trainer_state(self._state(rngs), tmp / STATE_NAME)

            atomic_dir(target, write)
            keep_last(self.run_dir / CHECKPOINTS, "step_*", self.cfg.keep_last)
        self._saved_step = self.pos.step
        dist.barrier(self.world)

    def _save_best(self, model: nn.Module, metrics: dict[str, float]) -> None:
        self._check_weights({"weights": model})

        def write(tmp: Path) -> None:
            extra = {**self._extra(tmp), "step": self.pos.step, "metrics": metrics}
            save_pretrained(model, tmp, extra=extra)

        atomic_dir(self.run_dir / BEST, write)

    def _resume(self, ckpt: Path) -> None:
        """Load weights and trainer state from ``ckpt``; any misfit names the file."""
        config = read_model_config(ckpt)
        found = (config["model"], config.get("task"))
        if found != (self.recipe.model.name, self.recipe.task):
            raise CheckpointError(
                f"{ckpt / 'config.json'} holds model {found[0]} for task {found[1]}, but the "
                f"recipe trains {self.recipe.model.name} for {self.recipe.task}"
            )
        load_weights(self.model, ckpt)
        path = ckpt / STATE_NAME
        state = load_trainer_state(path)
        try:
            self._load_state(state)
        except KeyError as e:
            raise CheckpointError(f"trainer state file {path} lacks the entry {e}") from e
        except (ValueError, RuntimeError, TypeError, IndexError) as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(
                f"trainer state file {path} does not fit this run ({reason})"
            ) from e
        self._saved_step = self.pos.step
        logger.info("resumed from %s (step %d, epoch %d)", ckpt, self.pos.step, self.pos.epoch)

    def _load_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.pos = read_position(state)
        self.last_metrics = dict(state["last_metrics"])
        if state["data"] != {"batch_size": self.cfg.batch_size, "grad_accum": self.cfg.grad_accum}:
            logger.warning(
                "batch_size or grad_accum changed since the checkpoint: "
                "the resumed run will not see the same batches"
            )
        rngs = state["rng"]
        if not isinstance(rngs, list) or not rngs:
            raise ValueError("'rng' holds no random number generator state")
        restore_rng_state(rngs[self.world.rank % len(rngs)])

    def _last_good(self) -> str:
        """Which checkpoint a diverged run can go back to: the newest with finite weights."""
        for ckpt in reversed(checkpoint_dirs(self.run_dir)):
            if finite_weights_file(ckpt / WEIGHTS_NAME):
                return f"the last good checkpoint is {ckpt}"
        return "there is no good checkpoint"

    def _check_weights(self, models: dict[str, nn.Module | None] | None = None) -> None:
        """Stop before weights holding NaN or inf are evaluated or saved (a step can poison
        them while its loss was still finite). Every rank checks the same weights."""
        if models is None:
            models = {"weights": self.model, "EMA weights": self.ema.module if self.ema else None}
        for what, model in models.items():
            bad = None if model is None else first_nonfinite(unwrap_model(model).state_dict())
            if bad is not None:
                raise TrainingError(
                    f"the {what} hold NaN or inf (key '{bad}') after step {self.pos.step}; "
                    f"stopped without saving them, {self._last_good()}. Lower optim.lr, set "
                    f"train.clip_grad or use train.precision fp32"
                )
