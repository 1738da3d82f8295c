"""The training engine: run directory, determinism, exact resume (also after SIGKILL),
accumulation, precision, EMA, NaN handling, checkpoint errors and 2-process data parallelism.

Everything trains ``test_vit`` shrunk to one layer on 16-pixel synthetic images, a few steps.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tasks.base import get_task
from tests.zoo.helpers import (
    ROOT,
    crash_and_resume,
    finish,
    kill_after_checkpoint,
    snapshot,
    tiny_vit,
    weights,
    zoo_process,
)
from zoo.config import ConfigError, recipe_from_dict
from zoo.engine import Trainer, TrainingError, train
from zoo.errors import CheckpointError
from zoo.pretrained import load_pretrained
from zoo.records import read_metrics
from zoo.trainer_state import load_trainer_state


def tiny(train: dict[str, Any] | None = None, **sections: Any) -> dict[str, Any]:
    """A recipe dict that trains in about a second (96 training images, a cosine schedule)."""
    train = {"eval_every": 4, "checkpoint_every": 4, "log_every": 2, "keep_last": 2,
             **(train or {})}
    sections = {"optim": {"lr": 2e-3}, "schedule": {"name": "cosine", "warmup_steps": 2},
                **sections}
    return tiny_vit(data={"num_train": 96}, train=train, **sections)


def assert_bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


def final_checkpoint(run: Path) -> Path:
    return sorted((run / "checkpoints").glob("step_*"))[-1]


# ---------------------------------------------------------------------------------------------
# The run directory


@pytest.mark.draws_curves
def test_run_directory_layout(tmp_path: Path) -> None:
    run = tmp_path / "run"
    metrics = train(recipe_from_dict(tiny()), run)
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["max_steps"] == 8
    events = read_metrics(run)
    assert [e["step"] for e in events if e["type"] == "train"] == [2, 4, 6, 8]
    assert [e["step"] for e in events if e["type"] == "eval"] == [4, 8]
    assert all({"step", "epoch", "type"} <= e.keys() for e in events)
    assert {"loss", "lr", "samples_per_s"} <= events[0].keys()
    assert {"top1", "top5", "split"} <= events[-1].keys()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step_00000004",
        "step_00000008",
    ]
    ckpt = final_checkpoint(run)
    config = json.loads((ckpt / "config.json").read_text())
    assert config["task"] == "classification" and "class_names" in config["task_meta"]
    state = load_trainer_state(ckpt / "trainer_state.pt")  # weights_only=True
    assert state["step"] == 8 and "optimizer" in state and state["rng"]
    best = load_pretrained(run / "best")
    assert best.model_name == "test_vit"
    assert metrics["best_top1"] == max(e["top1"] for e in events if e["type"] == "eval")
    assert (run / "curves.png").stat().st_size > 0
    assert sorted(p.name for p in run.rglob(".*")) == [".zoo.lock"]  # no temporaries


class FakeWriter:
    """Stands in for TensorBoard's SummaryWriter (tensorboard is an optional extra)."""

    def __init__(self) -> None:
        self.scalars: dict[str, list[int]] = {}

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.setdefault(tag, []).append(step)

    def close(self) -> None:
        pass


