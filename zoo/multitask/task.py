"""``MultiTask``: the Task contract over several tasks, so the one engine trains a multitask run.

Each section of the recipe builds the real task object of its type (``ClassificationTask``,
``TranslationTask``, ...) from its own single-task recipe: data, batching, loss, metrics and
saved files are theirs. This class only routes: a batch carries the name of its task, the loss
is that task's loss on that task's model (times the section's ``loss_weight``), evaluation runs
every task and prefixes its metrics with the section's name (``vision/top1``), and each task's
files live in a folder of its name (``RUN/translation/spm.model``).

The best checkpoint is chosen by ``score``, the mean over tasks of each task's metric relative
to its reference (the section's ``reference``, e.g. its single-task result)::

    s_t = m_t / ref_t        when a larger metric is better (top1, bleu)
    s_t = 2 - m_t / ref_t    when a smaller one is (cer, wer)

so 1.0 is every task at its reference and 1.02 is 2% better on average. Without a reference a
metric is taken relative to 100: every task reports its rates in percent (top-1, BLEU, CER, WER);
a metric of another scale (a loss) wants a reference.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from tasks.base import Batch, Task, get_task, register_task
from zoo.config import ConfigError
from zoo.ema import unwrap_model
from zoo.multitask import sampling
from zoo.multitask.data import MultiDataset, MultiLoader, TaskStreams, min_batch_size
from zoo.multitask.model import TaskView
from zoo.multitask.sections import Section, parse_sections, run_core

logger = logging.getLogger(__name__)

SCORE = "score"


@contextlib.contextmanager
def in_section(name: str) -> Iterator[None]:
    """Prefix a user error raised inside with the section it belongs to."""
    try:
        yield
    except (ValueError, TypeError, FileNotFoundError) as e:
        if str(e).startswith("task section "):
            raise
        message = f"task section '{name}': {e}"
        try:
            error = type(e)(message)
        except TypeError:  # an exception type with other constructor arguments
            error = ValueError(message)
        raise error from e


@register_task
class MultiTask(Task):
    """Several tasks on one core; see the module docstring. ``recipe.multitask`` holds the
    core, the sampling schedule and the task sections (zoo/multitask/sections.py)."""

    name: ClassVar[str] = "multitask"
    metric: ClassVar[str] = SCORE
    metric_mode: ClassVar[str] = "max"
    unit: ClassVar[str] = "units"  # each step's task's own unit (samples, or tokens)

    def __init__(self, recipe: Any, run_dir: str | Path | None = None) -> None:
        self.sections: list[Section] = parse_sections(recipe)
        self.tasks: dict[str, Task] = {}
        for s in self.sections:
            with in_section(s.name):
                self.tasks[s.name] = get_task(s.recipe.task)(s.recipe)
        super().__init__(recipe, run_dir)
        self.core = run_core(recipe)
        self._streams: TaskStreams | None = None
        self._train: MultiDataset | None = None

    @property
    def run_dir(self) -> Path | None:
        return self._run_dir

    @run_dir.setter
    def run_dir(self, value: Path | None) -> None:
        """Each task keeps its files in a folder of its name (the engine moves the run)."""
        self._run_dir = value
        for name, task in getattr(self, "tasks", {}).items():
            task.run_dir = None if value is None else Path(value) / name

    def section(self, name: str) -> Section:
        """The section called ``name``; ValueError listing the names if there is none."""
        for s in self.sections:
            if s.name == name:
                return s
        names = ", ".join(s.name for s in self.sections)
        raise ValueError(f"this multitask run has no task section '{name}'; it has {names}")

    def keep(self, name: str) -> MultiTask:
        """Only section ``name`` from now on (``zoo eval RUN --task NAME``); returns self."""
        kept = self.section(name)
        self.sections, self.tasks = [kept], {name: self.tasks[name]}
        self._streams = self._train = None
        return self

    # -- data ---------------------------------------------------------------------------------
    def prepare(self) -> dict[str, Any]:
        """Prepare every task; return the multitask model's settings: the core and, per
        section, its model and settings (the section's overrides over what its data implies)."""
        entries = []
        for s in self.sections:
            with in_section(s.name):
                implied = self.tasks[s.name].prepare()
            config = {**implied, **s.recipe.model.overrides}
            entries.append({"name": s.name, "model": s.recipe.model.name, "config": config})
        return {"core": self.core, "tasks": entries}

    def datasets(self) -> dict[str, Dataset]:
        """Each split that every task has, as a `MultiDataset` (``train`` and ``val`` always)."""
        splits = {}
        for s in self.sections:
            with in_section(s.name):
                splits[s.name] = self.tasks[s.name].datasets()
        common = [k for k in ("train", "val", "test") if all(k in v for v in splits.values())]
        out = {k: MultiDataset({n: v[k] for n, v in splits.items()}) for k in common}
        for name, parts in splits.items():
            for split in common:
                if len(parts[split]) == 0:
                    raise ValueError(f"task section '{name}': its {split} split is empty")
        self._train, self._streams = out["train"], None
        return out

    def collate(self, samples: list[tuple[int, Any]]) -> Batch:
        """``(task index, sample)`` pairs of one task -> that task's batch, plus ``task``."""
        t = samples[0][0]
        name = self.sections[t].name
        batch = self.tasks[name].collate([s for _, s in samples])
        return {**batch, "task": name}

    def streams(self) -> TaskStreams:
        """Each task's stream of training batches (built on first use)."""
        if self._train is None:
            raise RuntimeError("call datasets() before asking for training batches")
        if self._streams is None:
            names = [s.name for s in self.sections]
            self._streams = TaskStreams(
                [self.tasks[n] for n in names], self._train.parts,
                [s.recipe.train.batch_size for s in self.sections], self.seed, min_batch_size(),
            )  # fmt: skip
        return self._streams

    def epoch_steps(self) -> int:
        """Steps of a multitask epoch: as many as one pass over every task's training data."""
        accum = self.recipe.train.grad_accum
        return max(1, math.ceil(sum(self.streams().sizes()) / accum))

    def step_tasks(self, stop: int) -> Any:
        """The task index of every step in [0, stop) under the recipe's schedule."""
        mt = self.recipe.multitask
        steps = [s.steps for s in self.sections]
        try:
            return sampling.task_ids(
                mt.sampling, self.seed, stop, steps, self.streams().sizes(), mt.temperature
            )
        except ValueError as e:
            raise ConfigError(f"multitask.sampling '{mt.sampling}': {e}") from None

    def batches(
        self, dataset: Dataset, batch_size: int, shuffle: bool, epoch_seed: int
    ) -> list[list[int]]:
        """Shuffled: the micro-batches of multitask epoch ``epoch_seed - seed`` (the engine
        passes seed + epoch), ``grad_accum`` of the sampled task per step. In order: each
        task's evaluation batches in turn. ``batch_size`` is unused: each task has its own."""
        if not isinstance(dataset, MultiDataset):
            raise TypeError(f"a multitask run batches a MultiDataset, not {type(dataset).__name__}")
        if not shuffle:
            return [
                [dataset.offsets[t] + i for i in b]
                for t, s in enumerate(self.sections)
                for b in self.tasks[s.name].batches(dataset.parts[t], s.eval_batch_size, False, 0)
            ]
        epoch, steps = epoch_seed - self.seed, self.epoch_steps()
        ids = self.step_tasks((epoch + 1) * steps)
        accum = self.recipe.train.grad_accum
        return self.streams().plan(ids, epoch * steps, (epoch + 1) * steps, accum, dataset.offsets)

    def loader(self, dataset: Dataset, batch_size: int, num_workers: int = 0) -> MultiLoader:
        """Each task's evaluation loader over its part (its own evaluation batch size)."""
        if not isinstance(dataset, MultiDataset):
            raise TypeError(f"a multitask run evaluates a MultiDataset, not {type(dataset)}")
        return MultiLoader({
            s.name: self.tasks[s.name].loader(part, s.eval_batch_size, num_workers)
            for s, part in zip(self.sections, dataset.parts)
        })  # fmt: skip

    def count(self, batch: Batch) -> int:
        """The units of the batch's own task (samples, or target tokens for translation)."""
        return self.tasks[batch["task"]].count(_without_task(batch))

    def batch_task(self, batch: Batch) -> str | None:
        return batch["task"]

    # -- model --------------------------------------------------------------------------------
    def task_model(self, model: nn.Module, name: str) -> Any:
        """What task ``name``'s own code gets as its model: its single-task model inside the
        multitask model, or under DDP a `TaskView` that runs the wrapper."""
        if isinstance(model, DistributedDataParallel):
            return TaskView(model, model.module, name)
        return unwrap_model(model).tasks[name]

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        """The batch's task's loss on its model, times the section's ``loss_weight``; its logs
        (the engine groups them by task, see `batch_task`)."""
        name = batch["task"]
        task = self.tasks[name]
        loss, logs = task.loss(self.task_model(model, name), _without_task(batch))
        return loss * self.section(name).loss_weight, logs

    def lr_scales(self) -> Callable[[str], float] | None:
        """A section's own parameters (``tasks.<name>.*``) train at lr x its ``lr_mult``."""
        mults = {f"tasks.{s.name}.": s.lr_mult for s in self.sections}
        if all(m == 1.0 for m in mults.values()):
            return None
        return lambda name: next((m for p, m in mults.items() if name.startswith(p)), 1.0)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any) -> dict[str, float]:
        """Every task's metrics as ``<name>/<metric>``, and the combined ``score``."""
        if not isinstance(loader, MultiLoader):
            raise TypeError("a multitask model is evaluated with MultiTask.loader's loaders")
        inner = unwrap_model(model)
        metrics: dict[str, float] = {}
        for s in self.sections:
            found = self.tasks[s.name].evaluate(inner.tasks[s.name], loader.loaders[s.name])
            metrics.update({f"{s.name}/{k}": float(v) for k, v in found.items()})
        metrics[SCORE] = self.score(metrics)
        return metrics

    def task_metric(self, section: Section) -> tuple[str, str]:
        """The metric that stands for ``section`` in the score, and whether larger is better."""
        task = self.tasks[section.name]
        metric = section.recipe.eval.metric or task.metric
        mode = task.metric_mode if metric == task.metric else section.recipe.eval.mode
        return metric, mode

    def score(self, metrics: dict[str, float]) -> float:
        """The mean relative metric over tasks (see the module docstring)."""
        parts = []
        for s in self.sections:
            metric, mode = self.task_metric(s)
            key = f"{s.name}/{metric}"
            if key not in metrics:
                raise ConfigError(f"eval.metric '{metric}' of task section '{s.name}' is not "
                                  f"among its metrics")
            ref = s.reference if s.reference is not None else 100.0
            ratio = metrics[key] / ref
            parts.append(ratio if mode == "max" else 2.0 - ratio)
        return sum(parts) / len(parts)

    def write_report(self, directory: Path, split: str) -> list[str]:
        """Each task's report, named ``<split>_<name>``."""
        lines = []
        for s in self.sections:
            found = self.tasks[s.name].write_report(directory, f"{split}_{s.name}")
            lines += [f"[{s.name}] {line}" for line in found]
        return lines

    def predict(self, model: nn.Module, inputs: Sequence[str], **options: Any) -> list[str]:
        raise ValueError("a multitask model predicts one task at a time: name it with --task")

    # -- saved with the model -----------------------------------------------------------------
    def save_extra(self, directory: Path) -> dict[str, Any]:
        """Each task's files in ``directory/<name>/``; their metadata by name."""
        meta = {}
        for s in self.sections:
            folder = Path(directory) / s.name
            folder.mkdir(parents=True, exist_ok=True)
            meta[s.name] = self.tasks[s.name].save_extra(folder)
            if not any(folder.iterdir()):
                folder.rmdir()
        return {"sections": meta}

    def load_extra(self, directory: Path, meta: dict[str, Any]) -> None:
        saved = (meta or {}).get("sections", {})
        for s in self.sections:
            with in_section(s.name):
                self.tasks[s.name].load_extra(Path(directory) / s.name, saved.get(s.name) or {})

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers under spawn pickle the collate's task: leave the data behind
        return {**self.__dict__, "_train": None, "_streams": None}


def _without_task(batch: Batch) -> Batch:
    return {k: v for k, v in batch.items() if k != "task"}


def copy_task_files(model_dir: Path, name: str, out: Path) -> None:
    """Copy the files task ``name`` saved beside a multitask model into ``out``."""
    folder = Path(model_dir) / name
    if folder.is_dir():
        for item in folder.iterdir():
            copy = shutil.copytree if item.is_dir() else shutil.copy2
            copy(item, out / item.name)
