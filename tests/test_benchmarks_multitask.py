"""Smoke test of benchmarks/multitask.py: its CPU run on the built-in data must train every run,
evaluate it and write the table, so that the script does not rot between GPU runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "multitask.py"


@pytest.mark.slow  # seven small training runs in child processes: a few CPU minutes
def test_smoke_run_writes_every_row(tmp_path: Path) -> None:
    module = load_script(SCRIPT, "benchmarks_multitask")
    out = tmp_path / "out"
    argv = ["--smoke", "--out", str(out), "--steps-per-task", "6", "--tune-steps", "4",
            "--schedules", "weighted,uniform", "--evals", "1", "--parallel", "2"]
    results = module.main(argv)
    written = json.loads((out / "multitask.json").read_text())
    assert written == json.loads(json.dumps(results))
    runs = written["runs"]
    assert set(runs) == {"single_vision", "single_speech", "single_translation", "multitask",
                         "tune_weighted", "tune_uniform"}
    assert not [name for name, run in runs.items() if "error" in run]
    assert runs["multitask"]["params"] < sum(runs[f"single_{t}"]["params"]
                                             for t in ("vision", "speech", "translation"))
    assert runs["tune_weighted"]["steps"] == "4/4"  # exactly each task's steps
    table = (out / "multitask.md").read_text()
    assert "they are not results" in table and "| translation | bleu |" in table
