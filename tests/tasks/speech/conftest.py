"""Fixtures of the speech task tests: a miniature FSDD folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.speech.tones import tone_pair
from tests.tasks.speech.helpers import write_wav


@pytest.fixture(scope="module")
def fsdd_root(tmp_path_factory) -> Path:
    """A miniature FSDD folder: 3 speakers x 10 digits x 6 recordings, 8 kHz tone clips."""
    root = tmp_path_factory.mktemp("fsdd")
    for spk in ("ann", "bob", "cid"):
        for d in range(10):
            for i in range(6):
                write_wav(root / "recordings" / f"{d}_{spk}_{i}.wav", 0.15 + 0.01 * i, 8000,
                          freq=tone_pair(d)[0])
    return root
