"""Learned head gates: the penalty in the training loss, gates added to a trained model, and
pruning the heads they closed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from tests.zoo.interpret.test_extract import family_cases
from tests.zoo.test_engine import tiny
from zoo import create_model
from zoo.config import recipe_from_dict
from zoo.engine import train
from zoo.interpret.extract import attention_modules, original_heads
from zoo.interpret.gates import add_gate_penalty, expected_open, gate_values, prune_closed_heads
from zoo.records import read_metrics
from zoo.saved_model import save_pretrained


def test_the_penalty_is_lambda_times_the_expected_open_gates() -> None:
    plain = create_model("test_vit")
    loss = torch.tensor(2.0)
    assert add_gate_penalty(plain, loss, {"acc": 1.0}) == (loss, {"acc": 1.0})
    gated = create_model("test_vit", head_gate_l0=0.5)
    total, logs = add_gate_penalty(gated, loss, {})
    opened = expected_open(gated)
    assert opened.item() == pytest.approx(8 * 0.984, abs=0.01)  # 2 layers x 4 heads, all open
    assert total.item() == pytest.approx(2.0 + 0.5 * opened.item())
    assert logs["heads_open"] == pytest.approx(opened.item())
    total.backward()
    assert gated.core.blocks[0].attn.gate.log_alpha.grad.gt(0).all()  # pushes gates shut


def test_training_with_gates_logs_the_open_heads_and_saves_the_gates(tmp_path: Path) -> None:
    recipe = tiny({"max_steps": 2, "eval_every": 2, "checkpoint_every": 2})
    recipe["model"]["overrides"]["head_gate_l0"] = 0.1
    train(recipe_from_dict(recipe), tmp_path)
    events = [e for e in read_metrics(tmp_path) if e["type"] == "train"]
    assert events and 0 < events[-1]["heads_open"] <= 2  # 1 layer x 2 heads
    saved = create_model("test_vit", pretrained=tmp_path)
    assert saved.core.blocks[0].attn.gate is not None


def test_gates_added_to_a_trained_model_start_open(tmp_path: Path) -> None:
    model, run = family_cases()["translation"]
    model.model_name = "test_mt_transformer"
    save_pretrained(model, tmp_path)
    gated = create_model("test_mt_transformer", pretrained=tmp_path, head_gate_l0=0.05).eval()
    assert sum(m.gate is not None for m in attention_modules(gated).values()) == 6
    torch.testing.assert_close(run(gated), run(model), atol=1e-6, rtol=0)


@pytest.mark.parametrize("family", ["vision", "translation"])
def test_closed_heads_are_pruned_and_open_gates_folded_in(family: str) -> None:
    model, run = family_cases()[family]
    gated = create_model(model.model_name, **_config(model), head_gate_l0=0.1).eval()
    gated.load_state_dict(model.state_dict(), strict=False)
    torch.manual_seed(3)
    with torch.no_grad():
        for module in attention_modules(gated).values():
            module.gate.log_alpha.copy_(torch.tensor([-9.0, 0.5, 9.0, -3.0]))  # 0, .65, 1, 0
        gated.core.blocks[1].attn.gate.log_alpha.fill_(-9.0)  # a layer with every gate shut
    values = gate_values(gated)
    assert values["core.blocks.0.attn"][[0, 2, 3]].tolist() == [0.0, 1.0, 0.0]
    pruned = prune_closed_heads(gated)
    heads = original_heads(pruned)
    assert heads["core.blocks.0.attn"] == (1, 2) and len(heads["core.blocks.1.attn"]) == 1
    assert all(m.gate is None for m in attention_modules(pruned).values())
    assert pruned.cfg.core.head_gate_l0 is None
    torch.testing.assert_close(run(pruned), run(gated), atol=1e-5, rtol=0)


def _config(model) -> dict:
    cfg = dataclasses.asdict(model.cfg)
    return {k: v for k, v in cfg.items() if k != "core"} | {"core": model.cfg.core}


def test_gate_values_of_an_ungated_model_say_how_to_get_gates() -> None:
    with pytest.raises(ValueError, match="head_gate_l0"):
        gate_values(create_model("test_vit"))
