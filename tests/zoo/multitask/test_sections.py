"""Bad multitask recipes (zoo/multitask/sections.py): one sentence naming the section, from the
Python API and from the CLI (exit status 2), and a failed start leaves nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.zoo.multitask.helpers import tiny_multi, write
from zoo.cli import main
from zoo.config import ConfigError, recipe_from_dict
from zoo.engine import train


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
