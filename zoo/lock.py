"""An exclusive lock on a run directory, held for the life of one training process.

``RUN/.zoo.lock`` is locked with ``fcntl.flock`` and holds the holder's PID while it is held
(it is emptied on release). The kernel drops a flock when its process dies, however it dies,
so a lock left by a killed run never blocks the next start. The file itself stays: its presence
also marks the directory as one that a ``zoo train`` process has used.

This module imports only the standard library, so a test can load it in a bare subprocess.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # Windows has no flock: there the run directory goes unlocked
    fcntl = None

logger = logging.getLogger(__name__)

LOCK_NAME = ".zoo.lock"


class RunDirBusy(ValueError):
    """Another process holds the run directory; a ValueError, so the CLI shows one sentence."""


class RunLock:
    """``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``run_dir/.zoo.lock``.

    Args:
        run_dir: the run directory; it must exist.

    Attributes:
        created: whether ``acquire`` created the lock file (a failed start removes it again).
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.created = False
        self._file: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self) -> None:
        """Take the lock and write this process's PID into the lock file.

        Raises:
            RunDirBusy: another live process holds it (the message names it by PID).
            OSError: the lock file cannot be created.
        """
        while self._file is None:
            existed = self.path.exists()
            f = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115  (held until release)
            try:
                if fcntl is not None:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                f.close()
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                raise RunDirBusy(self._busy_message()) from None
            if not self._same_file(f):  # removed by a failed start between open and flock
                f.close()
                continue
            self._file, self.created = f, self.created or not existed
        self._file.truncate(0)
        self._file.write(f"{os.getpid()}\n")
        self._file.flush()

    def release(self, remove: bool = False) -> None:
        """Release the lock: empty the file (no holder), or ``remove`` it (a failed start)."""
        if self._file is None:
            return
        with contextlib.suppress(OSError):
            if remove:
                self.path.unlink()
            else:
                self._file.truncate(0)
        self._file.close()  # closing the last descriptor releases the flock
        self._file = None

    def _same_file(self, f: IO[str]) -> bool:
        try:
            return os.fstat(f.fileno()).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            return False

    def _busy_message(self) -> str:
        try:
            pid = self.path.read_text(encoding="utf-8").strip()
        except OSError:
            pid = ""
        holder = f"process {pid}" if pid.isdigit() else "another process"
        return (
            f"{self.run_dir} is in use by {holder}, which is training in it; wait for it to "
            "finish or stop it, or choose another --out"
        )

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
