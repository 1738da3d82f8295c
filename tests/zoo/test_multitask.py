"""Multitask runs: one core, three tasks (zoo/multitask). Training, resume, per-task metrics,
extraction, the commands on a multitask run, and the recipe errors.

The runs train the test_* models on the built-in data with the "test" core shrunk to one layer
of width 32, a few steps each.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

import zoo
from zoo.cli import main
from zoo.config import ConfigError, recipe_from_dict
from zoo.engine import Trainer, train
from zoo.multitask.runs import extract
from zoo.records import read_metrics

ROOT = Path(__file__).resolve().parents[2]

TINY_CORE = {"size": "test", "depth": 1, "dim": 32, "num_heads": 2}
SECTIONS = {
    "vision": {
        "task": "classification", "model": {"name": "test_vit"},
        "data": {"dataset": "synthetic",
                 "options": {"num_train": 64, "num_val": 16, "num_test": 16, "native_size": 16}},
        "train": {"batch_size": 16},
    },
    "translation": {
        "task": "translation", "model": {"name": "test_mt_transformer"},
        "data": {"dataset": "synthetic", "options": {"num_samples": 200, "num_eval": 8}},
        "tokenizer": {"vocab_size": 120},
        "train": {"batch_size": 256},
    },
    "speech": {
        "task": "speech_recognition",
        "model": {"name": "test_asr_transformer", "overrides": {"spec_augment": False}},
        "data": {"dataset": "synthetic", "options": {"train_utterances": 32, "eval_utterances": 8}},
        "train": {"batch_size": 8},
    },
}  # fmt: skip


def tiny_multi(names: tuple[str, ...] = ("vision", "translation", "speech"),
               steps: tuple[int, ...] = (4, 3, 3), **train_options: Any) -> dict[str, Any]:
    """A multitask recipe of the named sections; ``max_steps`` is the sum of their steps."""
    tasks = [{"name": n, **copy.deepcopy(SECTIONS[n]), "steps": s} for n, s in zip(names, steps)]
    return {
        "task": "multitask",
        "model": {"name": "multitask"},
        "multitask": {"core": dict(TINY_CORE), "tasks": tasks},
        "schedule": {"warmup_steps": 1},
        "train": {"max_steps": sum(steps), "eval_every": 5, "checkpoint_every": 5,
                  "log_every": 1, **train_options},
    }  # fmt: skip


def write(path: Path, recipe: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(recipe))
    return path


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    """One tiny three-task run, shared by the tests that only read it."""
    run = tmp_path_factory.mktemp("multi") / "run"
    metrics = train(recipe_from_dict(tiny_multi()), run)
    return run, metrics


# ---------------------------------------------------------------------------------------------
# Training


def test_evaluation_reports_every_task_under_its_name(trained) -> None:
    run, metrics = trained
    for key in ("vision/top1", "vision/top5", "translation/bleu", "translation/chrf",
                "speech/cer", "speech/wer", "score", "best_score"):
        assert key in metrics, key
    evals = [e for e in read_metrics(run) if e["type"] == "eval"]
    assert [e["step"] for e in evals] == [5, 10] and all("speech/cer" in e for e in evals)
    # the score: mean of top1/100, bleu/100 and 2 - cer (no references given)
    expected = (metrics["vision/top1"] / 100 + metrics["translation/bleu"] / 100
                + 2 - metrics["speech/cer"]) / 3
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


class Interrupt(Exception):
    pass


def resumable() -> dict[str, Any]:
    """Dropout in the core and accumulation: every RNG and the task streams must resume."""
    recipe = tiny_multi(steps=(4, 3, 3), grad_accum=2, checkpoint_every=3, eval_every=5,
                        keep_last=2, ema_decay=0.9)
    recipe["multitask"]["core"]["dropout"] = 0.1
    return recipe


def test_resume_in_process_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = recipe_from_dict(resumable())
    train(recipe, tmp_path / "full")
    after_step = Trainer._after_step

    def crash_at_step_4(self: Trainer) -> None:
        after_step(self)
        if self.pos.step == 4:
            raise Interrupt

    monkeypatch.setattr(Trainer, "_after_step", crash_at_step_4)
    with pytest.raises(Interrupt):
        train(recipe, tmp_path / "cut")
    monkeypatch.undo()
    train(recipe, tmp_path / "cut", resume=True)
    for name in ("checkpoints/step_00000010", "best"):
        a, b = weights(tmp_path / "full" / name), weights(tmp_path / "cut" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    tasks = lambda run: [e["task"] for e in read_metrics(run) if e["type"] == "train"]
    assert tasks(tmp_path / "full") == tasks(tmp_path / "cut")


def _zoo(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "zoo", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _kill_after_checkpoint(proc: subprocess.Popen, run: Path, past: int) -> int:
    """SIGKILL ``proc`` once it has a checkpoint beyond step ``past``; return that step."""
    deadline = time.monotonic() + 120
    newest = lambda: max((int(p.name[5:]) for p in (run / "checkpoints").glob("step_*")),
                         default=0)
    while newest() <= past and proc.poll() is None:
        assert time.monotonic() < deadline, "no new checkpoint within 120 s"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    return newest()


@pytest.mark.slow  # four `zoo train` processes: about a minute on a busy 2-core machine
def test_sigkill_and_resume_is_bit_identical(tmp_path: Path) -> None:
    """kill -9 a real three-task `zoo train` twice, resume it each time, and compare the end
    with an uninterrupted run's, bit for bit."""
    recipe = resumable()
    recipe["train"].update(max_steps=30, checkpoint_every=2, eval_every=15)
    recipe["multitask"]["tasks"][0]["steps"] = 18
    path = write(tmp_path / "tiny.yaml", recipe)
    full, cut = tmp_path / "full", tmp_path / "cut"
    uninterrupted = _zoo("train", str(path), "--out", str(full))
    first = _kill_after_checkpoint(_zoo("train", str(path), "--out", str(cut)), cut, 0)
    second = _kill_after_checkpoint(_zoo("train", str(path), "--out", str(cut), "--resume"),
                                    cut, first)
    assert 0 < first < second < 30
    for proc in (_zoo("train", str(path), "--out", str(cut), "--resume"), uninterrupted):
        out = proc.communicate(timeout=240)[0].decode()
        assert proc.returncode == 0, out
    for name in ("checkpoints/step_00000030", "best"):
        a, b = weights(full / name), weights(cut / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


# ---------------------------------------------------------------------------------------------
# The model


def test_the_model_holds_one_core_and_each_tasks_own_model() -> None:
    entries = [{"name": "vision", "model": "test_vit"},
               {"name": "translation", "model": "test_mt_transformer"}]
    model = zoo.create_model("multitask", core="test", tasks=entries)
    single = [zoo.create_model("test_vit"), zoo.create_model("test_mt_transformer")]
    core = sum(p.numel() for p in model.core.parameters())
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(model) == sum(count(m) for m in single) - core
    assert all(m.core is model.core for m in model.tasks.values())
    images = torch.randn(2, 3, 32, 32)
    logits = model(images, task="vision")
    assert logits.shape == (2, 10) and torch.equal(logits, model.tasks["vision"](images))
    keys = model.state_dict().keys()
    assert "core.blocks.0.attn.qkv.weight" in keys
    assert "tasks.translation.decoder.norm.weight" in keys


def test_extracting_a_task_gives_the_multitask_models_outputs(trained, tmp_path: Path) -> None:
    run, _ = trained
    multi = zoo.load_pretrained(run / "best")
    for name in ("translation", "speech"):
        out = extract(run, name, tmp_path / name)
        single = zoo.load_pretrained(out)
        assert type(single) is type(multi.tasks[name])
        gen = torch.Generator().manual_seed(0)
        if name == "translation":
            src = torch.randint(3, single.cfg.vocab_size, (2, 7), generator=gen)
            tgt = torch.randint(3, single.cfg.vocab_size, (2, 5), generator=gen)
            args = (src, tgt)
        else:
            args = (torch.randn(2, 4000, generator=gen), torch.tensor([4000, 3000]))
        with torch.no_grad():
            mine = single(*args)
            theirs = multi(*args, task=name)
        mine, theirs = (mine.logits, theirs.logits) if name == "speech" else (mine, theirs)
        assert torch.equal(mine, theirs)
    assert (tmp_path / "translation/spm.model").is_file()
    assert (tmp_path / "translation/config.yaml").is_file()


# ---------------------------------------------------------------------------------------------
# Commands on a multitask run


def test_eval_of_one_task(trained, capsys: pytest.CaptureFixture) -> None:
    run, metrics = trained
    assert main(["eval", str(run), "--task", "speech", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "speech/cer" in out and "vision/top1" not in out
    assert f"speech/cer: {metrics['speech/cer']:.4f}" in out


def test_predict_commands_pick_their_tasks_section(trained, tmp_path: Path, capsys) -> None:
    run, _ = trained
    assert main(["translate", str(run), "We buy twenty-one cats.", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip()
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (16, 16), (200, 10, 10)).save(image)
    assert main(["classify", str(run), str(image), "--task", "vision", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.startswith(f"{image}: ")
    assert main(["classify", str(run), str(image), "--task", "speech", "--device", "cpu"]) == 2
    assert "task section 'speech' of" in capsys.readouterr().err


def test_extract_refuses_an_unknown_section(trained, tmp_path: Path, capsys) -> None:
    run, _ = trained
    assert main(["extract", str(run), "--task", "audio", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "no task section 'audio'" in err and "speech (speech_recognition)" in err
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------------------------
# Bad recipes: one sentence naming the section


def _start_error(recipe: dict[str, Any], tmp_path: Path) -> str:
    with pytest.raises((ConfigError, ValueError, FileNotFoundError)) as info:
        train(recipe_from_dict(recipe), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # a failed start leaves nothing
    return str(info.value)


def test_a_task_listed_twice_is_an_error(tmp_path: Path) -> None:
    recipe = tiny_multi(("vision", "speech"), (1, 1))
    recipe["multitask"]["tasks"][1]["name"] = "vision"
    assert "task section 'vision' is listed twice" in _start_error(recipe, tmp_path)


def test_a_section_whose_model_has_another_core_size_is_an_error(tmp_path: Path) -> None:
    recipe = tiny_multi(("vision", "speech"), (1, 1))
    recipe["multitask"]["tasks"][1]["model"]["name"] = "asr_transformer_ctc_mini"
    message = _start_error(recipe, tmp_path)
    assert message.startswith("task section 'speech': model asr_transformer_ctc_mini has a core")
    assert "dim=128" in message and "dim=64" in message


def test_a_missing_data_root_names_the_section(tmp_path: Path) -> None:
    recipe = tiny_multi(("vision", "speech"), (1, 1))
    recipe["multitask"]["tasks"][0]["data"] = {"dataset": "fashion_mnist",
                                               "root": str(tmp_path / "nowhere")}
    message = _start_error(recipe, tmp_path)
    assert message.startswith("task section 'vision': data root") and "nowhere" in message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda r: r["multitask"]["tasks"][0]["data"].update(rot="x"),
         "unknown key 'data.rot' in task section 'vision'; did you mean 'data.root'?"),
        (lambda r: r["multitask"]["tasks"][0]["train"].update(max_steps=3),
         "train.max_steps in task section 'vision' is a setting of the whole run"),
        (lambda r: r["multitask"]["tasks"][0].update(steps=0),
         "key 'steps' in task section 'vision' expects an int >= 1"),
        (lambda r: r["multitask"]["tasks"][0]["model"].update(overrides={"depth": 3}),
         "model.overrides.depth in task section 'vision' is a core setting"),
        (lambda r: r["multitask"]["tasks"][1].update(model={"name": "test_vit"}),
         "task section 'speech' trains speech_recognition, but model test_vit is a classification"),
        (lambda r: r["multitask"].update(core="huge"), "multitask.core: unknown core size 'huge'"),
        (lambda r: r.update(data={"dataset": "fashion_mnist"}),
         "a multitask run's data (and tokenizer, augment, loss, decode) belong in its task"),
        (lambda r: r["multitask"]["tasks"][1].pop("steps"),
         "multitask.sampling 'weighted': the weighted schedule needs steps"),
        (lambda r: r.update(task="classification"),
         "a 'multitask' section goes with task: multitask"),
    ],
)
def test_bad_sections_are_one_sentence(tmp_path: Path, change, expected) -> None:
    recipe = tiny_multi(("vision", "speech"), (1, 1))
    change(recipe)
    assert expected in _start_error(recipe, tmp_path)


def test_the_cli_reports_a_bad_section_with_exit_status_2(tmp_path: Path, capsys) -> None:
    recipe = tiny_multi(("vision", "speech"), (1, 1))
    recipe["multitask"]["tasks"][1]["name"] = "vision"
    path = write(tmp_path / "bad.yaml", recipe)
    assert main(["train", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "task section 'vision' is listed twice" in err


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
