"""Building a model from saved weights: load_pretrained, create_model(pretrained=...), and the
checks a saved config.json passes before anything is allocated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import zoo
import zoo.atomic
import zoo.pretrained
from tests.zoo.tiny_model import IDS, TinyConfig, TinyLM
from tests.zoo.tiny_model import tiny_model as _model
from zoo.errors import CheckpointError
from zoo.pretrained import load_pretrained
from zoo.saved_model import save_pretrained


def _fake_create_model(name: str, pretrained: object = None, **overrides: object) -> TinyLM:
    assert name == "test_tiny"
    return TinyLM(TinyConfig(**overrides))


@pytest.fixture
def fake_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """load_pretrained builds ``test_tiny`` (not registered) with `_fake_create_model`."""
    monkeypatch.setattr(zoo.pretrained, "create_model", _fake_create_model)
    # test_tiny is not registered: nothing to check its config against
    monkeypatch.setattr(zoo.pretrained, "check_saved_config", lambda saved, directory: None)


def test_load_pretrained_rebuilds_in_eval_mode(tmp_path: Path, fake_registry: None) -> None:
    model = _model(0)
    save_pretrained(model, tmp_path)
    loaded = load_pretrained(tmp_path)
    assert not loaded.training and torch.equal(loaded(IDS), model(IDS))
    with pytest.raises(
        CheckpointError,
        match=r"model\.safetensors.*'embed\.weight' has shape \(11, 8\) in the file vs \(11, 16\)",
    ):
        load_pretrained(tmp_path, dim=16)


def _edited(tmp_path: Path, **changes: object) -> Path:
    """A saved test_vit whose config.json has ``changes`` (``model`` sets the model name)."""
    directory = save_pretrained(zoo.pretrained.create_model("test_vit"), tmp_path / "vit")
    path = directory / "config.json"
    config = json.loads(path.read_text())
    if "model" in changes:
        config["model"] = changes.pop("model")
    config["config"].update(changes)
    path.write_text(json.dumps(config))
    return directory


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"dim": "64"}, r"key 'dim' in {config} expects an int, got '64' \(str\)"),
        ({"mean": "0.5"}, r"key 'mean' in {config} expects a list of a number"),
        ({"dimm": 64}, r"{config}: model 'test_vit' has no setting 'dimm'; did you mean 'dim'"),
        ({"model": "test_vitt"}, r"{config}: unknown model 'test_vitt'; closest: test_vit"),
        (
            {"num_classes": 10**11},
            r"{config} describes a model whose 'head.fc.weight' has shape "
            r"\(100000000000, \d+\), but {weights} holds \(\d+, \d+\)",
        ),
    ],
    ids=["str_dim", "str_mean", "unknown_key", "unknown_model", "huge_num_classes"],
)
def test_load_pretrained_names_the_config_file_at_fault(
    tmp_path: Path, changes: dict, message: str
) -> None:
    directory = _edited(tmp_path, **changes)
    config, weights = directory / "config.json", directory / "model.safetensors"
    with pytest.raises(CheckpointError, match=message.format(config=config, weights=weights)):
        load_pretrained(directory)


def test_pretrained_true_says_that_nothing_is_downloaded() -> None:
    with pytest.raises(TypeError, match="pretrained=True: the zoo downloads no weights"):
        zoo.create_model("test_vit", pretrained=True)



def test_pretrained_of_another_task_names_the_directory(tmp_path) -> None:
    zoo.save_pretrained(zoo.create_model("test_mt_transformer"), tmp_path / "mt")
    with pytest.raises(
        CheckpointError,
        match=f"{tmp_path / 'mt'} holds a translation model "
        r"\(test_mt_transformer\), not a classification model like test_vit",
    ):
        zoo.create_model("test_vit", pretrained=tmp_path / "mt")
