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


def test_schedule_settings_reach_the_sections_and_bad_ones_name_the_item() -> None:
    module = load_script(SCRIPT, "benchmarks_multitask")
    assert module.parse_schedule("weighted:speech.lr_mult=2:speech.loss_weight=0.5",
                                 ["vision", "speech"]) == (
        "weighted", {"speech": {"lr_mult": 2.0, "loss_weight": 0.5}})
    args = module.parse(["--smoke"])
    every, core = module.sections(Path("."), True, True)
    recipe = module.multi_recipe({t: every[t] for t in ("vision", "speech")}, core, 5, args,
                                 "uniform", None, {"speech": {"lr_mult": 3.0}})
    sections = {s["name"]: s for s in recipe["multitask"]["tasks"]}
    assert sections["speech"]["lr_mult"] == 3.0 and "lr_mult" not in sections["vision"]
    assert recipe["multitask"]["sampling"] == "uniform"
    for spec, culprit in [("weighted:speech.lr=2", "speech.lr=2"),
                          ("weighted:translation.lr_mult=2", "translation.lr_mult=2"),
                          ("weighted:speech.lr_mult=x", "speech.lr_mult=x"),
                          ("fastest", "fastest")]:
        with pytest.raises(SystemExit, match=culprit):
            module.parse_schedule(spec, ["vision", "speech"])


def test_singles_are_reused_only_from_a_comparable_run(tmp_path: Path, monkeypatch) -> None:
    """--singles-from takes the earlier rows and trains only the multitask runs; a tune run
    identical to the multitask run is reported from it, not trained twice."""
    module = load_script(SCRIPT, "benchmarks_multitask")
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    base = ["--smoke", "--tasks", "vision,speech", "--steps-per-task", "6", "--evals", "1"]
    meta = {k: v for k, v in vars(module.parse(base)).items() if k in module.COMPARABLE}
    singles = {f"single_{t}": {"val": {"top1": 50.0, "cer": 20.0}, "params": 10,
                               "train_seconds": 1.0} for t in ("vision", "speech")}
    (earlier / "multitask.json").write_text(json.dumps({"meta": meta, "runs": singles}))
    launched: dict[str, dict] = {}

    def fake_launch(name: str, recipe: dict, out: Path, deadline: float) -> dict:
        launched[name] = recipe
        return {"val": {"score": 1.0}, "params": 12, "train_seconds": 2.0}

    monkeypatch.setattr(module, "launch", fake_launch)
    monkeypatch.setattr(module, "_task_steps", lambda run_dir, pair: f"from {run_dir.name}")
    argv = [*base, "--out", str(tmp_path / "out"), "--singles-from", str(earlier),
            "--tune-steps", "6", "--schedules", "weighted,weighted:speech.lr_mult=2"]
    results = module.main(argv)
    assert sorted(launched) == ["multitask", "tune_weighted:speech.lr_mult=2"]
    assert results["runs"]["single_vision"] == singles["single_vision"]
    assert results["runs"]["tune_weighted"]["same_as"] == "multitask"
    assert results["runs"]["tune_weighted"]["steps"] == "from multitask"
    speech = [s for s in launched["tune_weighted:speech.lr_mult=2"]["multitask"]["tasks"]
              if s["name"] == "speech"]
    assert speech[0]["lr_mult"] == 2.0
    with pytest.raises(SystemExit, match="steps_per_task=6, this run 7"):
        module.main([*argv, "--steps-per-task", "7"])
    with pytest.raises(SystemExit, match="cannot read"):
        module.main([*base, "--out", str(tmp_path / "o2"), "--singles-from", str(tmp_path)])
