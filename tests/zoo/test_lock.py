"""The run directory lock: one holder at a time, named by PID; a killed holder blocks nobody."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.lock import LOCK_NAME, RunDirBusy, RunLock

LOCK_PY = Path(__file__).resolve().parents[2] / "zoo" / "lock.py"

# Takes the lock with zoo/lock.py alone (no torch to import: fast), says so, then waits.
HOLDER = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("lock", sys.argv[1])
lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lock)
held = lock.RunLock(sys.argv[2])
held.acquire()
print("locked", flush=True)
time.sleep(120)
"""


def test_the_holder_writes_its_pid_and_empties_the_file_on_release(tmp_path: Path) -> None:
    lock = RunLock(tmp_path)
    lock.acquire()
    assert lock.created and (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\n"
    lock.release()
    assert (tmp_path / LOCK_NAME).read_text() == ""
    again = RunLock(tmp_path)
    again.acquire()
    assert not again.created
    again.release(remove=True)
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_second_holder_is_refused_naming_the_directory_and_the_first(tmp_path: Path) -> None:
    with RunLock(tmp_path):
        with pytest.raises(RunDirBusy, match=f"{tmp_path} is in use by process {os.getpid()}"):
            RunLock(tmp_path).acquire()
    with RunLock(tmp_path):  # free again
        pass


def test_a_lock_of_a_killed_process_does_not_block(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(LOCK_PY), str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirBusy, match=f"process {holder.pid}"):
            RunLock(tmp_path).acquire()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert (tmp_path / LOCK_NAME).read_text().strip() == str(holder.pid)  # stale, yet free
    with RunLock(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\n"
