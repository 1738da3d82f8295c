"""Stopping a run cleanly on SIGINT (Ctrl-C) and SIGTERM (what schedulers and ``timeout`` send).

While training, the first signal asks the loop to stop: it finishes the current step, writes a
checkpoint and raises `Stopped`; a second signal stops at once (KeyboardInterrupt for SIGINT,
`Stopped` for SIGTERM), without a checkpoint. During start-up, when there is no step to finish,
the first signal stops at once. The exit status is the shell's: 128 + the signal's number
(130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(Exception):
    """The run was stopped by a signal; the message says where it stands.

    Attributes:
        exit_status: 128 + the signal's number, what a shell reports for a process it killed.
    """

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_status = 128 + signum


class StopRequest:
    """The signal handlers' state: ``signum`` is set by the first signal while training."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.training = False
        self.pid = os.getpid()  # DataLoader workers fork with these handlers: they ignore them

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        """The handler of SIGINT and SIGTERM (see the module docstring)."""
        if os.getpid() != self.pid:
            return
        name = signal.Signals(signum).name
        if not self.training:
            _raise_now(signum, f"{name} during start-up: stopped before training began")
        if self.signum is not None:
            _raise_now(signum, f"second {name}: stopped at once, without a checkpoint")
        self.signum = signum
        logger.warning(
            "%s: stopping after this step with a checkpoint (send it again to stop at once)", name
        )


def _raise_now(signum: int, message: str) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt(message)
    raise Stopped(message, signum)


@contextlib.contextmanager
def stop_on_signals(request: StopRequest) -> Iterator[StopRequest]:
    """Route SIGINT and SIGTERM to ``request`` inside the block; the old handlers after it.

    Outside the main thread (where Python cannot set handlers) nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    old: dict[int, Any] = {s: signal.signal(s, request.handle) for s in SIGNALS}
    try:
        yield request
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
