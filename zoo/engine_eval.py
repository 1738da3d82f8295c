"""The Trainer's evaluation: rank 0 evaluates (the EMA weights when there are some) without
changing the training's random state, and keeps ``best/`` by the recipe's metric.

`EvaluationMixin` is one part of `zoo.engine.Trainer` and reads the attributes it sets up.
"""

from __future__ import annotations

import torch
from torch import nn

from zoo import distributed as dist
from zoo.config import ConfigError
from zoo.ema import unwrap_model
from zoo.engine_steps import autocast
from zoo.trainer_state import capture_rng_state, restore_rng_state


def is_better(value: float, best: float | None, mode: str) -> bool:
    if best is None:
        return True
    return value > best if mode == "max" else value < best



class EvaluationMixin:
    """Evaluation and best-checkpoint tracking of `zoo.engine.Trainer`."""

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
