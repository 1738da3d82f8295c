"""Opening a run for inspection, and saving a changed model beside it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.zoo.test_engine import tiny
from zoo.config import recipe_from_dict
from zoo.engine import train
from zoo.interpret.runs import open_run, save_changed_model
from zoo.pretrained import load_pretrained


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("run")
    train(recipe_from_dict(tiny({"max_steps": 2, "eval_every": 2, "checkpoint_every": 2})),
          folder)
    return folder


def test_a_budget_of_batches_is_spread_over_the_split(run: Path) -> None:
    opened = open_run(run)
    assert opened.metric == "top1" and opened.model_dir == run / "best"
    every = list(opened.loader("val", 4).batch_sampler)  # 32 samples: 8 batches
    picked = list(opened.loader("val", 4, max_batches=3).batch_sampler)
    assert picked == [every[0], every[4], every[7]]
    with pytest.raises(ValueError, match="split 'dev' does not exist"):
        opened.loader("dev")
    with pytest.raises(ValueError, match="--max-batches must be at least 1"):
        opened.loader("val", max_batches=0)


def test_a_changed_model_is_saved_with_its_recipe_and_a_note(run: Path, tmp_path: Path):
    opened = open_run(run)
    out = save_changed_model(opened.model, opened.model_dir, tmp_path / "copy",
                             {"pruned": {"method": "test"}}, opened.run_dir)
    assert yaml.safe_load((out / "config.yaml").read_text())["task"] == "classification"
    assert load_pretrained(out).cfg == opened.model.cfg
    with pytest.raises(ValueError, match="already exists"):
        save_changed_model(opened.model, opened.model_dir, out, {}, opened.run_dir)
