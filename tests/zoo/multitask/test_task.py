"""Training a multitask run (zoo/multitask/task.py through the engine): per-task metrics and
steps, what a step updates, the plumbing adding nothing to a one-task run, per-task learning
rates, exact resume (in process, and after kill -9) and data parallelism."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.zoo.helpers import (
    ROOT,
    crash_and_resume,
    kill_after_checkpoint,
    weights,
    zoo_process,
)
from tests.zoo.multitask.helpers import SECTIONS, TINY_CORE, tiny_multi, write
from zoo.config import recipe_from_dict
from zoo.engine import Trainer, train
from zoo.records import read_metrics


def test_evaluation_reports_every_task_under_its_name(trained) -> None:
    run, metrics = trained
    for key in ("vision/top1", "vision/top5", "translation/bleu", "translation/chrf",
                "speech/cer", "speech/wer", "score", "best_score"):
        assert key in metrics, key
    evals = [e for e in read_metrics(run) if e["type"] == "eval"]
    assert [e["step"] for e in evals] == [5, 10] and all("speech/cer" in e for e in evals)
    # the score: mean of top1/100, bleu/100 and 2 - cer/100 (no references given; all percent)
    expected = (metrics["vision/top1"] / 100 + metrics["translation/bleu"] / 100
                + 2 - metrics["speech/cer"] / 100) / 3
    assert metrics["score"] == pytest.approx(expected)


def test_metrics_jsonl_names_the_task_of_every_step(trained) -> None:
    run, _ = trained
    steps = [e for e in read_metrics(run) if e["type"] == "train"]
    assert [e["step"] for e in steps] == list(range(1, 11))
    tasks = [e["task"] for e in steps]
    # the weighted schedule: exactly each section's steps
    assert sorted(tasks) == sorted(["vision"] * 4 + ["translation"] * 3 + ["speech"] * 3)
    for e in steps:
        assert e[f"{e['task']}/steps"] == 1 and e[f"{e['task']}/loss"] == e["loss"]


def test_a_step_updates_the_core_and_only_the_sampled_tasks_parts(tmp_path: Path) -> None:
    trainer = Trainer(recipe_from_dict(tiny_multi(max_steps=1)), tmp_path / "run")
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    after = trainer.model.state_dict()
    trained_task = read_metrics(tmp_path / "run")[0]["task"]
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("core.") for k in changed)
    for name in SECTIONS:
        own = {k for k in before if k.startswith(f"tasks.{name}.") and ".core." not in k}
        if name == trained_task:
            assert {k for k in own if ".adapter." in k or ".head." in k} & changed
        else:
            assert not own & changed, f"{name} was not sampled but changed"


def test_a_one_task_run_trains_exactly_as_the_single_task_run(tmp_path: Path) -> None:
    """The multitask plumbing adds nothing: same init, batches, loss and updates."""
    multi = tiny_multi(("vision",), (6,), clip_grad=None)  # clipping sums norms in model order
    single = {
        "task": "classification",
        "model": {"name": "test_vit", "overrides": {k: v for k, v in TINY_CORE.items()
                                                   if k != "size"}},
        **{k: SECTIONS["vision"][k] for k in ("data",)},
        "schedule": multi["schedule"],
        "train": {**multi["train"], "batch_size": 16},
    }
    train(recipe_from_dict(multi), tmp_path / "multi")
    train(recipe_from_dict(single), tmp_path / "single")
    a = weights(tmp_path / "single/checkpoints/step_00000006")
    b = weights(tmp_path / "multi/checkpoints/step_00000006")
    b = {k.removeprefix("tasks.vision."): v for k, v in b.items() if not k.startswith("core.")}
    b.update({k: v for k, v in weights(tmp_path / "multi/checkpoints/step_00000006").items()
              if k.startswith("core.")})
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_lr_mult_gives_a_tasks_own_parameters_their_learning_rate(tmp_path: Path) -> None:
    recipe = tiny_multi(("vision", "speech"), (1, 1))
    recipe["multitask"]["tasks"][1]["lr_mult"] = 0.5
    recipe["optim"] = {"lr": 1e-3}
    trainer = Trainer(recipe_from_dict(recipe), tmp_path / "run")
    trainer.run.close()
    lrs = {n: g["lr"] for g in trainer.optimizer.param_groups for n in g["param_names"]}
    assert lrs["core.blocks.0.attn.qkv.weight"] == pytest.approx(1e-3)
    assert lrs["tasks.vision.head.fc.weight"] == pytest.approx(1e-3)
    assert lrs["tasks.speech.head.1.weight"] == pytest.approx(5e-4)


def resumable() -> dict[str, Any]:
    """Dropout in the core and accumulation: every RNG and the task streams must resume."""
    recipe = tiny_multi(steps=(4, 3, 3), grad_accum=2, checkpoint_every=3, eval_every=5,
                        keep_last=2, ema_decay=0.9)
    recipe["multitask"]["core"]["dropout"] = 0.1
    return recipe


def test_resume_in_process_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = recipe_from_dict(resumable())
    train(recipe, tmp_path / "full")
    crash_and_resume(recipe, tmp_path / "cut", 4, monkeypatch)
    for name in ("checkpoints/step_00000010", "best"):
        a, b = weights(tmp_path / "full" / name), weights(tmp_path / "cut" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    tasks = lambda run: [e["task"] for e in read_metrics(run) if e["type"] == "train"]
    assert tasks(tmp_path / "full") == tasks(tmp_path / "cut")


@pytest.mark.slow  # four `zoo train` processes: about a minute on a busy 2-core machine
def test_sigkill_and_resume_is_bit_identical(tmp_path: Path) -> None:
    """kill -9 a real three-task `zoo train` twice, resume it each time, and compare the end
    with an uninterrupted run's, bit for bit."""
    recipe = resumable()
    recipe["train"].update(max_steps=30, checkpoint_every=2, eval_every=15)
    recipe["multitask"]["tasks"][0]["steps"] = 18
    path = write(tmp_path / "tiny.yaml", recipe)
    full, cut = tmp_path / "full", tmp_path / "cut"
    uninterrupted = zoo_process("train", str(path), "--out", str(full))
    first = kill_after_checkpoint(zoo_process("train", str(path), "--out", str(cut)), cut, 0)
    second = kill_after_checkpoint(zoo_process("train", str(path), "--out", str(cut), "--resume"),
                                    cut, first)
    assert 0 < first < second < 30
    for proc in (zoo_process("train", str(path), "--out", str(cut), "--resume"), uninterrupted):
        out = proc.communicate(timeout=240)[0].decode()
        assert proc.returncode == 0, out
    for name in ("checkpoints/step_00000030", "best"):
        a, b = weights(full / name), weights(cut / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name




@pytest.mark.slow  # torchrun with two processes
def test_two_processes_train_as_one(tmp_path: Path) -> None:
    """DDP: every rank trains the same task at each step (the schedule is a function of the
    step), the other tasks' parts are unused, and the global batch gives one process's loss."""
    recipe = tiny_multi(("vision", "speech"), (2, 2), eval_every=4, checkpoint_every=4)
    path = write(tmp_path / "tiny.yaml", recipe)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "zoo", "train", str(path), "--out", str(tmp_path / "ddp")]
    ddp = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
    train(recipe_from_dict(recipe), tmp_path / "one")
    out = ddp.communicate(timeout=300)[0].decode()
    assert ddp.returncode == 0, out
    one = [e for e in read_metrics(tmp_path / "one") if e["type"] == "train"]
    two = [e for e in read_metrics(tmp_path / "ddp") if e["type"] == "train"]
    assert [e["task"] for e in one] == [e["task"] for e in two]
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
