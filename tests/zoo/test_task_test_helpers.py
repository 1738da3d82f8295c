"""The task tests build recipes and models without zoo (tests/tasks/recipes.py); these checks
keep what they build equal to zoo's recipe defaults and ``test_*`` variants."""

from __future__ import annotations

import dataclasses

import pytest

import zoo
from tests.tasks.recipes import DATA, EVAL, TINY, TRAIN, tiny_config
from zoo.config import DataSection, EvalSection, TrainSection


@pytest.mark.parametrize(
    "defaults, section",
    [(DATA, DataSection), (TRAIN, TrainSection), (EVAL, EvalSection)],
    ids=["data", "train", "eval"],
)
def test_task_test_recipes_have_the_schema_defaults(defaults: dict, section: type) -> None:
    schema = dataclasses.asdict(section())
    assert {key: schema[key] for key in defaults} == defaults


VARIANTS = {
    "classification": "test_vit",
    "translation": "test_mt_transformer",
    "speech_recognition": "test_asr_transformer",
    "language_modeling": "test_gpt",
    "masked_lm": "test_bert",
    "masked_image": "test_mae",
    "masked_speech": "test_masked_asr",
}


def test_every_task_with_a_test_variant_has_a_tiny_model_for_its_tests() -> None:
    assert set(TINY) == {zoo.get_config(name).task for name in zoo.list_models("test_*")}


@pytest.mark.parametrize("task", sorted(VARIANTS))
def test_task_test_models_are_the_test_variants(task: str) -> None:
    name = VARIANTS[task]
    assert tiny_config(task) == zoo.get_config(name)
    assert tiny_config(task, depth=1) == zoo.get_config(name, depth=1)  # core settings routed
