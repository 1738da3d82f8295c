"""Saved model directories: config.json + model.safetensors (ties, partial views, strict loading),
finding one in a run, and NaN weights refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tests.zoo.tiny_model import IDS
from tests.zoo.tiny_model import tiny_model as _model
from zoo.errors import CheckpointError
from zoo.saved_model import find_model_dir, load_weights, read_model_config, save_pretrained


def test_round_trip_keeps_outputs_and_ties(tmp_path: Path) -> None:
    model = _model(0)
    save_pretrained(model, tmp_path / "m", extra={"tokenizer": "spm.model"})
    saved = load_file(tmp_path / "m" / "model.safetensors")
    assert len(saved) == 5 and ("embed.weight" in saved) != ("head.weight" in saved)  # tied: once
    config = read_model_config(tmp_path / "m")
    assert config["model"] == "test_tiny" and config["tokenizer"] == "spm.model"
    assert config["config"] == {"vocab_size": 11, "dim": 8, "tie_head": True}

    other = load_weights(_model(1), tmp_path / "m" / "model.safetensors")
    assert other.head.weight is other.embed.weight
    assert torch.equal(other(IDS), model(IDS))
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]


def test_partial_view_buffer_is_saved(tmp_path: Path) -> None:
    # hann_window(periodic=True) is a slice of a longer tensor, as in torchaudio's MelSpectrogram.
    model = _model(0)
    model.register_buffer("window", torch.hann_window(16))
    save_pretrained(model, tmp_path)
    other = _model(1)
    other.register_buffer("window", torch.zeros(16))
    load_weights(other, tmp_path)
    assert torch.equal(other.window, torch.hann_window(16)) and torch.equal(other(IDS), model(IDS))


def test_untied_model_round_trips(tmp_path: Path) -> None:
    model = _model(0, tie_head=False)
    save_pretrained(model, tmp_path)
    other = load_weights(_model(1, tie_head=False), tmp_path)
    assert torch.equal(other.head.weight, model.head.weight)


def test_corrupt_weights_error_names_the_file(tmp_path: Path) -> None:
    save_pretrained(_model(), tmp_path)
    path = tmp_path / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-7])  # truncated, as by a crash or a full disk
    with pytest.raises(
        CheckpointError, match=f"checkpoint file {path} is corrupt or not a safetensors file"
    ):
        load_weights(_model(), path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_weights(_model(), tmp_path / "nope.safetensors")


def test_mismatch_error_names_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    state = _model(tie_head=False).state_dict()
    save_file({**state, "extra.bias": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match=rf"{path}.*'extra\.bias' is unexpected"):
        load_weights(_model(tie_head=False), path)
    save_file({k: v for k, v in state.items() if k != "norm.bias"}, path)
    with pytest.raises(CheckpointError, match=rf"{path}.*'norm\.bias' is missing"):
        load_weights(_model(tie_head=False), path)
    save_file({k: v for k, v in state.items() if k != "embed.weight"}, path)
    with pytest.raises(CheckpointError, match=r"'embed\.weight' is missing"):
        load_weights(_model(tie_head=False), path)  # untied: head.weight does not stand in
    load_weights(_model(tie_head=True), path)  # tied: head.weight stands in for embed.weight


def test_read_model_config_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        read_model_config(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="config.json not found"):
        read_model_config(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
        read_model_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "hf", "model": "x", "config": {}}))
    with pytest.raises(CheckpointError, match="format 'hf', expected 'transformer-zoo'"):
        read_model_config(tmp_path)


def test_save_pretrained_rejects_bad_models_and_extras(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="dataclass .cfg"):
        save_pretrained(nn.Linear(2, 2), tmp_path)
    with pytest.raises(ValueError, match="'model' is reserved"):
        save_pretrained(_model(), tmp_path, extra={"model": "other"})
    assert not list(tmp_path.iterdir())  # nothing written


def test_find_model_dir(tmp_path: Path) -> None:
    for step in (100, 2000, 300):
        save_pretrained(_model(), tmp_path / "checkpoints" / f"step_{step}")
    assert find_model_dir(tmp_path) == tmp_path / "checkpoints" / "step_2000"
    save_pretrained(_model(), tmp_path / "best")
    assert find_model_dir(tmp_path) == tmp_path / "best"
    assert find_model_dir(tmp_path / "best") == tmp_path / "best"
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds no saved model"):
        find_model_dir(tmp_path / "empty")


def test_non_finite_weights_are_refused_naming_the_file(tmp_path: Path) -> None:
    model = _model(0)
    with torch.no_grad():
        model.norm.weight[1] = float("inf")
    save_pretrained(model, tmp_path / "m")
    with pytest.raises(
        CheckpointError,
        match=r"m/model.safetensors holds NaN or infinite "
        r"weights \(key 'norm.weight'\)",
    ):
        load_weights(_model(1), tmp_path / "m")
