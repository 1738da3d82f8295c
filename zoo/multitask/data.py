"""The data of a multitask run: the tasks' splits side by side, each task's endless stream of
training batches, and the batches of a multitask epoch.

Every task's training data is an endless stream: its own epochs (``task.batches`` with seed
``seed + k`` for its k-th epoch, as in a single-task run) one after another. The k-th step of
the run that trains task t takes the next ``grad_accum`` batches of t's stream. Where t's
stream stands at step s is the number of steps before s that trained t, which the sampling
schedule gives as a pure function of (seed, step): the batches of any step are found without
replaying the run, so resume and data parallelism hold as for one task.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch.distributed as torch_dist
from torch.utils.data import DataLoader, Dataset

from tasks.base import Task


class MultiDataset(Dataset):
    """The same split of several tasks as one dataset: index ``offset[t] + i`` is sample ``i``
    of task ``t``, returned as ``(t, sample)``.

    Args:
        parts: each task's dataset of this split, by section name, in section order.
    """

    def __init__(self, parts: dict[str, Dataset]) -> None:
        self.names, self.parts = list(parts), list(parts.values())
        sizes = [len(p) for p in self.parts]
        self.offsets = [0, *np.cumsum(sizes).tolist()]

    def __len__(self) -> int:
        return self.offsets[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """Global index -> (task index, index within the task's dataset)."""
        t = bisect.bisect_right(self.offsets, index) - 1
        return t, index - self.offsets[t]

    def __getitem__(self, index: int) -> tuple[int, Any]:
        t, i = self.locate(index)
        return t, self.parts[t][i]

    def __getitems__(self, indices: list[int]) -> list[tuple[int, Any]]:
        """One batch, all of one task; a task dataset's own ``__getitems__`` fetches it."""
        t, first = self.locate(indices[0])
        local = [i - self.offsets[t] for i in indices]
        if not all(0 <= i < len(self.parts[t]) for i in local):
            raise ValueError(f"a multitask batch mixes tasks (it starts in '{self.names[t]}')")
        part = self.parts[t]
        getitems = getattr(part, "__getitems__", None)
        samples = getitems(local) if getitems is not None else [part[i] for i in local]
        return [(t, s) for s in samples]


class MultiLoader:
    """The evaluation loaders of the tasks, by section name (what `MultiTask.evaluate` reads)."""

    def __init__(self, loaders: dict[str, DataLoader]) -> None:
        self.loaders = loaders

    def __len__(self) -> int:
        return sum(len(loader) for loader in self.loaders.values())


def min_batch_size() -> int:
    """The smallest batch every rank gets a share of: the world size under torchrun."""
    initialized = torch_dist.is_available() and torch_dist.is_initialized()
    return torch_dist.get_world_size() if initialized else 1


class TaskStreams:
    """Each task's endless stream of training batches (indices into its own dataset).

    Args:
        tasks: the tasks, in section order.
        datasets: each task's training dataset.
        batch_sizes: each task's batch size (its own unit: samples, or tokens for translation).
        seed: the run's seed; a task's k-th epoch is ``task.batches(..., seed + k)``.
        min_size: batches smaller than this are left out (under DDP, one sample per rank).
    """

    def __init__(
        self,
        tasks: Sequence[Task],
        datasets: Sequence[Dataset],
        batch_sizes: Sequence[int],
        seed: int,
        min_size: int = 1,
    ) -> None:
        self.tasks, self.datasets, self.batch_sizes = list(tasks), list(datasets), batch_sizes
        self.seed, self.min_size = seed, min_size
        self._epochs: dict[tuple[int, int], list[list[int]]] = {}
        self._ends: list[list[int]] = [[] for _ in self.tasks]

    def epoch(self, t: int, k: int) -> list[list[int]]:
        """The batches of task t's k-th epoch (the last few are cached)."""
        key = (t, k)
        if key not in self._epochs:
            found = self.tasks[t].batches(
                self.datasets[t], self.batch_sizes[t], True, self.seed + k
            )
            self._epochs[key] = [b for b in found if len(b) >= self.min_size]
            if not self._epochs[key]:
                raise ValueError(f"an epoch of task {t} has no batch of {self.min_size} samples")
            for old in [k2 for k2 in self._epochs if k2[0] == t and k2[1] < k - 1]:
                del self._epochs[old]
        return self._epochs[key]

    def sizes(self) -> list[int]:
        """Each task's batches in its first epoch."""
        return [len(self.epoch(t, 0)) for t in range(len(self.tasks))]

    def batch(self, t: int, position: int) -> list[int]:
        """Batch ``position`` (0-based) of task t's stream."""
        ends = self._ends[t]  # where each of t's epochs ends in its stream
        while not ends or ends[-1] <= position:
            ends.append((ends[-1] if ends else 0) + len(self.epoch(t, len(ends))))
        k = bisect.bisect_right(ends, position)
        return self.epoch(t, k)[position - (ends[k - 1] if k else 0)]

    def plan(
        self, ids: np.ndarray, start: int, stop: int, accum: int, offsets: Sequence[int]
    ) -> list[list[int]]:
        """The micro-batches of steps [start, stop), as global indices of a `MultiDataset`.

        Args:
            ids: the task index of every step from 0 to at least ``stop``.
            accum: micro-batches per step (``train.grad_accum``), all from the step's task.
            offsets: the `MultiDataset` offset of each task.
        """
        done = np.bincount(ids[:start], minlength=len(self.tasks))
        out = []
        for t in ids[start:stop].tolist():
            position = int(done[t]) * accum
            for j in range(accum):
                out.append([offsets[t] + i for i in self.batch(t, position + j)])
            done[t] += 1
        return out