def test_log_lines_without_a_terminal_and_tensorboard_scalars(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    writer = FakeWriter()
    monkeypatch.setattr("zoo.records._open_tensorboard", lambda run_dir: writer)
    with caplog.at_level(logging.INFO, logger="zoo"):
        train(recipe_from_dict(tiny({"max_steps": 4})), tmp_path)
    lines = [r.getMessage() for r in caplog.records if r.name == "zoo.records"]
    assert any(line.startswith("step 2/4  epoch 0.33  loss ") for line in lines), lines
    assert any(line.startswith("eval step 4 (val): top1 ") for line in lines), lines
    assert writer.scalars["train/loss"] == [2, 4] and writer.scalars["eval/top1"] == [4]


def test_keep_last_and_final_checkpoint(tmp_path: Path) -> None:
    train(recipe_from_dict(tiny({"max_steps": 7, "checkpoint_every": 2, "keep_last": 2})), tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step_00000006",
        "step_00000007",
    ]


def test_epochs_bound_the_run(tmp_path: Path) -> None:
    # 96 samples / 32 per batch = 3 steps per epoch
    train(recipe_from_dict(tiny({"max_steps": None, "epochs": 2, "batch_size": 32})), tmp_path)
    state = load_trainer_state(final_checkpoint(tmp_path) / "trainer_state.pt")
    assert (state["step"], state["epoch"]) == (6, 2)


def test_best_checkpoint_follows_metric_mode(tmp_path: Path) -> None:
    recipe = tiny({"eval_every": 2}, eval={"metric": "loss", "mode": "min"})
    metrics = train(recipe_from_dict(recipe), tmp_path)
    evals = [e for e in read_metrics(tmp_path) if e["type"] == "eval"]
    best = min(evals, key=lambda e: e["loss"])
    assert metrics["best_step"] == best["step"]
    assert json.loads((tmp_path / "best" / "config.json").read_text())["step"] == best["step"]


# ---------------------------------------------------------------------------------------------
# Determinism and exact resume


def test_same_seed_same_weights(tmp_path: Path) -> None:
    recipe = recipe_from_dict(tiny({"max_steps": 4}))
    train(recipe, tmp_path / "a")
    train(recipe, tmp_path / "b")
    assert_bit_identical(
        weights(final_checkpoint(tmp_path / "a")), weights(final_checkpoint(tmp_path / "b"))
    )


def test_resume_in_process_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dropout, drop_path, accumulation and EMA all resume exactly, from mid-epoch."""
    recipe = tiny({"max_steps": 9, "grad_accum": 2, "ema_decay": 0.9, "checkpoint_every": 2})
    recipe["model"]["overrides"].update(dropout=0.1, drop_path=0.1)
    recipe = recipe_from_dict(recipe)
    train(recipe, tmp_path / "full")
    crash_and_resume(recipe, tmp_path / "cut", 5, monkeypatch)
    for name in ("step_00000009", "../best"):
        assert_bit_identical(
            weights(tmp_path / "full/checkpoints" / name),
            weights(tmp_path / "cut/checkpoints" / name),
        )
    full = load_trainer_state(tmp_path / "full/checkpoints/step_00000009/trainer_state.pt")
    cut = load_trainer_state(tmp_path / "cut/checkpoints/step_00000009/trainer_state.pt")
    assert_bit_identical(full["ema"]["module"], cut["ema"]["module"])
    # metrics.jsonl: the steps redone after resuming appear once
    steps = [e["step"] for e in read_metrics(tmp_path / "cut") if e["type"] == "train"]
    assert steps == sorted(set(steps))


def test_sigkill_and_resume_is_bit_identical(tmp_path: Path) -> None:
    """The acceptance test: kill -9 a real `zoo train` after its first checkpoint, resume it,
    kill the resumed run too, resume again, and compare the final weights with an
    uninterrupted run's, bit for bit (dropout and drop_path on)."""
    recipe = tiny({"max_steps": 80, "checkpoint_every": 5, "eval_every": 20, "keep_last": 3})
    recipe["model"]["overrides"].update(drop_path=0.1, dropout=0.1)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    full, cut = tmp_path / "full", tmp_path / "cut"
    uninterrupted = zoo_process("train", str(path), "--out", str(full))

    first = kill_after_checkpoint(zoo_process("train", str(path), "--out", str(cut)), cut, 0)
    resumed = zoo_process("train", str(path), "--out", str(cut), "--resume")
    second = kill_after_checkpoint(resumed, cut, first)
    assert 0 < first < second < 80
    finish(zoo_process("train", str(path), "--out", str(cut), "--resume"))
    finish(uninterrupted)
    assert_bit_identical(
        weights(full / "checkpoints/step_00000080"), weights(cut / "checkpoints/step_00000080")
    )
    assert_bit_identical(weights(full / "best"), weights(cut / "best"))


# ---------------------------------------------------------------------------------------------
# Accumulation, precision, EMA


def test_grad_accum_matches_a_bigger_batch(tmp_path: Path) -> None:
    """Two micro-batches of 16 = one batch of 32 (the epoch's order is the same)."""
    train(recipe_from_dict(tiny({"max_steps": 3, "batch_size": 32})), tmp_path / "big")
    train(
        recipe_from_dict(tiny({"max_steps": 3, "batch_size": 16, "grad_accum": 2})),
        tmp_path / "accum",
    )
    a, b = (
        weights(final_checkpoint(tmp_path / "big")),
        weights(final_checkpoint(tmp_path / "accum")),
    )
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


def test_bf16_trains_on_cpu(tmp_path: Path) -> None:
    metrics = train(recipe_from_dict(tiny({"max_steps": 2, "precision": "bf16"})), tmp_path)
    assert math.isfinite(metrics["loss"])
    assert weights(final_checkpoint(tmp_path))["head.fc.weight"].dtype == torch.float32


def test_fp16_on_cpu_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        train(recipe_from_dict(tiny({"precision": "fp16", "device": "cpu"})), tmp_path)


def test_fine_tuning_starts_from_pretrained_weights_with_a_fresh_head(tmp_path: Path) -> None:
    train(recipe_from_dict(tiny()), tmp_path / "base")
    base = weights(tmp_path / "base" / "best")
    recipe = tiny(train={"max_steps": 1, "eval_every": 1, "checkpoint_every": 1})
    recipe["model"]["pretrained"] = str(tmp_path / "base")
    recipe["data"]["options"] = {**recipe["data"]["options"], "num_classes": 4}
    recipe["optim"] = {"lr": 2e-3, "layer_decay": 0.5}
    recipe["schedule"] = {"name": "constant"}
    trainer = Trainer(recipe_from_dict(recipe), tmp_path / "tuned")
    start = trainer.model.state_dict()
    assert start["head.fc.weight"].shape == (4, 32)  # new classes: a fresh head
    for key in ("adapter.pos_embed", "core.blocks.0.attn.qkv.weight", "core.norm.weight"):
        assert torch.equal(start[key], base[key]), key
    lrs = {g["lr_scale"] for g in trainer.optimizer.param_groups}
    assert lrs == {0.25, 0.5, 1.0}  # adapter, the one block, the head
    trainer.fit()


def test_layer_decay_on_an_encoder_decoder_is_a_config_error(tmp_path: Path) -> None:
    recipe = {
        "task": "translation", "model": {"name": "test_mt_transformer"},
        "optim": {"layer_decay": 0.75}, "train": {"max_steps": 1},
    }  # fmt: skip
    with pytest.raises(ConfigError, match="optim.layer_decay: .*one stack of blocks"):
        Trainer(recipe_from_dict(recipe), tmp_path / "run")


def test_ema_weights_are_evaluated_and_saved_as_best(tmp_path: Path) -> None:
    train(recipe_from_dict(tiny({"max_steps": 4, "ema_decay": 0.5})), tmp_path)
    state = load_trainer_state(final_checkpoint(tmp_path) / "trainer_state.pt")
    best = weights(tmp_path / "best")
    assert_bit_identical(best, {k: v for k, v in state["ema"]["module"].items() if k in best})
    assert not torch.equal(
        best["head.fc.weight"], weights(final_checkpoint(tmp_path))["head.fc.weight"]
    )


# ---------------------------------------------------------------------------------------------
# Failures: NaN, resume errors, existing runs


def test_nan_loss_stops_and_keeps_the_last_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_cls = get_task("classification")
    loss, calls = task_cls.loss, []

    def nan_at_step_6(self: Any, model: Any, batch: Any) -> Any:
        calls.append(1)
        value, logs = loss(self, model, batch)
        return (value * math.nan if len(calls) == 6 else value), logs

    monkeypatch.setattr(task_cls, "loss", nan_at_step_6)
    with pytest.raises(TrainingError, match="loss is nan at step 6.*step_00000004"):
        train(recipe_from_dict(tiny()), tmp_path)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000004"]
    assert load_trainer_state(tmp_path / "checkpoints/step_00000004/trainer_state.pt")["step"] == 4


def test_resume_with_nothing_to_resume(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(recipe_from_dict(tiny()), tmp_path / "new", resume=True)


def test_resume_from_a_corrupt_checkpoint_names_the_file(tmp_path: Path) -> None:
    train(recipe_from_dict(tiny({"max_steps": 4})), tmp_path)
    state = tmp_path / "checkpoints/step_00000004/trainer_state.pt"
    state.write_bytes(state.read_bytes()[:100])
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError, match="trainer_state.pt"):
        train(recipe_from_dict(tiny({"max_steps": 8})), tmp_path, resume=True)
    assert snapshot(tmp_path) == before


def test_resume_with_another_model_names_the_file(tmp_path: Path) -> None:
    train(recipe_from_dict(tiny({"max_steps": 4})), tmp_path)
    before = snapshot(tmp_path)
    other = tiny({"max_steps": 8})
    other["model"]["overrides"]["dim"] = 48
    with pytest.raises(ConfigError, match="model.overrides.dim 48: its recipe .*config.yaml"):
        train(recipe_from_dict(other), tmp_path, resume=True)
    assert snapshot(tmp_path) == before
    (tmp_path / "config.yaml").unlink()  # a run without its recipe: the checkpoint says it
    with pytest.raises(CheckpointError, match="model.safetensors"):
        train(recipe_from_dict(other), tmp_path, resume=True)


def test_a_new_run_refuses_a_used_directory(tmp_path: Path) -> None:
    train(recipe_from_dict(tiny({"max_steps": 2})), tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match="already holds a run.*--resume"):
        train(recipe_from_dict(tiny({"max_steps": 2})), tmp_path)
    assert snapshot(tmp_path) == before


def test_resume_extends_a_finished_run(tmp_path: Path) -> None:
    train(recipe_from_dict(tiny({"max_steps": 4})), tmp_path)
    train(recipe_from_dict(tiny({"max_steps": 6})), tmp_path, resume=True)
    assert final_checkpoint(tmp_path).name == "step_00000006"
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["train"]["max_steps"] == 6


# ---------------------------------------------------------------------------------------------
# Data parallel


def test_two_processes_match_one(tmp_path: Path) -> None:
    """torchrun with 2 CPU processes: the same global batch gives the same loss as 1 process."""
    recipe = tiny({"max_steps": 4, "log_every": 1, "eval_every": 4, "checkpoint_every": 4})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "zoo",
        "train",
        str(path),
        "--out",
        str(tmp_path / "ddp"),
    ]
    ddp = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    train(recipe_from_dict(recipe), tmp_path / "one")
    out = ddp.communicate(timeout=180)[0].decode()
    assert ddp.returncode == 0, out
    one = [e for e in read_metrics(tmp_path / "one") if e["type"] == "train"]
    two = [e for e in read_metrics(tmp_path / "ddp") if e["type"] == "train"]
    assert [e["step"] for e in one] == [e["step"] for e in two] == [1, 2, 3, 4]
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
    assert sorted(p.name for p in (tmp_path / "ddp").rglob(".*")) == [".zoo.lock"]


