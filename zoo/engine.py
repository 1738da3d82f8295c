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

`Trainer` sets a run up (task, model, data, optimizer; this module) and is put together from
three parts, one module each: `zoo.engine_steps` (the step loop), `zoo.engine_eval`
(evaluation and ``best/``) and `zoo.engine_checkpoints` (checkpoints and resume).
"""

from __future__ import annotations

import difflib
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

import tasks  # noqa: F401  (registers the tasks that get_task finds)
from tasks.base import get_task
from zoo import distributed as dist
from zoo.atomic import DiskFullError
from zoo.config import ConfigError, Recipe, check_recipe
from zoo.ema import ModelEMA
from zoo.engine_checkpoints import CheckpointMixin, Position, read_position
from zoo.engine_eval import EvaluationMixin, is_better
from zoo.engine_steps import StepLoopMixin, autocast, check_precision, grouped, seed_everything
from zoo.errors import CheckpointError, TrainingError
from zoo.optim import build_optimizer, build_scheduler, combine_scales, layer_decay_scales
from zoo.pretrained import create_model
from zoo.records import Meter, Records, plot_curves
from zoo.run_dir import RunDir, checkpoint_dirs
from zoo.signals import StopRequest, stop_on_signals
from zoo.transfer import append_events, freeze, frozen_batchnorms, init_from

logger = logging.getLogger(__name__)

__all__ = [
    "Position",
    "Trainer",
    "TrainingError",
    "autocast",
    "check_precision",
    "grouped",
    "is_better",
    "read_position",
    "seed_everything",
    "train",
]


class Trainer(CheckpointMixin, StepLoopMixin, EvaluationMixin):
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
            and recorded in metrics.jsonl, and those in `zoo.run_recipe.FIXED_AT_RESUME` refused.
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


def train(recipe: Recipe, run_dir: str | os.PathLike, resume: bool = False) -> dict[str, float]:
    """Train ``recipe`` into ``run_dir`` (see `Trainer`); return the last metrics and the best."""
    return Trainer(recipe, run_dir, resume=resume).fit()
