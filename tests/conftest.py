"""Suite-wide pytest options: ``--runslow`` also runs tests marked ``slow``."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_configure(config: pytest.Config) -> None:
    # pyproject's addopts deselects slow tests with -m 'not slow'; --runslow lifts only that.
    if config.getoption("runslow") and config.option.markexpr == "not slow":
        config.option.markexpr = ""
