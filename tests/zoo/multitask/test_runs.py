"""One task of a multitask run (zoo/multitask/runs.py): written out by extraction, and picked
by zoo eval and the predict commands with --task."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import zoo
from zoo.cli import main
from zoo.multitask.runs import extract


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

