"""The zoo command itself: exit status and one line on stderr from the real program."""


from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.zoo.cli.helpers import ROOT


def test_python_m_zoo_exit_code(tmp_path: Path) -> None:
    """The real command: exit code 2 and one line on stderr, no traceback."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "zoo", "train", str(tmp_path / "x.yaml")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: recipe file not found: {tmp_path}/x.yaml"]
