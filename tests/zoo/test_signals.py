"""SIGINT and SIGTERM: at once during start-up; after the step, then at once, while training."""

from __future__ import annotations

import os
import signal

import pytest

from zoo.signals import Stopped, StopRequest, stop_on_signals


def test_during_start_up_a_signal_stops_at_once() -> None:
    request = StopRequest()
    with stop_on_signals(request):
        with pytest.raises(Stopped, match="SIGTERM during start-up") as stopped:
            os.kill(os.getpid(), signal.SIGTERM)
        assert stopped.value.exit_status == 143
        with pytest.raises(KeyboardInterrupt, match="SIGINT during start-up"):
            os.kill(os.getpid(), signal.SIGINT)


def test_while_training_the_first_signal_asks_and_the_second_stops_at_once() -> None:
    for signum, second in ((signal.SIGTERM, Stopped), (signal.SIGINT, KeyboardInterrupt)):
        request = StopRequest()
        request.training = True
        with stop_on_signals(request):
            os.kill(os.getpid(), signum)
            assert request.requested and request.signum == signum
            with pytest.raises(second, match="second .*at once, without a checkpoint"):
                os.kill(os.getpid(), signum)


def test_the_old_handlers_come_back() -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with stop_on_signals(StopRequest()):
        assert signal.getsignal(signal.SIGTERM) != before[1]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
