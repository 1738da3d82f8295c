"""The training subcommands: train, eval, demo, plot, average, and one clear sentence (exit 2,
no traceback, nothing lost) for each kind of bad input."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from zoo import commands
from zoo.checkpoint import load_pretrained
from zoo.cli import main

ROOT = Path(__file__).resolve().parents[2]
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


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.fixture
def run(recipe: Path, tmp_path: Path) -> Path:
    """A finished tiny run."""
    out = tmp_path / "run"
    assert main(["train", str(recipe), "--out", str(out)]) == 0
    return out


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


# ---------------------------------------------------------------------------------------------
# The commands


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
    loaded, real = [], commands.load_recipe

    def spy(path: Path, overrides: list[str] = (), **kwargs: bool) -> object:
        loaded.append(real(path, overrides, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(commands, "load_recipe", spy)
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


def test_classify_prints_top_classes(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    image = tmp_path / "shape.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(image)
    capsys.readouterr()
    assert main(["classify", str(run), str(image), "--topk", "3"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{image}: ") and line.count("(p=") == 3, line
    probs = [float(p.split(")")[0]) for p in line.split("(p=")[1:]]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.0 + 1e-3


def test_classify_names_a_corrupt_image(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    fails(["classify", str(run), str(bad)], capsys, "broken.png")


def test_classify_refuses_a_model_of_another_task(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from zoo import create_model, save_pretrained

    save_pretrained(
        create_model("test_mt_transformer"), tmp_path / "mt", extra={"task": "translation"}
    )
    fails(["classify", str(tmp_path / "mt"), "x.png"], capsys, "translation", "classification")


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


# ---------------------------------------------------------------------------------------------
# Bad input: one sentence each, exit 2, nothing lost


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


def test_transcribe_warns_that_the_demo_speech_model_knows_only_tones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import numpy as np
    import soundfile as sf

    run = tmp_path / "speech"
    overrides = ["train.max_steps=1", "schedule.warmup_steps=0",
                 "data.options.train_utterances=8", "data.options.eval_utterances=4"]
    assert main(["train", "configs/demo/speech.yaml", "--out", str(run), *overrides]) == 0
    sf.write(str(tmp_path / "a.wav"), np.zeros(8000, dtype="float32"), 16000)
    caplog.clear()
    assert main(["transcribe", str(run), str(tmp_path / "a.wav"), "--device", "cpu"]) == 0
    assert "learnt the built-in synthetic tones (one per digit), not speech" in caplog.text


def test_classify_refuses_a_model_with_nan_weights(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image
    from safetensors.torch import save_file

    path = run / "best" / "model.safetensors"
    save_file({k: v * float("nan") for k, v in load_file(path).items()}, path)
    image = tmp_path / "shape.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(image)
    fails(["classify", str(run), str(image)], capsys, f"{path} holds NaN or infinite weights")
    fails(["eval", str(run)], capsys, f"{path} holds NaN or infinite weights")


# ---------------------------------------------------------------------------------------------
# zoo translate: odd input, odd numbers


@pytest.fixture(scope="module")
def mt_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained test translation model with a small vocabulary, saved as a model dir."""
    from tasks.translation import data as D
    from tasks.translation.tokenizer import Tokenizer
    from zoo import create_model, save_pretrained

    src, tgt = D.synthetic_corpus(0, 300, 10)["train"]
    tokenizer = Tokenizer.train(src + tgt, vocab_size=120)
    directory = tmp_path_factory.mktemp("mt") / "model"
    torch.manual_seed(0)
    model = create_model("test_mt_transformer", vocab_size=len(tokenizer))
    meta = {"tokenizer": "spm.model"}
    save_pretrained(model, directory, extra={"task": "translation", "task_meta": meta})
    tokenizer.save(directory / "spm.model")
    return directory


def _stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), errors="surrogateescape"))


def test_translate_names_the_line_of_stdin_that_is_not_utf8(
    mt_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _stdin(monkeypatch, b"We see cats.\ncaf\xe9\n")
    fails(["translate", str(mt_model)], capsys,
          "standard input, line 2: not valid UTF-8 (byte 0xe9 at column 4)")


def test_translate_names_a_command_line_sentence_that_is_not_utf8(
    mt_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = b"caf\xe9".decode("utf-8", "surrogateescape")  # how such bytes reach sys.argv
    fails(["translate", str(mt_model), "ok", bad], capsys, "sentence 2 on the command line")


def test_blank_input_gives_an_empty_line_like_empty_input(
    mt_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["translate", str(mt_model), "   ", "", "\t"]) == 0
    assert capsys.readouterr().out == "\n\n\n"
    _stdin(monkeypatch, b"  \n\n")
    assert main(["translate", str(mt_model)]) == 0
    assert capsys.readouterr().out == "\n\n"


def test_translate_api_returns_nothing_for_a_blank_sentence(mt_model: Path) -> None:
    task, model = commands.load_for_prediction(mt_model, "translation", "cpu")
    found = task.translate(model, ["  ", "We see cats."], beam_size=2, nbest=2)
    assert found[0] == [] and len(found[1]) >= 1
    assert task.predict(model, ["   "]) == [""]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--beam", "0"], "--beam-size must be at least 1, got 0"),
        (["--nbest", "0"], "--nbest must be at least 1, got 0"),
        (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        (["--beam", "2", "--nbest", "3"],
         "--nbest 3 needs --beam-size 3 or more, got --beam-size 2"),
        (["--nbest", "2"],
         "--nbest 2 needs --beam-size 2 or more (the run's decode.beam_size is 1)"),
        (["--device", "gpu"], "--device 'gpu' is not a device"),
    ],
    ids=["beam", "nbest", "batch_size", "nbest_over_beam", "nbest_over_default", "device"],
)
def test_translate_blames_the_flag_at_fault(
    mt_model: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    fails(["translate", str(mt_model), "We see cats.", *flags], capsys, message)


def test_translate_api_names_its_arguments(mt_model: Path) -> None:
    task, model = commands.load_for_prediction(mt_model, "translation", "cpu")
    with pytest.raises(ValueError, match="^beam_size must be at least 1, got 0$"):
        task.translate(model, ["We see cats."], beam_size=0)
    with pytest.raises(ValueError, match="^batch_size must be at least 1, got 0$"):
        task.translate(model, ["We see cats."], batch_size=0)


def test_translate_input_that_is_a_directory_or_a_device(
    mt_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fails(["translate", str(mt_model), "--input", str(tmp_path)], capsys,
          f"text file {tmp_path} is a directory, not a file")
    fails(["translate", str(mt_model), "--input", "/dev/zero"], capsys,
          "text file /dev/zero is a device, not a file")


def test_a_corrupt_sentencepiece_model_is_one_sentence(
    mt_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(mt_model, copy)
    (copy / "spm.model").write_bytes(b"\x0a\x05hello not a model" * 20)
    fails(["translate", str(copy), "We see cats."], capsys,
          f"sentencepiece model {copy / 'spm.model'} is corrupt: it does not parse")


# ---------------------------------------------------------------------------------------------
# Files and directories mistaken for each other; settings named as the user wrote them


def test_classify_an_image_that_is_a_directory_or_a_device(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fails(["classify", str(run), str(tmp_path)], capsys, f"image {tmp_path} is a directory")
    fails(["classify", str(run), "/dev/zero"], capsys, "image /dev/zero is a device, not a file")


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
