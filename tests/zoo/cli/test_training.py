"""zoo train, eval, demo, plot and average, and one clear sentence (exit 2, no traceback, nothing
lost) for each kind of bad input."""


from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.zoo.cli.helpers import ROOT, TINY, fails, snapshot
from zoo import run_recipe
from zoo.cli import main
from zoo.pretrained import load_pretrained


def test_train_prints_the_run_and_metrics(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (run / "best" / "model.safetensors").is_file()
    assert yaml.safe_load((run / "config.yaml").read_text())["task"] == "classification"


def test_train_default_out_dir_and_overrides(
    recipe: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(recipe), "train.max_steps=2", "optim.lr=3e-4"]) == 0
    saved = yaml.safe_load((tmp_path / "runs" / "tiny" / "config.yaml").read_text())
    assert saved["train"]["max_steps"] == 2 and saved["optim"]["lr"] == 3e-4
    assert "run directory: runs/tiny" in capsys.readouterr().out


def test_resume_continues_a_run(run: Path, recipe: Path) -> None:
    # overrides may come before or after the options
    assert main(["train", str(recipe), "--out", str(run), "--resume", "train.max_steps=6"]) == 0
    assert (run / "checkpoints" / "step_00000006").is_dir()


def test_eval_prints_metrics_of_best(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["eval", str(run), "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert f"{run / 'best'} on test" in out and "top1:" in out
    assert "per-class top-1:" in out and (run / "confusion_test.png").stat().st_size > 0
    assert (run / "per_class_test.json").is_file()
    assert main(["eval", str(run / "checkpoints" / "step_00000004")]) == 0
    assert "top1:" in capsys.readouterr().out


def test_eval_overrides_change_this_evaluation_only(
    run: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = (run / "config.yaml").read_bytes()
    loaded, real = [], run_recipe.load_recipe

    def spy(path: Path, overrides: list[str] = (), **kwargs: bool) -> object:
        loaded.append(real(path, overrides, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(run_recipe, "load_recipe", spy)
    assert main(["eval", str(run), "--split", "test", "data.options.num_test=8"]) == 0
    assert loaded[-1].data.options.num_test == 8
    assert (run / "config.yaml").read_bytes() == saved
    fails(["eval", str(run), "eval.beem_size=2"], capsys, "beem_size")


def test_a_cooldown_longer_than_the_run(
    recipe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # train.max_steps (4) says how long the run is: shortened to a tenth of it, with a warning
    args = ["train", str(recipe), "--out", str(tmp_path / "r"), "schedule.cooldown_steps=9"]
    with caplog.at_level(logging.WARNING, logger="zoo.config"):
        assert main(args) == 0
    assert "schedule.cooldown_steps (9) does not fit after the warmup in the run's 4" in caplog.text
    # the length comes from the data (one epoch of 4 batches): refused, naming both numbers
    args = ["train", str(recipe), "--out", str(tmp_path / "e"), "schedule.cooldown_steps=9",
            "train.max_steps=null", "train.epochs=1"]
    fails(args, capsys, "schedule.cooldown_steps (9)", "4 steps")


def test_eval_unknown_split(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fails(["eval", str(run), "--split", "dev"], capsys, "split 'dev'")


def test_eval_ensemble_of_classifiers_refused(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fails(["eval", str(run), "--ensemble", str(run)], capsys,
          "ensembles are not supported for classification models")


@pytest.mark.draws_curves
def test_plot_draws_the_curves(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (run / "curves.png").unlink(missing_ok=True)
    assert main(["plot", str(run)]) == 0
    assert (run / "curves.png").stat().st_size > 0


def test_average_the_last_checkpoints(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "avg"
    assert main(["average", str(run), "--last", "2", "--out", str(out)]) == 0
    a, b = (
        load_file(run / "checkpoints" / s / "model.safetensors")
        for s in ("step_00000003", "step_00000004")
    )
    avg = load_file(out / "model.safetensors")
    torch.testing.assert_close(
        avg["head.fc.weight"], (a["head.fc.weight"] + b["head.fc.weight"]) / 2
    )
    assert load_pretrained(out).model_name == "test_vit"
    assert json.loads((out / "config.json").read_text())["task"] == "classification"


def test_average_needs_enough_checkpoints(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fails(["average", str(run), "--last", "9"], capsys, "cannot average the last 9")


def test_demo_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "demo",
        "--only",
        "vision",
        "train.max_steps=2",
        "schedule.warmup_steps=0",
        "data.options.num_train=64",
        "data.options.num_val=32",
        "data.options.num_test=32",
    ]
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-4].split()[:6] == ["demo", "task", "model", "steps", "metric", "value"]
    assert lines[-3].split()[:5] == ["vision", "classification", "test_vit", "2", "top1"]
    assert lines[-1] == ("the runs were written to a temporary directory and removed: pass "
                         "--out DIR to keep them")


def test_missing_recipe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fails(["train", str(tmp_path / "nope.yaml")], capsys, "recipe file not found", "nope.yaml")


def test_bad_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("task: classification\nmodel: [unclosed\n")
    fails(["train", str(path)], capsys, "cannot parse", "bad.yaml")


def test_unknown_key(recipe: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fails(["train", str(recipe), "train.lr=0.1"], capsys, "unknown key 'train.lr'")


def test_wrong_type(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "batch_size": "big"}}))
    fails(["train", str(path)], capsys, "train.batch_size", "expects an int")


def test_missing_data_directory(
    recipe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = ["data.dataset=imagefolder", "data.options={}", f"data.root={tmp_path / 'gone'}"]
    fails(
        ["train", str(recipe), *folder, "--out", str(tmp_path / "r")],
        capsys,
        "does not exist",
        "gone",
    )


def test_missing_pretrained_model(
    recipe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gone = tmp_path / "no_such_run"
    fails(
        ["train", str(recipe), f"model.pretrained={gone}", "--out", str(tmp_path / "r")],
        capsys,
        "model.pretrained: model directory",
        "no_such_run does not exist",
    )


def test_empty_dataset(recipe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    out = tmp_path / "r"
    folder = ["data.dataset=imagefolder", "data.options={}", f"data.root={tmp_path / 'empty'}"]
    fails(["train", str(recipe), *folder, "--out", str(out)], capsys, "empty")
    # a run that failed to start leaves nothing in the way of the corrected command
    assert main(["train", str(recipe), "train.max_steps=1", "--out", str(out)]) == 0


def test_output_directory_not_writable(
    recipe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    fails(
        ["train", str(recipe), "--out", str(blocker / "run")],
        capsys,
        "cannot write to output directory",
    )
    assert blocker.read_text() == "not a directory"


def test_resume_with_nothing_to_resume(
    recipe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fails(
        ["train", str(recipe), "--out", str(tmp_path / "new"), "--resume"],
        capsys,
        "nothing to resume",
    )


def test_existing_run_is_not_overwritten(
    run: Path, recipe: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(run)
    fails(["train", str(recipe), "--out", str(run)], capsys, "already holds a run", "--resume")
    fails(
        ["train", str(recipe), "train.batch_size=oops", "--out", str(run), "--resume"],
        capsys,
        "train.batch_size",
    )
    assert snapshot(run) == before


def test_corrupt_checkpoint_on_resume(
    run: Path, recipe: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (run / "checkpoints" / "step_00000004" / "model.safetensors").write_bytes(b"garbage")
    before = snapshot(run)
    fails(
        ["train", str(recipe), "--out", str(run), "--resume"],
        capsys,
        "step_00000004/model.safetensors",
    )
    assert snapshot(run) == before


def test_fp16_on_cpu(recipe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fails(
        [
            "train",
            str(recipe),
            "train.precision=fp16",
            "train.device=cpu",
            "--out",
            str(tmp_path / "r"),
        ],
        capsys,
        "train.precision fp16 needs a CUDA device",
    )


def test_eval_of_a_missing_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fails(["eval", str(tmp_path / "nowhere")], capsys, "does not exist")


def test_a_recipe_that_is_a_device_and_a_run_that_is_a_file(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fails(["train", "/dev/zero"], capsys, "recipe file is not a regular file: /dev/zero")
    config = run / "config.yaml"
    fails(["eval", str(config)], capsys, f"model directory {config} is a file, not a directory")
    fails(["plot", str(config)], capsys, f"run directory {config} is a file, not a directory")


def test_eval_batch_size_and_device_are_named_as_flags(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fails(["eval", str(run), "--batch-size", "0"], capsys, "--batch-size must be at least 1")
    fails(["eval", str(run), "--device", "gpu"], capsys, "--device 'gpu' is not a device")
    fails(["classify", str(run), "x.png", "--topk", "0"], capsys, "--topk must be at least 1")


def test_eval_of_an_ensemble_reports_apart(tmp_path, capsys):
    recipe = ROOT / "configs" / "demo" / "speech.yaml"
    run = tmp_path / "run"
    assert main(["train", str(recipe), "--out", str(run), "train.max_steps=2",
                 "schedule.warmup_steps=1", "data.options.train_utterances=64",
                 "data.options.eval_utterances=16"]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--device", "cpu"]) == 0
    alone = capsys.readouterr().out
    assert main(["eval", str(run), "--device", "cpu", "--ensemble", str(run / "best")]) == 0
    out = capsys.readouterr().out
    assert f"{run / 'best'} (ensemble with {run / 'best'}) on val:" in out
    # the model averaged with itself scores as itself; its report does not replace the run's
    scores = [line for line in alone.splitlines() if "cer:" in line or "loss:" in line]
    assert len(scores) == 2 and scores == [
        line for line in out.splitlines() if "cer:" in line or "loss:" in line]
    assert (run / "transcripts_val.tsv").is_file() and (run / "transcripts_val_ensemble.tsv") \
        .read_text("utf-8") == (run / "transcripts_val.tsv").read_text("utf-8")
