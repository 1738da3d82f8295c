"""The Trainer's step loop: epochs of deterministic batches, one optimizer step per group of
micro-batches (accumulation, mixed precision, clipping, EMA), the checks that stop a diverged
run, and what happens after each step (logging, evaluation, checkpoints, a requested stop).

`StepLoopMixin` is one part of `zoo.engine.Trainer` and reads the attributes it sets up.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import signal
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from tasks.base import iterate
from zoo import distributed as dist
from zoo.config import ConfigError
from zoo.errors import TrainingError
from zoo.interpret.gates import add_gate_penalty
from zoo.records import CHECKPOINTS, Meter
from zoo.signals import Stopped

logger = logging.getLogger("zoo.engine")

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

Batch = dict[str, Any]


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



class StepLoopMixin:
    """The step loop of `zoo.engine.Trainer`."""

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
            # DDP averages over ranks: scale each rank's mean loss to its share of the units
            logs = self._backward(batch, n * self.world.size / total, i == len(group) - 1)
            for key, value in logs.items():
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

    def _backward(self, batch: Batch, weight: float, sync: bool) -> dict[str, float]:
        """Forward and backward of one micro-batch, its loss times ``weight``; its logs and loss.

        ``sync``: the step's last micro-batch, on which DDP all-reduces the gradients.
        """
        with dist.no_sync(self.train_model, sync):
            with autocast(self.cfg.precision, self.device):
                loss, logs = self.task.loss(self.train_model, batch)
                # learned head gates (core.head_gate_l0): + lambda * E[open gates]
                loss, logs = add_gate_penalty(self.model, loss, logs)
            self.scaler.scale(loss * weight).backward()
        return {**logs, "loss": loss.detach().float().item()}

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