# ---------------------------------------------------------------------------------------------
# Loops that must end: resumed positions, tampered trainer states


def test_resume_with_a_larger_batch_goes_on_with_the_next_epoch(
    tmp_path: Path, deadline: None, caplog: pytest.LogCaptureFixture
) -> None:
    # 96 samples in batches of 16: step 5 stops after batch 5 of 6; batches of 48 make 2
    train(recipe_from_dict(tiny({"max_steps": 5, "checkpoint_every": 5})), tmp_path)
    with caplog.at_level(logging.WARNING, logger="zoo.engine"):
        train(recipe_from_dict(tiny({"max_steps": 8, "batch_size": 48})), tmp_path, resume=True)
    assert "past the end of this epoch's 2 batches" in caplog.text
    state = load_trainer_state(final_checkpoint(tmp_path) / "trainer_state.pt")
    assert (state["step"], state["epoch"], state["batch"]) == (8, 2, 1)


def _tamper(run: Path, **values: Any) -> Path:
    path = final_checkpoint(run) / "trainer_state.pt"
    state = load_trainer_state(path)
    state.update(values)
    torch.save(state, path)
    return path


@pytest.mark.parametrize(
    "values, message",
    [
        ({"step": -3}, "'step' is -3, not a count >= 0"),
        ({"batch": -1}, "'batch' is -1"),
        ({"epoch": 1.5}, "'epoch' is 1.5"),
        ({"best_step": 99}, r"'best_step' is 99, not a step in \[0, 4\]"),
        ({"best_metric": math.nan}, "'best_metric' is nan"),
        ({"rng": []}, "no random number generator state"),
    ],
    ids=["negative_step", "negative_batch", "float_epoch", "best_step", "nan_best", "no_rng"],
)
def test_a_tampered_trainer_state_is_refused_before_anything_is_written(
    tmp_path: Path, deadline: None, values: dict[str, Any], message: str
) -> None:
    train(recipe_from_dict(tiny({"max_steps": 4})), tmp_path)
    path = _tamper(tmp_path, **values)
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError, match=f"trainer state file {path}.*{message}"):
        train(recipe_from_dict(tiny({"max_steps": 8})), tmp_path, resume=True)
    assert snapshot(tmp_path) == before  # metrics.jsonl included


