"""Interleaved timing shared by the benchmark scripts (run as ``python benchmarks/NAME.py``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved(
    steps: dict[str, Callable[[], None]],
    repeats: int,
    iters: int = 1,
    warmup: int = 1,
    sync: Callable[[], None] = lambda: None,
) -> dict[str, float]:
    """Median seconds per call of each step, timing the contenders in turn so that drifts of
    the machine (clock, other load) hit all of them alike.

    Args:
        steps: name -> a call to time.
        repeats: timed rounds; the median over them is returned.
        iters: calls per round (their mean is one sample).
        warmup: untimed calls of each step first (allocation, compilation).
        sync: waits for queued device work (a CUDA synchronize) around each sample.
    """
    for step in steps.values():
        for _ in range(warmup):
            step()
    samples: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            sync()
            start = time.perf_counter()
            for _ in range(iters):
                step()
            sync()
            samples[name].append((time.perf_counter() - start) / iters)
    return {k: statistics.median(v) for k, v in samples.items()}
