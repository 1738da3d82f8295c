"""The training engine: one loop for every task.

A recipe names a task and a model; the task owns data, loss and metrics, the engine owns the
loop: AdamW with warmup and a schedule, gradient accumulation and clipping, fp32/bf16/fp16,
EMA, evaluation and best-checkpoint tracking, atomic checkpoints and exact resume, and
data parallelism under torchrun.

Exact resume: the batches of an epoch are a pure function of (seed, epoch) (``task.batches``),
so a checkpoint records (epoch, batches done) and a resumed run skips those batches; together
with the weights, optimizer, scheduler, scaler, EMA and every RNG state, a resumed CPU fp32 run
ends bit-identical to an uninterrupted one. Nothing outside a checkpoint may draw from the global
RNGs: the train DataLoader has its own generator and evaluation restores the RNG state after.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import math
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from tasks.base import get_task, iterate
from zoo import distributed as dist
from zoo.checkpoint import (
    WEIGHTS_NAME,
    CheckpointError,
    DiskFullError,
    capture_rng_state,
    finite_weights_file,
    first_nonfinite,
    load_trainer_state,
    load_weights,
    read_model_config,
    restore_rng_state,
    save_pretrained,
    save_trainer_state,
)
from zoo.checkpoint import keep_last as prune_checkpoints
from zoo.config import ConfigError, Recipe, check_recipe
from zoo.ema import ModelEMA, unwrap_model
from zoo.interpret.gates import add_gate_penalty
from zoo.optim import build_optimizer, build_scheduler, layer_decay_scales
from zoo.records import BEST, CHECKPOINTS, STATE_NAME, Meter, Records, plot_curves
from zoo.registry import create_model
from zoo.run_dir import RunDir, atomic_dir, checkpoint_dirs
from zoo.signals import Stopped, StopRequest, stop_on_signals
from zoo.transfer import append_events, freeze, frozen_batchnorms, init_from

logger = logging.getLogger(__name__)

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

Batch = dict[str, Any]


class TrainingError(ValueError):
    """The run cannot go on (a NaN or inf loss). A ValueError, so the CLI shows one sentence."""


@dataclass
class Position:
    """Where a run stands; saved in every checkpoint so that a resumed run goes on exactly."""

    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch: int = 0  # micro-batches of `epoch` already trained on
    best_metric: float | None = None
    best_step: int | None = None


# ---------------------------------------------------------------------------------------------
# Small pieces of the loop


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision the device cannot train in, naming the key to change."""
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"train.precision fp16 needs a CUDA device (it scales the loss with GradScaler), "
            f"but this run is on {device.type}; use bf16 or fp32"
        )
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("train.precision bf16 is not supported by this GPU; use fp16 or fp32")


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass (a no-op in fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_AMP_DTYPES[precision])


def grouped(batches: Iterator[Batch], size: int) -> Iterator[list[Batch]]:
    """Micro-batches in groups of ``size`` (one optimizer step each); the last may be short."""
    group: list[Batch] = []
    for batch in batches:
        group.append(batch)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def combine_scales(
    a: Callable[[str], float] | None, b: Callable[[str], float] | None
) -> Callable[[str], float] | None:
    """Two ``name -> LR scale`` hooks as one (their product); None when neither is given."""
    if a is None or b is None:
        return a or b
    return lambda name: a(name) * b(name)


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


def is_better(value: float, best: float | None, mode: str) -> bool:
    if best is None:
        return True
    return value > best if mode == "max" else value < best


# ---------------------------------------------------------------------------------------------
# The trainer


