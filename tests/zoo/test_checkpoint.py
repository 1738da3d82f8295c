"""Saved model directories, trainer state, atomic writes, averaging and pruning."""

from __future__ import annotations

import dataclasses
import errno
import importlib
import json
import os
import random
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import zoo.checkpoint
from zoo.checkpoint import (
    CheckpointError,
    DiskFullError,
    atomic_save_safetensors,
    atomic_save_torch,
    atomic_write_bytes,
    average_checkpoints,
    capture_rng_state,
    find_model_dir,
    keep_last,
    load_pretrained,
    load_trainer_state,
    load_weights,
    read_model_config,
    restore_rng_state,
    save_pretrained,
    save_trainer_state,
)
from zoo.ema import ModelEMA
from zoo.optim import build_optimizer, build_scheduler


@dataclasses.dataclass
class TinyConfig:
    vocab_size: int = 11
    dim: int = 8
    tie_head: bool = True


class TinyLM(nn.Module):
    """An embedding tied to the output Linear, a norm and a buffer: enough to exercise saving."""

    def __init__(self, cfg: TinyConfig) -> None:
        super().__init__()
        self.cfg, self.model_name = cfg, "test_tiny"
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size)
        if cfg.tie_head:
            self.head.weight = self.embed.weight
        self.register_buffer("scale", torch.full((1,), 2.0))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.embed(ids)) * self.scale)


def _model(seed: int = 0, **kwargs: object) -> TinyLM:
    torch.manual_seed(seed)
    return TinyLM(TinyConfig(**kwargs))


IDS = torch.tensor([[1, 2, 3, 10]])


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


def _fake_create_model(name: str, pretrained: object = None, **overrides: object) -> TinyLM:
    assert name == "test_tiny"
    return TinyLM(TinyConfig(**overrides))


@pytest.fixture
def fake_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        importlib.import_module("zoo.registry")
    except ImportError:  # the registry is not written yet: stand in a module for it
        monkeypatch.setitem(sys.modules, "zoo.registry", types.ModuleType("zoo.registry"))
    monkeypatch.setattr(
        sys.modules["zoo.registry"], "create_model", _fake_create_model, raising=False
    )
    monkeypatch.setattr(  # test_tiny is not registered: nothing to check its config against
        sys.modules["zoo.registry"],
        "check_saved_config",
        lambda saved, directory: None,
        raising=False,
    )


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


class Unpicklable:
    def __reduce__(self) -> tuple:
        raise RuntimeError("boom mid-write")


