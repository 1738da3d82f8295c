"""Recipes: YAML -> typed dataclasses, dotted overrides, and one clear sentence per mistake."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import yaml

from zoo.config import (
    ConfigError,
    Recipe,
    apply_overrides,
    load_recipe,
    recipe_from_dict,
    recipe_to_dict,
    save_recipe,
)

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "configs" / "demo" / "vision.yaml"

MINIMAL = {"task": "classification", "model": {"name": "test_vit"}, "train": {"max_steps": 10}}


def _write(tmp_path: Path, text: str, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _error(d: dict, source: str = "x.yaml") -> str:
    with pytest.raises(ConfigError) as info:
        recipe_from_dict(d, source=source)
    return str(info.value)


def _with(**sections: dict) -> dict:
    d = copy.deepcopy(MINIMAL)
    for name, section in sections.items():
        d[name] = {**d.get(name, {}), **section} if isinstance(section, dict) else section
    return d


# --- loading and round trip -------------------------------------------------------------------


def test_demo_recipe_loads():
    recipe = load_recipe(DEMO)
    assert recipe.task == "classification"
    assert recipe.model.name == "test_vit"
    assert recipe.model.overrides == {"num_classes": 10}
    assert recipe.data.dataset == "synthetic"
    assert recipe.train.max_steps is not None and recipe.train.max_steps <= 1000  # a demo
    assert recipe.schedule.warmup_steps < recipe.train.max_steps


def test_defaults_fill_missing_sections():
    recipe = recipe_from_dict(MINIMAL)
    assert recipe.data.dataset == "synthetic" and recipe.data.val_fraction == 0.1
    assert recipe.optim.betas == (0.9, 0.999)
    assert recipe.train.precision == "fp32" and recipe.train.clip_grad == 1.0
    assert recipe.eval.metric is None and recipe.out_dir is None


def test_round_trip_through_yaml(tmp_path):
    recipe = load_recipe(DEMO, ["optim.betas=[0.9, 0.98]", "data.options={noise: 0.1}"])
    out = tmp_path / "run" / "recipe.yaml"
    save_recipe(recipe, out)
    assert load_recipe(out) == recipe
    assert recipe_from_dict(recipe_to_dict(recipe)) == recipe
    assert [p.name for p in out.parent.iterdir()] == ["recipe.yaml"]  # no temp file left


def test_to_dict_is_plain_yaml():
    d = recipe_to_dict(recipe_from_dict(MINIMAL))
    assert d["optim"]["betas"] == [0.9, 0.999]  # tuple -> list, so safe_dump works
    assert yaml.safe_load(yaml.safe_dump(d)) == d


def test_save_overwrites_atomically(tmp_path):
    out = tmp_path / "recipe.yaml"
    out.write_text("old")
    save_recipe(recipe_from_dict(MINIMAL), out)
    assert load_recipe(out) == recipe_from_dict(MINIMAL)


def test_scientific_notation_is_a_float(tmp_path):
    path = _write(tmp_path, yaml.safe_dump(MINIMAL) + "optim: {lr: 3e-4, eps: 1E-6}\n")
    recipe = load_recipe(path)
    assert recipe.optim.lr == pytest.approx(3e-4) and isinstance(recipe.optim.lr, float)
    assert recipe.optim.eps == pytest.approx(1e-6)


def test_empty_section_means_defaults():
    assert recipe_from_dict(_with(optim=None)).optim.lr == 1e-3


# --- errors: files ----------------------------------------------------------------------------


def test_config_error_is_value_error():
    assert issubclass(ConfigError, ValueError)


def test_missing_file_names_path(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="not found") as info:
        load_recipe(path)
    assert str(path) in str(info.value)


def test_bad_yaml_names_file_and_line(tmp_path):
    path = _write(tmp_path, "task: classification\nmodel:\n  name: [test_vit\n")
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    msg = str(info.value)
    assert str(path) in msg and "line 4" in msg  # the unclosed bracket is seen at end of file
    path = _write(tmp_path, "task: classification\nmodel: name: x\n")
    with pytest.raises(ConfigError, match="line 2"):
        load_recipe(path)


def test_duplicate_key_is_an_error(tmp_path):
    path = _write(tmp_path, "task: classification\noptim:\n  lr: 1\n  lr: 2\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'lr'") as info:
        load_recipe(path)
    assert "line 4" in str(info.value)


@pytest.mark.parametrize("text", ["", "# only a comment\n"])
def test_empty_file(tmp_path, text):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match="empty") as info:
        load_recipe(path)
    assert str(path) in str(info.value)


def test_top_level_must_be_mapping(tmp_path):
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_recipe(_write(tmp_path, "- a\n- b\n"))


# --- errors: keys -----------------------------------------------------------------------------


def test_unknown_key_suggests_nearest(tmp_path):
    path = _write(tmp_path, yaml.safe_dump(_with(optim={"lrr": 0.1})))
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    assert str(info.value) == f"unknown key 'optim.lrr' in {path}; did you mean 'optim.lr'?"


def test_unknown_top_level_key():
    msg = _error({**MINIMAL, "trian": {}})
    assert "'trian'" in msg and "did you mean 'train'?" in msg


def test_unknown_key_without_close_match_lists_valid_keys():
    msg = _error(_with(schedule={"zzzzzz": 1}))
    assert "'schedule.zzzzzz'" in msg and "valid keys: name, warmup_steps, min_lr_ratio" in msg


def test_missing_required_keys():
    assert "missing required key 'task'" in _error({"model": {"name": "m"}})
    d = {**MINIMAL, "model": {"overrides": {}}}
    assert "missing required key 'model.name'" in _error(d)


def test_free_form_mappings_accept_any_key():
    recipe = recipe_from_dict(
        _with(model={"overrides": {"depth": 2, "anything": [1]}}, data={"options": {"k": None}})
    )
    assert recipe.model.overrides == {"depth": 2, "anything": [1]}
    assert recipe.data.options == {"k": None}


# --- errors: types, choices, ranges -----------------------------------------------------------


@pytest.mark.parametrize(
    ("sections", "key", "expected", "got"),
    [
        ({"optim": {"lr": "fast"}}, "optim.lr", "a number", "'fast' (str)"),
        ({"train": {"batch_size": True}}, "train.batch_size", "an int", "True (bool)"),
        ({"train": {"batch_size": 8.0}}, "train.batch_size", "an int", "8.0 (float)"),
        ({"train": {"batch_size": None}}, "train.batch_size", "an int", "null"),
        ({"train": {"max_steps": "10"}}, "train.max_steps", "an int or null", "'10' (str)"),
        ({"model": {"name": 3}}, "model.name", "a string", "3 (int)"),
        ({"model": {"name": "m", "overrides": [1]}}, "model.overrides", "a mapping", "[1]"),
        ({"optim": {"betas": [0.9]}}, "optim.betas", "a list of 2", "[0.9]"),
        ({"train": "fast"}, "train", "a mapping", "'fast' (str)"),
    ],
)
def test_wrong_type_names_key_expected_and_got(sections, key, expected, got):
    msg = _error(_with(**sections))
    assert f"key '{key}' in x.yaml" in msg
    assert expected in msg and got in msg


def test_ints_accepted_for_floats_and_lists_for_tuples():
    recipe = recipe_from_dict(_with(optim={"lr": 1, "betas": [0, 1]}, train={"clip_grad": 2}))
    assert recipe.optim.lr == 1.0 and isinstance(recipe.optim.lr, float)
    assert recipe.optim.betas == (0.0, 1.0) and isinstance(recipe.optim.betas, tuple)
    assert isinstance(recipe.train.clip_grad, float)


def test_none_where_allowed():
    recipe = recipe_from_dict(_with(train={"clip_grad": None, "ema_decay": None}))
    assert recipe.train.clip_grad is None


@pytest.mark.parametrize(
    ("sections", "key", "choices"),
    [
        ({"train": {"precision": "fp8"}}, "train.precision", "'fp32', 'bf16', 'fp16'"),
        ({"schedule": {"name": "linear"}}, "schedule.name", "'cosine', 'inverse_sqrt', 'constant'"),
        ({"task": "segmentation"}, "task", "'classification', 'translation', 'speech_recognition'"),
        ({"eval": {"mode": "maximum"}}, "eval.mode", "'max', 'min'"),
    ],
)
def test_invalid_choice_names_choices(sections, key, choices):
    msg = _error(_with(**sections))
    assert f"key '{key}'" in msg and f"must be one of {choices}" in msg


def test_invalid_choice_suggests_nearest():
    assert "did you mean 'bf16'?" in _error(_with(train={"precision": "bf61"}))


@pytest.mark.parametrize(
    ("sections", "key", "bound"),
    [
        ({"train": {"batch_size": 0}}, "train.batch_size", ">= 1"),
        ({"data": {"val_fraction": 1.0}}, "data.val_fraction", "< 1"),
        ({"optim": {"lr": -1e-3}}, "optim.lr", ">= 0"),
        ({"train": {"ema_decay": 1.0}}, "train.ema_decay", "< 1"),
    ],
)
def test_out_of_range(sections, key, bound):
    msg = _error(_with(**sections))
    assert f"key '{key}'" in msg and f"must be {bound}" in msg


# --- max_steps / epochs ------------------------------------------------------------------------


def test_max_steps_or_epochs_required():
    d = _with(train={"max_steps": None})
    assert "train.max_steps or train.epochs" in _error(d)
    d["train"]["epochs"] = 2
    recipe = recipe_from_dict(d)
    assert (recipe.train.epochs, recipe.train.max_steps) == (2, None)
    both = recipe_from_dict(_with(train={"epochs": 1, "max_steps": 5}))
    assert (both.train.epochs, both.train.max_steps) == (1, 5)


# --- overrides --------------------------------------------------------------------------------


def test_overrides_parse_and_type():
    base = recipe_to_dict(recipe_from_dict(MINIMAL))
    d = apply_overrides(
        base, ["optim.lr=3e-4", "train.max_steps=10", "model.overrides.num_classes=5"]
    )
    recipe = recipe_from_dict(d)
    assert recipe.optim.lr == pytest.approx(3e-4)
    assert recipe.train.max_steps == 10
    assert recipe.model.overrides == {"num_classes": 5}


def test_overrides_do_not_mutate_input():
    base = copy.deepcopy(MINIMAL)
    apply_overrides(base, ["optim.lr=0.1", "train.max_steps=3"])
    assert base == MINIMAL


def test_overrides_create_sections_and_accept_null_and_lists():
    d = apply_overrides(
        MINIMAL,
        ["data.root=/data/fmnist", "train.clip_grad=null", "optim.betas=[0.9, 0.98]", "out_dir="],
    )
    recipe = recipe_from_dict(d)
    assert recipe.data.root == "/data/fmnist"
    assert recipe.train.clip_grad is None and recipe.out_dir is None
    assert recipe.optim.betas == (0.9, 0.98)


def test_override_string_fields_keep_text():
    d = apply_overrides(MINIMAL, ["data.tgt_lang=no", "data.root=2024", "model.overrides.x=no"])
    recipe = recipe_from_dict(d)
    assert (recipe.data.tgt_lang, recipe.data.root) == ("no", "2024")
    assert recipe.model.overrides == {"x": False}  # free-form values keep YAML typing


def test_override_later_wins_and_whole_section():
    d = apply_overrides(MINIMAL, ["optim.lr=0.1", "optim.lr=0.2", "eval={beam_size: 4}"])
    recipe = recipe_from_dict(d)
    assert recipe.optim.lr == 0.2 and recipe.eval.beam_size == 4


def test_override_unknown_key_names_override():
    with pytest.raises(ConfigError) as info:
        apply_overrides(MINIMAL, ["optim.lrr=3e-4"])
    assert str(info.value) == (
        "unknown key 'optim.lrr' in override 'optim.lrr=3e-4'; did you mean 'optim.lr'?"
    )
    with pytest.raises(ConfigError, match="did you mean 'train'"):
        apply_overrides(MINIMAL, ["trian.max_steps=3"])


def test_override_type_error_names_key_and_value():
    with pytest.raises(ConfigError) as info:
        apply_overrides(MINIMAL, ["train.max_steps=ten"])
    msg = str(info.value)
    assert "key 'train.max_steps'" in msg and "an int or null" in msg and "'ten'" in msg
    with pytest.raises(ConfigError, match="must be one of"):
        apply_overrides(MINIMAL, ["train.precision=fp8"])


@pytest.mark.parametrize("bad", ["optim.lr", "=3", "optim..lr=1", ".lr=1"])
def test_malformed_override(bad):
    with pytest.raises(ConfigError, match="dotted.key=value"):
        apply_overrides(MINIMAL, [bad])


def test_override_below_a_value_is_an_error():
    with pytest.raises(ConfigError, match="'optim.lr' .* is a value"):
        apply_overrides(MINIMAL, ["optim.lr.x=1"])


def test_load_recipe_with_overrides():
    recipe = load_recipe(DEMO, ["train.max_steps=5", "train.precision=bf16"])
    assert recipe.train.max_steps == 5 and recipe.train.precision == "bf16"
    assert isinstance(recipe, Recipe) and dataclasses.is_dataclass(recipe)


@pytest.mark.parametrize(
    "path",
    # configs/results.yaml is the table of measured results (zoo info), not a recipe
    sorted(p for p in (REPO / "configs").rglob("*.yaml") if p.name != "results.yaml"),
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_every_shipped_recipe_loads_and_names_a_registered_model(path: Path) -> None:
    import zoo
    from tasks.base import TASKS

    recipe = load_recipe(path)
    assert recipe.task in TASKS
    assert recipe.model.name in zoo.list_models()
    zoo.get_config(recipe.model.name, **recipe.model.overrides)  # overrides are valid fields