class Trainer:
    """Trains ``recipe`` into ``run_dir``; ``fit()`` runs the loop and returns the last metrics.

    The trainer holds the run directory's lock (``RUN/.zoo.lock``) from its construction until
    ``fit()`` returns; SIGINT or SIGTERM during ``fit()`` stops it after the current step with
    a checkpoint (`zoo.signals`).

    Args:
        recipe: the validated recipe.
        run_dir: the run directory (created; it must not already hold a run with a checkpoint
            unless ``resume``; a run that stopped before its first checkpoint is replaced).
        resume: continue from the newest checkpoint in ``run_dir`` (from step 0 when the run
            there has none); settings that differ from the run's recorded recipe are logged
            and recorded in metrics.jsonl, and those in `zoo.run_dir.FIXED_AT_RESUME` refused.
    """

    def __init__(self, recipe: Recipe, run_dir: str | os.PathLike, resume: bool = False) -> None:
        self.recipe, self.cfg, self.run_dir = recipe, recipe.train, Path(run_dir)
        check_recipe(recipe)  # everything the recipe alone can tell, before any file is written
        self.metric, self.mode = self._metric()
        self.world = dist.setup(self.cfg.device)
        self.device = self.world.device
        check_precision(self.cfg.precision, self.device)
        self.stop = StopRequest()  # SIGINT/SIGTERM: at once during start-up, after a step later
        self.run = RunDir(self.run_dir, resume, main=self.world.is_main)
        with stop_on_signals(self.stop):
            resume_from = self.run.open(recipe)  # locked until fit() ends
            try:
                self._start(resume_from)
            except BaseException:
                self.run.abort()  # a failed start leaves nothing behind
                raise

    def _start(self, resume_from: Path | None) -> None:
        dist.barrier(self.world)  # every rank has looked before rank 0 writes
        seed_everything(self.cfg.seed)
        # The task writes its files (a vocabulary) into the start-up folder: it never sees a
        # file that this run's lineage did not write; a resumed run's come from its checkpoint.
        self.task = get_task(self.recipe.task)(self.recipe, run_dir=self.run.stage)
        self.model = self._build_model()
        transfer_events = self._transfer(new_run=resume_from is None)
        self.splits = self._datasets()
        self.total_steps = self._total_steps()
        self._build_optimization()
        self.pos = Position()
        self.last_metrics: dict[str, float] = {}
        self._saved_step, self.epoch_size = -1, 1
        if resume_from is not None:
            self._resume(resume_from)
        elif self.world.rank:  # own dropout masks; rank 0 keeps those of a 1-process run
            seed_everything(self.cfg.seed + self.world.rank)
        # Under torchrun, DDP copies rank 0's weights to every rank and averages gradients
        # during backward; the task's loss calls the wrapper, so the sync cannot be skipped.
        self.train_model = dist.wrap_ddp(self.model, self.world)
        dist.barrier(self.world)  # every rank has read the staged files before they move
        per_epoch = len(self._epoch_batches(self.pos.epoch)) if self.run.changes else 1
        self.run.commit(self.recipe, self.pos.step, self.pos.epoch + self.pos.batch / per_epoch)
        self.task.run_dir = self.run_dir
        if self.world.is_main:  # what init_from loaded and what is frozen, at step 0
            append_events(self.run_dir, transfer_events)

    # -- setup ----------------------------------------------------------------------------------
    def _build_model(self) -> nn.Module:
        """``task.prepare()`` (rank 0 first: it may write files), then the model."""
        if not self.world.is_main:
            dist.barrier(self.world)  # wait for rank 0's prepare()
        overrides = self.task.prepare()
        if self.world.is_main:
            dist.barrier(self.world)
        name, pretrained = self.recipe.model.name, self.recipe.model.pretrained
        try:
            model = create_model(
                name, pretrained=pretrained, **{**overrides, **self.recipe.model.overrides}
            )
        except CheckpointError as e:  # say which setting named the missing or broken model
            raise CheckpointError(f"model.pretrained: {e}") from e
        if pretrained is not None:
            logger.info("model %s: weights from %s", name, pretrained)
        n = sum(p.numel() for p in model.parameters())
        logger.info("model %s: %.2fM parameters, on %s", name, n / 1e6, self.device)
        return model.to(self.device)

    def _transfer(self, new_run: bool) -> list[dict[str, Any]]:
        """``model.init_from`` (a new run only: a resumed one takes every weight from its
        checkpoint), then ``train.freeze``: before the optimizer is built and before DDP wraps
        the model, which buckets (and all-reduces) only parameters that require a gradient.

        Returns:
            The summary events for metrics.jsonl (none on resume: they are there already).
        """
        events = []
        source = self.recipe.model.init_from
        if source is not None and new_run:
            try:
                events.append(init_from(self.model, source.path, source.parts))
            except CheckpointError as e:
                raise CheckpointError(f"model.init_from: {e}") from None
            except ValueError as e:
                raise ConfigError(f"model.init_from: {e}") from None
        if self.cfg.freeze is not None:
            try:
                events.append(freeze(self.model, self.cfg.freeze))
            except ValueError as e:
                raise ConfigError(f"train.{e}") from None
        self.held_in_eval = frozen_batchnorms(self.model)
        return events if new_run else []

    def _datasets(self) -> dict[str, Any]:
        splits = self.task.datasets()
        if self.recipe.eval.split not in splits:
            raise ConfigError(
                f"eval.split '{self.recipe.eval.split}' is not a split of this data (it has "
                f"{', '.join(sorted(splits))})"
            )
        for split in ("train", self.recipe.eval.split):
            if len(splits[split]) == 0:
                raise ValueError(f"the {split} split of data '{self.recipe.data.dataset}' is empty")
        return splits

    def _metric(self) -> tuple[str, str]:
        """The metric that chooses ``best/`` and its mode; an eval.metric the task does not
        compute is refused here, not after the first evaluation."""
        task = get_task(self.recipe.task)
        metric = self.recipe.eval.metric or task.metric
        if task.metrics and metric not in task.metrics:
            close = difflib.get_close_matches(metric, task.metrics, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"eval.metric '{metric}' is not among the {task.name} task's metrics "
                f"({', '.join(task.metrics)}){hint}"
            )
        mode = task.metric_mode if metric == task.metric else self.recipe.eval.mode
        return metric, mode

    def _total_steps(self) -> int:
        per_epoch = math.ceil(len(self._epoch_batches(0)) / self.cfg.grad_accum)
        if per_epoch == 0:
            raise ValueError(
                f"the train split ({len(self.splits['train'])} samples) gives no batch for "
                f"{self.world.size} processes; use more data or fewer processes"
            )
        bounds = [self.cfg.max_steps or math.inf, (self.cfg.epochs or math.inf) * per_epoch]
        return int(min(bounds))

    def _build_optimization(self) -> None:
        o, s = self.recipe.optim, self.recipe.schedule
        scales = None
        if o.layer_decay is not None:
            try:
                scales = layer_decay_scales(self.model, o.layer_decay)  # not wrapped yet
            except ValueError as err:
                raise ConfigError(f"optim.layer_decay: {err}") from None
        scales = combine_scales(scales, self.task.lr_scales())  # a multitask run's lr_mult
        self.optimizer = build_optimizer(
            self.model, o.lr, o.weight_decay, o.betas, o.eps, lr_scale_fn=scales
        )
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        try:  # the schema bounds every field; what is left is how they fit together
            self.scheduler = build_scheduler(
                self.optimizer,
                s.name,
                self.total_steps,
                s.warmup_steps,
                s.min_lr_ratio,
                s.cooldown_steps,
            )
        except ValueError as err:
            raise ConfigError(f"schedule.{err}") from None
        fp16 = self.cfg.precision == "fp16"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=fp16)
        self.ema = ModelEMA(self.model, self.cfg.ema_decay) if self.cfg.ema_decay else None

    # -- checkpoints ----------------------------------------------------------------------------
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
            prune_checkpoints(self.run_dir / CHECKPOINTS, "step_*", self.cfg.keep_last)
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

    # -- the loop -------------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Train until ``max_steps`` or ``epochs``; return the last evaluation metrics.

        Raises:
            Stopped: SIGINT or SIGTERM; the run stopped after a step and wrote a checkpoint.
            DiskFullError: a checkpoint, best/ or metrics.jsonl could not be written; the last
                checkpoint is intact.
        """
        try:
            self.records = Records(
                self.run_dir,
                self.total_steps,
                self.pos.step,
                self.task.unit,
                self.cfg.log_every,
                enabled=self.world.is_main,
            )
            with stop_on_signals(self.stop):
                self.stop.training = True
                self._loop()
        except DiskFullError as e:
            if e.then:
                raise
            raise DiskFullError(e.path, e.needed, self._resume_hint()) from e
        finally:
            self.run.close()
        if self.world.is_main:
            plot_curves(self.run_dir, self.metric)
        dist.teardown(self.world)
        best = {f"best_{self.metric}": self.pos.best_metric, "best_step": self.pos.best_step}
        return {**self.last_metrics, **best}

    def _loop(self) -> None:
        try:
            if self._done():
                logger.info(
                    "the run in %s already finished at step %d", self.run_dir, self.pos.step
                )
            self.meter = Meter(self.task.unit)
            while not self._done():
                self._train_epoch()
        finally:
            self.records.close()

    def _resume_hint(self) -> str:
        """What to do once space is freed: resume from the last checkpoint (or start over)."""
        last = checkpoint_dirs(self.run_dir)
        if last:
            return f"the last checkpoint {last[-1]} is intact: free some space, then use --resume"
        return "there is no checkpoint yet: free some space, then start again (or use --resume)"

    def _done(self) -> bool:
        over_steps = self.cfg.max_steps is not None and self.pos.step >= self.cfg.max_steps
        over_epochs = self.cfg.epochs is not None and self.pos.epoch >= self.cfg.epochs
        return over_steps or over_epochs

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        """The global batches of an epoch; under DDP, those too small to share are dropped."""
        seed = self.cfg.seed + epoch
        batches = self.task.batches(self.splits["train"], self.cfg.batch_size, True, seed)
        return [b for b in batches if len(b) >= self.world.size]

    def _train_epoch(self) -> None:
        batches = self._epoch_batches(self.pos.epoch)
        if not batches:  # with nothing to train on, the loop would never end
            raise TrainingError(
                f"epoch {self.pos.epoch} of the train split gives no batch for "
                f"{self.world.size} processes; use more data or fewer processes"
            )
        if self.pos.batch >= len(batches):
            self._skip_to_next_epoch(len(batches))
            batches = self._epoch_batches(self.pos.epoch)
        self.epoch_size = len(batches)
        loader = DataLoader(
            self.splits["train"],
            batch_sampler=[dist.share(b, self.world) for b in batches[self.pos.batch :]],
            collate_fn=self.task.collate,
            num_workers=self.recipe.data.num_workers,
            # Its own generator: creating an iterator must not draw from the global RNG.
            generator=torch.Generator().manual_seed(self.cfg.seed + self.pos.epoch),
        )
        for group in grouped(iterate(loader, self.device), self.cfg.grad_accum):
            self._train_step(group)
            self._after_step()
            if self._done():
                return

    def _skip_to_next_epoch(self, epoch_size: int) -> None:
        """A resumed position past the end of its epoch (a larger ``train.batch_size`` makes
        epochs shorter): the epoch is over, so training goes on with the next one."""
        logger.warning(
            "the checkpoint's position (%d batches of epoch %d done) is past the end of this "
            "epoch's %d batches (train.batch_size, grad_accum or the data changed): starting "
            "epoch %d",
            self.pos.batch,
            self.pos.epoch,
            epoch_size,
            self.pos.epoch + 1,
        )
        self.pos.epoch, self.pos.batch = self.pos.epoch + 1, 0

    def _train_step(self, group: list[Batch]) -> None:
        """One optimizer step over a group of micro-batches (this rank's shares)."""
        start = time.perf_counter()
        self.model.train()
        for module in self.held_in_eval:  # frozen BatchNorms keep their running statistics
            module.eval()
        counts = [float(self.task.count(b)) for b in group]
        # Weight each micro-batch's mean loss by its share of the global step's units, so the
        # gradient is that of the mean over the whole global batch (ranks are then averaged).
        total = dist.all_reduce_sum(torch.tensor(sum(counts)), self.world).item()
        sums: dict[str, float] = {}
        for i, (batch, n) in enumerate(zip(group, counts)):
            # DDP all-reduces gradients on the last micro-batch of the step only
            sync = i == len(group) - 1
            with dist.no_sync(self.train_model, sync):
                with autocast(self.cfg.precision, self.device):
                    loss, logs = self.task.loss(self.train_model, batch)
                    # learned head gates (core.head_gate_l0): + lambda * E[open gates]
                    loss, logs = add_gate_penalty(self.model, loss, logs)
                # DDP averages over ranks: scale each rank's mean loss to its share of the units
                self.scaler.scale(loss * (n * self.world.size / total)).backward()
            for key, value in {**logs, "loss": loss.detach().float().item()}.items():
                sums[key] = sums.get(key, 0.0) + float(value) * n
        self._check_finite(sums, total)
        lr = self.optimizer.param_groups[0]["lr"]
        grad_norm = self._optimizer_step()
        self.pos.step += 1
        self.pos.batch += len(group)
        if self.pos.batch >= self.epoch_size:  # the epoch is over, counted before any saving
            self.pos.epoch, self.pos.batch = self.pos.epoch + 1, 0
        seconds = time.perf_counter() - start
        self.meter.add(sums, total, lr, grad_norm, seconds, task=self.task.batch_task(group[0]))

    def _check_finite(self, sums: dict[str, float], total: float) -> None:
        keys = sorted(sums)  # the same order on every rank
        values = dist.all_reduce_sum(
            torch.tensor([sums[k] for k in keys], dtype=torch.float64), self.world
        )
        sums.update(zip(keys, values.tolist()))
        loss = sums["loss"] / total
        if not math.isfinite(loss):
            raise TrainingError(
                f"loss is {loss} at step {self.pos.step + 1} (epoch {self.pos.epoch}); stopped, "
                f"{self._last_good()}. Lower optim.lr, set train.clip_grad or use "
                f"train.precision fp32"
            )

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

    def _optimizer_step(self) -> float:
        if self.scaler.is_enabled():
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not scaled ones
        clip = self.cfg.clip_grad or math.inf  # inf: only measure the norm
        grad_norm = nn.utils.clip_grad_norm_(self.params, clip).item()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return grad_norm

    # -- logging, evaluation, saving --------------------------------------------------------------
    def _epoch_float(self) -> float:
        return self.pos.epoch + self.pos.batch / max(1, self.epoch_size)

    def _after_step(self) -> None:
        self.records.step_done()
        done = self._done()
        if not done and self._stop_requested():  # at the last step, finishing is as quick
            self._stop()
        if self.pos.step % self.cfg.log_every == 0 or done:
            self._log_train()
        evaluating = self.pos.step % self.cfg.eval_every == 0 or done
        saving = self.pos.step % self.cfg.checkpoint_every == 0 or done
        if evaluating or saving:
            self._check_weights()  # on every rank, before rank 0 alone evaluates
        if evaluating:
            self.evaluate()
        if saving:
            self.save_checkpoint()

    def _stop_requested(self) -> bool:
        """Whether a signal asked to stop; every rank stops at the same step."""
        asked = float(self.stop.requested)
        if self.world.distributed:
            asked = dist.all_reduce_sum(torch.tensor([asked]), self.world).item()
        return asked > 0

    def _stop(self) -> None:
        """Log the steps since the last log line, write a checkpoint of this step, then raise
        `Stopped` saying where it is."""
        self._log_train()
        self.save_checkpoint()
        signum = self.stop.signum or signal.SIGTERM  # another rank's signal: torchrun's SIGTERM
        ckpt = self.run_dir / CHECKPOINTS / f"step_{self.pos.step:08d}"
        message = (
            f"{signal.Signals(signum).name} at step {self.pos.step}: stopped after writing the "
            f"checkpoint {ckpt}; continue with --resume"
        )
        raise Stopped(message, signum)

    def _log_train(self) -> None:
        if self.meter.steps:
            self.records.train(self.pos.step, self._epoch_float(), self.meter.averages())
            self.meter = Meter(self.task.unit)

    def evaluate(self) -> dict[str, float] | None:
        """Evaluate on rank 0 (the EMA weights when there are some); track the best checkpoint.

        The global RNG state is restored afterwards, so evaluating never changes training.
        """
        metrics = None
        if self.world.is_main:
            model = self.ema.module if self.ema is not None else unwrap_model(self.model)
            rng = capture_rng_state()
            metrics = self._evaluate_model(model)
            restore_rng_state(rng)
            self.last_metrics = metrics
            self.records.eval(self.pos.step, self._epoch_float(), self.recipe.eval.split, metrics)
            if is_better(metrics[self.metric], self.pos.best_metric, self.mode):
                self.pos.best_metric, self.pos.best_step = metrics[self.metric], self.pos.step
                self._save_best(model, metrics)
        dist.barrier(self.world)
        return metrics

    def _evaluate_model(self, model: nn.Module) -> dict[str, float]:
        split = self.splits[self.recipe.eval.split]
        batch_size = self.recipe.eval.batch_size or self.cfg.batch_size
        loader = self.task.loader(split, batch_size, self.recipe.data.num_workers)
        was_training = model.training
        model.eval()
        with torch.no_grad(), autocast(self.cfg.precision, self.device):
            metrics = {k: float(v) for k, v in self.task.evaluate(model, loader).items()}
        model.train(was_training)
        if self.metric not in metrics:
            raise ConfigError(
                f"eval.metric '{self.metric}' is not among the task's metrics "
                f"({', '.join(sorted(metrics))})"
            )
        return metrics


def train(recipe: Recipe, run_dir: str | os.PathLike, resume: bool = False) -> dict[str, float]:
    """Train ``recipe`` into ``run_dir`` (see `Trainer`); return the last metrics and the best."""
    return Trainer(recipe, run_dir, resume=resume).fit()
