"""Checks on the files a user names (images, audio, text): one sentence for each way a path
can fail to be a readable file, so that a directory or a device is not called missing."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def check_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a `Path`, when it names something a reader can read to its end: a regular
    file, or a pipe (``--input <(cmd)``), also through links.

    Args:
        path: the path the user gave.
        what: what it should be, for the message ("image", "audio file", "text file").

    Raises:
        FileNotFoundError: nothing is there (``"audio file x.wav does not exist"``).
        ValueError: a directory, or a device such as ``/dev/zero`` that never ends.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} does not exist") from None
    except OSError as e:  # a link loop, a path through a file, no permission
        raise OSError(f"{what} {path} cannot be read ({e.strerror or e})") from None
    if stat.S_ISDIR(mode):
        raise ValueError(f"{what} {path} is a directory, not a file")
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        raise ValueError(f"{what} {path} is a device, not a file")
    return path
