"""What the CLI tests share: a tiny classification recipe and the check that a command fails with
one sentence."""


from __future__ import annotations

import pytest

from tests.zoo.helpers import ROOT, snapshot, tiny_vit
from zoo.cli import main

TINY = tiny_vit(train={"max_steps": 4, "eval_every": 2, "checkpoint_every": 1, "keep_last": 3})


def fails(args: list[str], capsys: pytest.CaptureFixture[str], *words: str) -> str:
    """Run the CLI, expect exit 2 and one line ``error: ...`` holding ``words``."""
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: "), err
    assert "Traceback" not in "\n".join(err)
    for word in words:
        assert word in err[-1], err[-1]
    return err[-1]


__all__ = ["ROOT", "TINY", "fails", "snapshot"]
