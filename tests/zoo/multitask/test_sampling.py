"""Task sampling schedules (zoo/multitask/sampling.py): pure functions of (seed, step) that
follow their weights."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.multitask.sampling import BLOCK, SCHEDULES, task_ids, task_probabilities

STEPS = [300, 200, 100]
SIZES = [900, 90, 9]


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_a_schedule_is_a_pure_function_of_seed_and_step(schedule: str) -> None:
    long = task_ids(schedule, 7, 3 * BLOCK + 5, STEPS, SIZES, 2.0)
    again = task_ids(schedule, 7, 3 * BLOCK + 5, STEPS, SIZES, 2.0)
    short = task_ids(schedule, 7, BLOCK + 3, STEPS, SIZES, 2.0)
    np.testing.assert_array_equal(long, again)
    np.testing.assert_array_equal(long[: BLOCK + 3], short)  # a step's task ignores the run length
    other = task_ids(schedule, 8, 3 * BLOCK + 5, STEPS, SIZES, 2.0)
    assert (other != long).any()
    assert long.dtype == np.int64 and set(long.tolist()) <= {0, 1, 2}


def test_weighted_gives_every_task_exactly_its_steps_in_each_cycle() -> None:
    ids = task_ids("weighted", 0, 3 * sum(STEPS), STEPS, SIZES)
    for cycle in np.split(ids, 3):
        assert np.bincount(cycle).tolist() == STEPS
    # shuffled, not blocked: the first cycle's first 60 steps hold every task
    assert set(ids[:60].tolist()) == {0, 1, 2}
    assert (ids[:600] != ids[600:1200]).any()  # each cycle has its own order


@pytest.mark.parametrize(
    ("schedule", "temperature", "expected"),
    [
        ("proportional", 1.0, np.array(SIZES) / sum(SIZES)),
        ("temperature", 2.0, np.sqrt(SIZES) / np.sqrt(SIZES).sum()),
        ("uniform", 1.0, np.full(3, 1 / 3)),
    ],
)
def test_random_schedules_follow_their_probabilities(schedule, temperature, expected) -> None:
    probs = task_probabilities(schedule, [None] * 3, SIZES, temperature)
    np.testing.assert_allclose(probs, expected)
    ids = task_ids(schedule, 3, 50_000, [None] * 3, SIZES, temperature)
    freq = np.bincount(ids, minlength=3) / len(ids)
    np.testing.assert_allclose(freq, expected, atol=0.01)  # 5 standard errors at most


def test_a_large_temperature_approaches_uniform() -> None:
    probs = task_probabilities("temperature", [None] * 3, SIZES, 1000.0)
    np.testing.assert_allclose(probs, np.full(3, 1 / 3), atol=0.01)


@pytest.mark.parametrize(
    ("schedule", "steps", "sizes", "message"),
    [
        ("weighted", [3, None], [1, 1], "weighted schedule needs steps >= 1 for every task"),
        ("proportional", [None, None], [4, 0], "at least one training batch"),
        ("fancy", [1, 1], [1, 1], "unknown sampling schedule 'fancy'"),
    ],
)
def test_bad_schedule_inputs(schedule, steps, sizes, message) -> None:
    with pytest.raises(ValueError, match=message):
        task_ids(schedule, 0, 10, steps, sizes)
