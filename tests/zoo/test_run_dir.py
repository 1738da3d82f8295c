"""Run directories you can trust: a run never touches what it did not write, holds its directory
alone, never reuses another run's files, can always be resumed or restarted, continues its own
recipe, survives a full disk and stops cleanly on SIGINT/SIGTERM.

The runs train ``test_vit`` shrunk to one layer on 16-pixel synthetic images (and a tiny
``test_mt_transformer`` for the vocabulary cases), a few steps each.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

import zoo.atomic
import zoo.records
from tasks.base import get_task
from tasks.translation.tokenizer import Tokenizer
from tests.zoo.cli.helpers import fails
from tests.zoo.helpers import Interrupt, snapshot, stop_at_step, tiny_vit, zoo_process
from zoo.cli import main
from zoo.config import ConfigError, recipe_from_dict
from zoo.engine import Trainer, train
from zoo.records import read_metrics
from zoo.run_dir import checkpoint_dirs, keep_last
from zoo.saved_model import read_model_config
from zoo.trainer_state import load_trainer_state


def tiny(**train_options: Any) -> dict[str, Any]:
    """A classification recipe that trains in about a second."""
    train = {"eval_every": 4, "checkpoint_every": 4, "log_every": 2, **train_options}
    return tiny_vit(data={"num_val": 16, "num_test": 16}, train=train)


def tiny_mt(vocab_size: int = 120, **train_options: Any) -> dict[str, Any]:
    """A translation recipe on a small built-in corpus: vocabulary and two steps, seconds."""
    return {
        "task": "translation",
        "model": {"name": "test_mt_transformer"},
        "data": {"dataset": "synthetic", "options": {"num_samples": 200, "num_eval": 8}},
        "tokenizer": {"vocab_size": vocab_size},
        "train": {
            "max_steps": 2, "batch_size": 512, "eval_every": 2, "checkpoint_every": 2,
            **train_options,
        },
    }  # fmt: skip


def write(path: Path, recipe: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(recipe))
    return path


def steps(run: Path) -> list[int]:
    return [int(p.name[5:]) for p in checkpoint_dirs(run)]


# ---------------------------------------------------------------------------------------------
# 1. Only what this program wrote is cleaned up


def test_a_new_run_leaves_the_users_hidden_folders_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mine"
    (out / ".tmp-important").mkdir(parents=True)
    (out / ".tmp-important" / "thesis.tex").write_text("chapter 1")
    (out / ".old-notes").mkdir()
    (out / ".old-notes" / "todo.txt").write_text("write chapter 2")
    before = snapshot(out)
    recipe = write(tmp_path / "tiny.yaml", tiny(max_steps=2, checkpoint_every=2))
    assert main(["train", str(recipe), "--out", str(out)]) == 0
    after = snapshot(out)
    assert {k: after.get(k) for k in before} == before
    assert not (out / "notes").exists()


def test_the_temporaries_of_a_killed_run_are_cleaned_up(tmp_path: Path) -> None:
    train(recipe_from_dict(tiny(max_steps=4)), tmp_path)
    # what a kill mid-write leaves: a half-written checkpoint, best/ caught between two renames
    (tmp_path / "checkpoints/.zoo-tmp-step_00000006-0123abcd").mkdir()
    (tmp_path / ".zoo-tmp-best-89abcdef").mkdir()
    os.rename(tmp_path / "best", tmp_path / ".zoo-old-best-89abcdef")
    (tmp_path / ".zoo-start").mkdir()
    train(recipe_from_dict(tiny(max_steps=6, eval_every=100)), tmp_path, resume=True)
    assert sorted(p.name for p in tmp_path.rglob(".*")) == [".zoo.lock"]
    assert (tmp_path / "best" / "model.safetensors").is_file()  # put back
    assert steps(tmp_path) == [4, 6]


# ---------------------------------------------------------------------------------------------
# 2 and 9. One process per run directory; SIGTERM stops after a step with a checkpoint


def test_a_running_train_holds_its_directory_and_stops_on_sigterm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = write(
        tmp_path / "long.yaml",
        tiny(max_steps=5000, log_every=1, eval_every=10000, checkpoint_every=10000),
    )
    run = tmp_path / "run"
    proc = zoo_process("train", str(recipe), "--out", str(run), text=True)
    try:
        deadline = time.monotonic() + 120
        while not any(e["type"] == "train" for e in read_metrics(run)):
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "no training step within 120 s"
            time.sleep(0.05)
        # a second process, new or resuming, is refused, naming the directory and the holder
        fails(["train", str(recipe), "--out", str(run)], capsys, str(run), f"process {proc.pid}")
        fails(["train", str(recipe), "--out", str(run), "--resume"], capsys, f"process {proc.pid}")
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, out
    last = out.strip().splitlines()[-1]
    assert last.startswith("stopped: SIGTERM at step "), out
    assert "Traceback" not in out
    (stopped_at,) = steps(run)
    assert f"{run}/checkpoints/step_{stopped_at:08d}" in last and "--resume" in last
    assert (run / ".zoo.lock").read_text() == ""  # released, no holder
    # --resume continues from that checkpoint, where a fresh start would be refused
    more = f"train.max_steps={stopped_at + 2}"
    assert main(["train", str(recipe), "--out", str(run), "--resume", more]) == 0
    assert steps(run) == [stopped_at, stopped_at + 2]
    logged = [e["step"] for e in read_metrics(run) if e["type"] == "train"]
    assert logged == list(range(1, stopped_at + 3))


def test_sigint_stops_after_the_step_with_a_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    train_step = Trainer._train_step

    def ctrl_c_at_step_3(self: Trainer, group: Any) -> None:
        train_step(self, group)
        if self.pos.step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    recipe = write(tmp_path / "tiny.yaml", tiny(checkpoint_every=100, eval_every=100))
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(Trainer, "_train_step", ctrl_c_at_step_3)
        assert main(["train", str(recipe), "--out", str(run)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"stopped: SIGINT at step 3: stopped after writing the checkpoint "
        f"{run}/checkpoints/step_00000003; continue with --resume"
    )
    assert main(["train", str(recipe), "--out", str(run), "--resume"]) == 0
    assert steps(run) == [3, 8]


def test_ctrl_c_or_sigterm_during_start_up_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    task = get_task("classification")
    recipe = write(tmp_path / "tiny.yaml", tiny())
    for signum, status in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        with monkeypatch.context() as m:
            m.setattr(task, "prepare", lambda self, s=signum: os.kill(os.getpid(), s))
            assert main(["train", str(recipe), "--out", str(tmp_path / "run")]) == status
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "during start-up" in err[0], err
        assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------
# 5. A run never reuses files it did not write


def test_a_failed_translation_start_leaves_no_vocabulary(tmp_path: Path) -> None:
    bad = tiny_mt()
    bad["eval"] = {"split": "nope"}  # found after the vocabulary was trained
    with pytest.raises(ConfigError, match="eval.split 'nope'"):
        train(recipe_from_dict(bad), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_new_run_never_reuses_a_vocabulary_left_in_its_directory(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    other = Tokenizer.train(["ein zwei drei vier", "one two three four"] * 20, vocab_size=40)
    other.save(run / "spm.model")
    train(recipe_from_dict(tiny_mt(vocab_size=120)), run)
    ours = Tokenizer.load(run / "spm.model")
    assert len(ours) != len(other) and len(ours) > 60
    saved = read_model_config(checkpoint_dirs(run)[-1])
    assert saved["config"]["vocab_size"] == len(ours)


def test_resume_with_another_tasks_recipe_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = write(tmp_path / "tiny.yaml", tiny(max_steps=2, checkpoint_every=2))
    run = tmp_path / "run"
    assert main(["train", str(recipe), "--out", str(run)]) == 0
    before = snapshot(run)
    mt = write(tmp_path / "mt.yaml", tiny_mt())
    fails(["train", str(mt), "--out", str(run), "--resume"], capsys, "holds a run of test_vit")
    with pytest.raises(ConfigError, match="task"):  # the same through the Python API
        train(recipe_from_dict(tiny_mt()), run, resume=True)
    assert snapshot(run) == before


def test_resume_refuses_a_new_vocab_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mt = write(tmp_path / "mt.yaml", tiny_mt(vocab_size=120))
    run = tmp_path / "run"
    assert main(["train", str(mt), "--out", str(run)]) == 0
    before = snapshot(run)
    args = ["train", str(mt), "--out", str(run), "--resume", "tokenizer.vocab_size=60"]
    fails(args, capsys, "tokenizer.vocab_size 60", "config.yaml")
    assert snapshot(run) == before


# ---------------------------------------------------------------------------------------------
# 6. A run without a checkpoint can be resumed (from step 0) or replaced; a failed start
# leaves nothing


def test_a_run_stopped_before_its_first_checkpoint_starts_over_on_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    recipe = recipe_from_dict(tiny(checkpoint_every=100, eval_every=2))
    with monkeypatch.context() as m:
        stop_at_step(m, 3)
        with pytest.raises(Interrupt):
            train(recipe, tmp_path)
    assert (tmp_path / "best").is_dir() and not steps(tmp_path)
    with caplog.at_level(logging.WARNING):
        train(recipe, tmp_path, resume=True)
    assert "starting its run over from step 0" in caplog.text
    assert steps(tmp_path) == [8]
    logged = [e["step"] for e in read_metrics(tmp_path) if e["type"] == "train"]
    assert logged == [2, 4, 6, 8]


def test_a_run_stopped_before_its_first_checkpoint_is_replaced_by_a_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with monkeypatch.context() as m:
        stop_at_step(m, 3)
        with pytest.raises(Interrupt):
            train(recipe_from_dict(tiny(checkpoint_every=100, eval_every=2)), tmp_path)
    train(recipe_from_dict(tiny(max_steps=4)), tmp_path)
    assert steps(tmp_path) == [4]
    assert [e["step"] for e in read_metrics(tmp_path) if e["type"] == "eval"] == [4]
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["train"]["max_steps"] == 4
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_failed_start_leaves_nothing_behind(tmp_path: Path) -> None:
    bad = tiny()
    bad["eval"] = {"split": "nope"}
    with pytest.raises(ConfigError, match="eval.split"):
        train(recipe_from_dict(bad), tmp_path / "new" / "run")
    assert not (tmp_path / "new").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="eval.split"):
        train(recipe_from_dict(bad), mine)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_files_of_a_run_without_the_zoo_mark_are_not_replaced(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("my own settings\n")
    with pytest.raises(ValueError, match="already holds config.yaml but no checkpoint"):
        train(recipe_from_dict(tiny()), tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


# ---------------------------------------------------------------------------------------------
# 7. A resumed run continues its own recipe


def test_resume_continues_the_runs_own_recipe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    recipe = write(tmp_path / "tiny.yaml", tiny(max_steps=8, checkpoint_every=1))
    run = tmp_path / "run"
    start = ["train", str(recipe), "--out", str(run)]
    assert main([*start, "optim.lr=0.005", "train.max_steps=2"]) == 0
    recorded = (run / "config.yaml").read_bytes()
    with caplog.at_level(logging.WARNING):
        assert main([*start, "--resume"]) == 0  # the run's 2 steps, not the file's 8
    assert "optim.lr, train.max_steps in" in caplog.text and "not used" in caplog.text
    assert steps(run)[-1] == 2
    assert (run / "config.yaml").read_bytes() == recorded
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main([*start, "--resume", "train.max_steps=3"]) == 0
    assert "resuming with train.max_steps = 3 (the run's recipe had 2)" in caplog.text
    assert steps(run)[-1] == 3
    state = load_trainer_state(checkpoint_dirs(run)[-1] / "trainer_state.pt")
    assert set(state["scheduler"]["base_lrs"]) == {0.005}  # the run's own lr
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["train"]["max_steps"], config["optim"]["lr"]) == (3, 0.005)
    (event,) = [e for e in read_metrics(run) if e["type"] == "config"]
    assert event["step"] == 2 and event["changed"] == {"train.max_steps": {"from": 2, "to": 3}}
    before = snapshot(run)
    fails([*start, "--resume", "model.overrides.dim=48"], capsys, "model.overrides.dim 48")
    assert snapshot(run) == before


# ---------------------------------------------------------------------------------------------
# 8. A full disk: one sentence, the last checkpoint intact, the run resumable


def test_a_full_disk_while_checkpointing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    save_file = zoo.atomic.save_file

    def full_at_step_8(tensors: Any, path: Any, metadata: Any = None) -> None:
        if "step_00000008" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        save_file(tensors, path, metadata=metadata)

    recipe = write(tmp_path / "tiny.yaml", tiny())
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(zoo.atomic, "save_file", full_at_step_8)
        fails(
            ["train", str(recipe), "--out", str(run)], capsys,
            f"to write {run}/checkpoints/step_00000008/model.safetensors (it needs about",
            "free)", f"last checkpoint {run}/checkpoints/step_00000004", "--resume",
        )  # fmt: skip
    assert steps(run) == [4]
    assert sorted(p.name for p in run.rglob(".*")) == [".zoo.lock"]
    assert main(["train", str(recipe), "--out", str(run), "--resume"]) == 0
    assert steps(run) == [4, 8]


class FullAfter:
    """A text file whose writes fail with ENOSPC after ``lines`` lines."""

    def __init__(self, f: Any, lines: int) -> None:
        self.f, self.lines = f, lines

    def write(self, text: str) -> int:
        if self.lines <= 0:
            self.f.write(text[:5])  # a torn line, as a full disk leaves
            raise OSError(errno.ENOSPC, "No space left on device")
        self.lines -= 1
        return self.f.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.f, name)

    def __enter__(self) -> FullAfter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()


def test_a_full_disk_while_writing_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = write(tmp_path / "tiny.yaml", tiny())
    run = tmp_path / "run"
    with monkeypatch.context() as m:  # full after the events of steps 2, 4 and eval 4
        m.setattr(zoo.records, "open", lambda *a, **k: FullAfter(open(*a, **k), 3), raising=False)
        fails(
            ["train", str(recipe), "--out", str(run)], capsys,
            f"no space left on the device to write {run}/metrics.jsonl", "last checkpoint",
        )  # fmt: skip
    assert steps(run) == [4]
    assert main(["train", str(recipe), "--out", str(run), "--resume"]) == 0
    assert [e["step"] for e in read_metrics(run) if e["type"] == "train"] == [2, 4, 6, 8]
    assert all(json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines())


def test_keep_last(tmp_path: Path) -> None:
    for step in (5, 40, 100, 20):
        (tmp_path / f"step_{step}.safetensors").write_bytes(b"x")
        (tmp_path / f"step_{step}.trainer.pt").write_bytes(b"x")
    (tmp_path / "step_1").mkdir()
    (tmp_path / "step_best").write_bytes(b"x")  # no step number: never removed
    (tmp_path / ".step_7.safetensors.ab12.tmp").write_bytes(b"x")  # in-flight write: never removed
    removed = keep_last(tmp_path, "step_*", 2)
    assert [p.name for p in removed] == [
        "step_1",
        "step_5.safetensors",
        "step_5.trainer.pt",
        "step_20.safetensors",
        "step_20.trainer.pt",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".step_7.safetensors.ab12.tmp",
        "step_100.safetensors",
        "step_100.trainer.pt",
        "step_40.safetensors",
        "step_40.trainer.pt",
        "step_best",
    ]
