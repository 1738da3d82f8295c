"""What the CLI tests share: a tiny classification recipe and the check that a command fails with
one sentence."""


from __future__ import annotations

from pathlib import Path

import pytest

from zoo.cli import main

ROOT = Path(__file__).resolve().parents[3]
TINY = {
    "task": "classification",
    "model": {"name": "test_vit", "overrides": {"depth": 1, "dim": 32, "num_heads": 2}},
    "data": {
        "dataset": "synthetic",
        "options": {"num_train": 64, "num_val": 32, "num_test": 32, "native_size": 16},
    },
    "schedule": {"warmup_steps": 1},
    "train": {"max_steps": 4, "batch_size": 16, "eval_every": 2, "checkpoint_every": 1,
              "keep_last": 3},
}  # fmt: skip


def fails(args: list[str], capsys: pytest.CaptureFixture[str], *words: str) -> str:
    """Run the CLI, expect exit 2 and one line ``error: ...`` holding ``words``."""
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: "), err
    assert "Traceback" not in "\n".join(err)
    for word in words:
        assert word in err[-1], err[-1]
    return err[-1]


def snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file()}
