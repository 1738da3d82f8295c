"""Fixtures of the CLI tests: a tiny recipe file and a finished run of it."""


from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.zoo.cli.helpers import TINY
from zoo.cli import main


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.fixture
def run(recipe: Path, tmp_path: Path) -> Path:
    """A finished tiny run."""
    out = tmp_path / "run"
    assert main(["train", str(recipe), "--out", str(out)]) == 0
    return out
