"""benchmarks/multitask.py writes each run's result as soon as that run ends, whatever the order
the runs were submitted in: a session stopped from outside keeps every finished run's row."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from tests.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "multitask.py"


def _module():
    return load_script(SCRIPT, "benchmarks_multitask_partial")


def test_a_finished_run_is_saved_while_earlier_ones_still_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = _module()
    out = tmp_path / "out"
    multitask_saved = threading.Event()
    seen_by_singles: list[set[str]] = []

    def fake_launch(name: str, recipe: dict, folder: Path, deadline: float) -> dict:
        if name == "multitask":  # submitted first, ends first
            return {"params": 10, "train_seconds": 1.0, "val": {"vision/top1": 50.0}}
        # the singles end only once the multitask row is on disk (or give up after 10 s)
        for _ in range(100):
            if (out / "multitask.json").is_file():
                runs = json.loads((out / "multitask.json").read_text())["runs"]
                if "multitask" in runs:
                    multitask_saved.set()
                    seen_by_singles.append(set(runs))
                    break
            threading.Event().wait(0.1)
        return {"params": 5, "train_seconds": 1.0, "val": {"top1": 40.0}}

    monkeypatch.setattr(module, "launch", fake_launch)
    results = module.main(["--builtin", "--out", str(out), "--tasks", "vision,speech",
                           "--parallel", "3", "--tune-steps", "0"])
    assert multitask_saved.is_set()
    assert all("multitask" in seen for seen in seen_by_singles)
    assert list(results["runs"]) == ["single_vision", "single_speech", "multitask"]
    table = (out / "multitask.md").read_text()
    assert "| vision | top1 | 40 | 50 | +10.00 |" in table
