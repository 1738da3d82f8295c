"""Task sampling: which task trains at each optimizer step of a multitask run.

Every schedule is a pure function of (seed, step): the task of step ``s`` never depends on what
ran before, so a resumed run and every rank of a data-parallel run agree on it without saving
or exchanging anything.

- ``weighted`` (PolyViT's best schedule, Likhosherstov et al. 2022): each cycle of
  ``sum(steps)`` steps holds exactly ``steps[t]`` steps of task ``t`` in a seeded random order
  (sampling without replacement), so a run of ``sum(steps)`` steps gives every task exactly its
  own number of steps.
- ``proportional``: each step draws task ``t`` with probability ``size[t] / sum(size)``.
- ``temperature``: probability proportional to ``size[t] ** (1 / T)`` (T = 1 is proportional,
  a large T approaches uniform; Arivazhagan et al. 2019, mT5).
- ``uniform``: every task equally likely.

The draws come in blocks of `BLOCK` steps, each from its own generator seeded by (seed, block),
so the task of any step is found without drawing those of every step before it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SCHEDULES = ("weighted", "proportional", "temperature", "uniform")
BLOCK = 4096  # steps drawn per generator of the i.i.d. schedules
_SALT = 0x6D756C7469  # keeps these streams apart from anything else seeded with the run's seed


def task_probabilities(
    schedule: str, steps: Sequence[int | None], sizes: Sequence[int], temperature: float = 1.0
) -> np.ndarray:
    """The probability of each task at one step under ``schedule``.

    Args:
        schedule: one of `SCHEDULES`.
        steps: each task's steps (``weighted`` only; None elsewhere is fine).
        sizes: each task's size (batches in one epoch of its training data).
        temperature: the ``temperature`` schedule's T (> 0).

    Raises:
        ValueError: an unknown schedule, a missing or non-positive step count or size.
    """
    if schedule == "weighted":
        if any(s is None or s < 1 for s in steps):
            raise ValueError("the weighted schedule needs steps >= 1 for every task")
        weights = np.asarray(steps, dtype=np.float64)
    elif schedule in ("proportional", "temperature"):
        if any(n < 1 for n in sizes):
            raise ValueError(f"every task needs at least one training batch, got sizes {sizes}")
        power = 1.0 if schedule == "proportional" else 1.0 / temperature
        weights = np.asarray(sizes, dtype=np.float64) ** power
    elif schedule == "uniform":
        weights = np.ones(len(sizes))
    else:
        raise ValueError(f"unknown sampling schedule '{schedule}'; expected one of {SCHEDULES}")
    return weights / weights.sum()


def _rng(seed: int, block: int, kind: int) -> np.random.Generator:
    # SeedSequence takes non-negative integers; the mask keeps a negative seed distinct
    return np.random.default_rng([seed & (2**64 - 1), block, kind, _SALT])


def _weighted_ids(steps: Sequence[int], seed: int, stop: int) -> np.ndarray:
    """Task ids of steps [0, stop): seeded permutations of the multiset of ``steps``."""
    cycle = np.repeat(np.arange(len(steps)), steps)
    blocks = [_rng(seed, b, 0).permutation(cycle) for b in range(-(-stop // len(cycle)))]
    return np.concatenate(blocks)[:stop] if blocks else np.zeros(0, dtype=np.int64)


def _iid_ids(probs: np.ndarray, seed: int, stop: int) -> np.ndarray:
    """Task ids of steps [0, stop), each drawn independently with ``probs``."""
    edges = np.cumsum(probs)
    draws = [_rng(seed, b, 1).random(BLOCK) for b in range(-(-stop // BLOCK))]
    u = np.concatenate(draws)[:stop] if draws else np.zeros(0)
    return np.minimum(np.searchsorted(edges, u, side="right"), len(probs) - 1)


def task_ids(
    schedule: str,
    seed: int,
    stop: int,
    steps: Sequence[int | None],
    sizes: Sequence[int],
    temperature: float = 1.0,
) -> np.ndarray:
    """The task index (into the sections, in order) of every optimizer step in ``[0, stop)``.

    Args:
        schedule: one of `SCHEDULES`.
        seed: the run's seed.
        stop: the number of steps.
        steps: each task's steps (``weighted``).
        sizes: each task's batches per epoch (``proportional``, ``temperature``).
        temperature: the ``temperature`` schedule's T.

    Returns:
        (stop,) int64 task indices.
    """
    probs = task_probabilities(schedule, steps, sizes, temperature)
    if schedule == "weighted":
        return _weighted_ids([int(s) for s in steps], seed, stop).astype(np.int64)
    return _iid_ids(probs, seed, stop).astype(np.int64)
