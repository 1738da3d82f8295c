"""The one tiny three-task run that the tests which only read it share."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.zoo.multitask.helpers import tiny_multi
from zoo.config import recipe_from_dict
from zoo.engine import train


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    """One tiny three-task run (10 steps), shared by the tests that only read it."""
    run = tmp_path_factory.mktemp("multi") / "run"
    metrics = train(recipe_from_dict(tiny_multi()), run)
    return run, metrics
