"""Trainer state files: round trips of optimizer, scheduler, scaler, EMA and every RNG; weights_only
loading; code refused on save and load."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.zoo.tiny_model import IDS, TinyConfig
from tests.zoo.tiny_model import tiny_model as _model
from zoo.ema import ModelEMA
from zoo.errors import CheckpointError
from zoo.optim import build_optimizer, build_scheduler
from zoo.trainer_state import (
    capture_rng_state,
    load_trainer_state,
    restore_rng_state,
    save_trainer_state,
)


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