def test_atomic_write_keeps_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    atomic_save_torch({"step": 1}, path)
    with pytest.raises(RuntimeError, match="boom mid-write"):
        atomic_save_torch({"step": 2, "big": torch.zeros(1000), "bad": Unpicklable()}, path)
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]
    atomic_write_bytes(tmp_path / "sub" / "a.txt", b"hello")
    assert (tmp_path / "sub" / "a.txt").read_bytes() == b"hello"


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_atomic_writes_get_the_mode_of_a_new_file(tmp_path: Path, umask: int) -> None:
    """safetensors writes its files 0600; a saved model's files are all 0666 less the umask."""
    old = os.umask(umask)
    try:
        save_pretrained(_model(), tmp_path / "model")
        save_trainer_state({"step": 1}, tmp_path / "model" / "trainer_state.pt")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "model").iterdir()}
    assert modes == dict.fromkeys(modes, 0o666 & ~umask) and len(modes) == 3


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        # what safetensors raises (its SafetensorError is a plain Exception)
        Exception("Error while serializing: I/O error: No space left on device (os error 28)"),
    ],
)
def test_a_full_disk_is_one_sentence_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    path = tmp_path / "model.safetensors"
    atomic_save_safetensors({"w": torch.ones(2)}, path)

    def full(tensors: dict, tmp: Path, metadata: dict | None = None) -> None:
        Path(tmp).write_bytes(b"half")
        raise error

    monkeypatch.setattr(zoo.checkpoint, "save_file", full)
    with pytest.raises(DiskFullError) as raised:
        atomic_save_safetensors({"w": torch.zeros(1000)}, path)
    message = str(raised.value)
    need = "(it needs about 4.0 KB, "
    assert message.startswith(f"no space left on the device to write {path} {need}")
    assert message.endswith(" free)") and raised.value.errno == errno.ENOSPC
    assert torch.equal(load_file(path)["w"], torch.ones(2))  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_torch_save_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.save says only "unexpected pos": too little free space for the file tells why."""

    def fails(obj: object, tmp: Path) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(torch, "save", fails)
    with pytest.raises(RuntimeError, match="unexpected pos"):  # plenty of space: not the disk
        save_trainer_state({"m": torch.zeros(1000)}, tmp_path / "state.pt")
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=1000))
    with pytest.raises(DiskFullError, match=r"state.pt \(it needs about 4.0 KB, 1.0 KB free\)"):
        save_trainer_state({"m": torch.zeros(1000)}, tmp_path / "state.pt")
    assert list(tmp_path.iterdir()) == []


def test_trainer_state_refuses_code_and_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "trainer.pt"
    save_trainer_state({"step": 1}, path)
    with pytest.raises(TypeError, match=f"{path} holds objects"):
        save_trainer_state({"step": 2, "fn": TinyConfig()}, path)  # pickles, but is not weights
    assert load_trainer_state(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["trainer.pt"]


def test_trainer_state_and_rng_round_trip(tmp_path: Path) -> None:
    model = _model()
    opt = build_optimizer(model, lr=1e-2, weight_decay=0.1)
    sched = build_scheduler(opt, "cosine", total_steps=10, warmup_steps=2)
    ema = ModelEMA(model)
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    model(IDS).sum().backward()
    opt.step(), sched.step(), ema.update(model)
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached gauss_next to carry over
    state = {
        "step": 1,
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "scaler": scaler.state_dict(),
        "ema": ema.state_dict(),
        "rng": capture_rng_state(),
    }
    save_trainer_state(state, tmp_path / "trainer.pt")
    expected = (random.random(), random.gauss(0, 1), np.random.rand(3), torch.rand(3))

    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    loaded = load_trainer_state(tmp_path / "trainer.pt")
    restore_rng_state(loaded["rng"])
    got = (random.random(), random.gauss(0, 1), np.random.rand(3), torch.rand(3))
    assert got[:2] == expected[:2]
    assert np.array_equal(got[2], expected[2]) and torch.equal(got[3], expected[3])

    opt2 = build_optimizer(_model(5), lr=1e-2, weight_decay=0.1)
    opt2.load_state_dict(loaded["optimizer"])
    sched2 = build_scheduler(opt2, "cosine", total_steps=10, warmup_steps=2)
    sched2.load_state_dict(loaded["scheduler"])
    assert sched2.get_last_lr() == sched.get_last_lr() and loaded["step"] == 1
    torch.amp.GradScaler("cpu").load_state_dict(loaded["scaler"])
    ModelEMA(_model(5)).load_state_dict(loaded["ema"])


def test_corrupt_trainer_state_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "trainer.pt"
    save_trainer_state({"step": 1, "w": torch.zeros(100)}, path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=f"trainer state file {path} is corrupt"):
        load_trainer_state(path)


def test_average_checkpoints(tmp_path: Path) -> None:
    paths = [tmp_path / f"step_{i}.safetensors" for i in range(3)]
    for i, path in enumerate(paths):
        w = torch.full((2, 2), float(i + 1), dtype=torch.bfloat16)
        save_file({"w": w, "count": torch.tensor([i])}, path)
    avg = average_checkpoints(paths)
    assert avg["w"].dtype == torch.bfloat16 and torch.equal(
        avg["w"], torch.full((2, 2), 2.0).bfloat16()
    )
    assert avg["count"].item() == 2
    save_file({"w": torch.zeros(2, 2), "other": torch.zeros(1)}, paths[2])
    with pytest.raises(CheckpointError, match=rf"{paths[2]} does not match .*'count' is missing"):
        average_checkpoints(paths)


def test_keep_last(tmp_path: Path) -> None:
    for step in (5, 40, 100, 20):
        (tmp_path / f"step_{step}.safetensors").write_bytes(b"x")
        (tmp_path / f"step_{step}.trainer.pt").write_bytes(b"x")
    (tmp_path / "step_1").mkdir()
    (tmp_path / "step_best").write_bytes(b"x")  # no step number: never removed
    (tmp_path / ".step_7.safetensors.ab12.tmp").write_bytes(b"x")  # in-flight write: never removed
    removed = keep_last(tmp_path, "step_*", 2)
    assert [p.name for p in removed] == [
        "step_1",
        "step_5.safetensors",
        "step_5.trainer.pt",
        "step_20.safetensors",
        "step_20.trainer.pt",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".step_7.safetensors.ab12.tmp",
        "step_100.safetensors",
        "step_100.trainer.pt",
        "step_40.safetensors",
        "step_40.trainer.pt",
        "step_best",
    ]


# ---------------------------------------------------------------------------------------------
# A saved config.json that was changed: one sentence naming the file, before any allocation


def _edited(tmp_path: Path, **changes: object) -> Path:
    """A saved test_vit whose config.json has ``changes`` (``model`` sets the model name)."""
    from zoo.registry import create_model

    directory = save_pretrained(create_model("test_vit"), tmp_path / "vit")
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


def test_a_trainer_state_holding_code_is_refused_without_advice_to_disable_the_check(
    tmp_path: Path,
) -> None:
    path = tmp_path / "trainer_state.pt"
    torch.save({"step": 1, "hook": print}, path)  # pickles a global: weights_only refuses it
    with pytest.raises(CheckpointError) as info:
        load_trainer_state(path)
    message = str(info.value)
    assert message.startswith(
        f"trainer state file {path} was not loaded, since loading it could "
        "run code (it holds objects other than tensors, numbers and "
        "strings: Unsupported global: GLOBAL "
    )
    assert "print was not an allowed global by default" in message
    assert "weights_only" not in message and "\n" not in message


def test_saving_a_state_with_code_names_the_object_not_the_workaround(tmp_path: Path) -> None:
    with pytest.raises(TypeError) as info:
        save_trainer_state({"step": 2, "fn": print}, tmp_path / "trainer.pt")
    assert "Unsupported global" in str(info.value) and "weights_only=False" not in str(info.value)
    assert "\n" not in str(info.value) and "Re-running" not in str(info.value)
