"""Suite-wide pytest options: ``--runslow`` also runs tests marked ``slow``."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_configure(config: pytest.Config) -> None:
    # pyproject's addopts deselects slow tests with -m 'not slow'; --runslow lifts only that.
    if config.getoption("runslow") and config.option.markexpr == "not slow":
        config.option.markexpr = ""


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    """One intra-op thread per test process (override with ZOO_TEST_THREADS).

    The suite's models are tiny, so extra threads buy little, while on a shared 2-core machine
    spinning OpenMP threads made the foundation tests several times slower (docs/benchmarks.md)."""
    import os

    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("ZOO_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _no_plots(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Drawing curves costs about a second per run; only tests marked ``draws_curves`` do."""
    if request.node.get_closest_marker("draws_curves") is None:
        monkeypatch.setattr("zoo.engine.plot_curves", lambda *args, **kwargs: None)


@pytest.fixture
def deadline():
    """Fail a test that hangs instead of waiting for ever: SIGALRM raises ``TimeoutError`` in
    the test after 90 s (generous: the machine's 2 cores are shared)."""
    import signal

    def expire(signum, frame):
        raise TimeoutError("no progress within 90 s: the code under test hangs")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(90)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)