def test_a_huge_saved_batch_index_starts_the_next_epoch(tmp_path: Path, deadline: None) -> None:
    train(recipe_from_dict(tiny({"max_steps": 4})), tmp_path)
    _tamper(tmp_path, batch=10**12)
    train(recipe_from_dict(tiny({"max_steps": 6})), tmp_path, resume=True)
    state = load_trainer_state(final_checkpoint(tmp_path) / "trainer_state.pt")
    assert (state["step"], state["epoch"], state["batch"]) == (6, 1, 2)
    steps = [e["step"] for e in read_metrics(tmp_path) if e["type"] == "train"]
    assert steps == [2, 4, 6]


# ---------------------------------------------------------------------------------------------
# Settings refused before the first step (and before any file is written)


def test_an_unknown_eval_metric_is_refused_before_the_run_starts(tmp_path: Path) -> None:
    message = (
        r"eval.metric 'top_1' is not among the classification task's metrics "
        r"\(top1, top5, loss\); did you mean 'top1'"
    )
    with pytest.raises(ConfigError, match=message):
        Trainer(recipe_from_dict(tiny(eval={"metric": "top_1"})), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_translation_metric_is_checked_before_the_vocabulary_is_written(tmp_path: Path) -> None:
    recipe = {"task": "translation", "model": {"name": "test_mt_transformer"},
              "eval": {"metric": "sacrebleu"}, "train": {"max_steps": 1}}  # fmt: skip
    with pytest.raises(ConfigError, match="eval.metric 'sacrebleu'"):
        Trainer(recipe_from_dict(recipe), tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("lr", [math.inf, math.nan, -1e-3])
def test_a_bad_learning_rate_set_in_python_is_refused_before_the_run_starts(
    tmp_path: Path, lr: float
) -> None:
    recipe = recipe_from_dict(tiny())
    recipe.optim.lr = lr
    with pytest.raises(ConfigError, match="key 'optim.lr' in the recipe must be"):
        Trainer(recipe, tmp_path / "run")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------
# Weights that hold NaN are neither saved nor named as good


def _poison_at(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """The optimizer step that makes step ``step`` leaves a NaN weight behind (its loss was
    finite: the update is what diverged)."""
    optimizer_step = Trainer._optimizer_step

    def poisoned(self: Trainer) -> float:
        norm = optimizer_step(self)
        if self.pos.step + 1 == step:
            with torch.no_grad():
                self.model.head.fc.weight[0, 0] = math.nan
        return norm

    monkeypatch.setattr(Trainer, "_optimizer_step", poisoned)


def test_nan_weights_are_not_saved_and_the_last_good_checkpoint_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _poison_at(monkeypatch, 4)
    recipe = tiny({"eval_every": 2, "checkpoint_every": 2})
    message = (
        r"weights hold NaN or inf \(key 'head.fc.weight'\) after step 4.*last good "
        r"checkpoint is .*step_00000002"
    )
    with pytest.raises(TrainingError, match=message):
        train(recipe_from_dict(recipe), tmp_path)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000002"]
    assert json.loads((tmp_path / "best" / "config.json").read_text())["step"] == 2
    assert all(torch.isfinite(t).all() for t in weights(tmp_path / "best").values())


def test_after_a_nan_loss_a_checkpoint_with_nan_weights_is_not_named_good(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint on disk whose weights are NaN (written by an older version) is passed
    over: the message names the newest one whose weights are finite."""
    from safetensors.torch import save_file

    task_cls, save = get_task("classification"), Trainer.save_checkpoint
    loss, calls = task_cls.loss, []

    def nan_at_step_6(self: Any, model: Any, batch: Any) -> Any:
        calls.append(1)
        value, logs = loss(self, model, batch)
        return (value * math.nan if len(calls) == 6 else value), logs

    def save_then_spoil(self: Trainer) -> None:
        save(self)
        if self.pos.step == 4:
            path = tmp_path / "checkpoints/step_00000004/model.safetensors"
            save_file({k: v * math.nan for k, v in load_file(path).items()}, path)

    monkeypatch.setattr(task_cls, "loss", nan_at_step_6)
    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_spoil)
    with pytest.raises(TrainingError, match="loss is nan at step 6.*step_00000002"):
        train(recipe_from_dict(tiny({"checkpoint_every": 2})), tmp_path)


def test_model_pretrained_of_another_task_names_the_setting(tmp_path: Path) -> None:
    from zoo import create_model, save_pretrained

    save_pretrained(create_model("test_mt_transformer"), tmp_path / "mt")
    recipe = tiny()
    recipe["model"]["pretrained"] = str(tmp_path / "mt")
    with pytest.raises(
        CheckpointError,
        match=r"^model.pretrained: .*mt holds a translation model "
        r"\(test_mt_transformer\), not a classification",
    ):
        Trainer(recipe_from_dict(recipe), tmp_path / "run")
