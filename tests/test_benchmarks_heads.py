"""benchmarks/heads.py: the recipe a pruned model is fine-tuned with (the given run's own, or the
task's mini recipe), and that it builds into a valid recipe."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from tests.scripts import load_script
from zoo.config import recipe_from_dict, recipe_to_dict

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "heads.py"


@pytest.fixture(scope="module")
def heads():
    return load_script(SCRIPT, "benchmarks_heads", siblings=True)


def _args(runs: dict[str, str]) -> argparse.Namespace:
    return argparse.Namespace(runs=runs, finetune_steps=40, finetune_lr=0.5, device="cpu",
                              seed=3, data="../shared/data")


def test_a_given_run_is_fine_tuned_on_its_own_recipe(heads, tmp_path: Path) -> None:
    recipe = yaml.safe_load((ROOT / "configs/demo/speech.yaml").read_text())
    recipe["train"]["ema_decay"] = 0.999
    recipe["optim"]["layer_decay"] = 0.75
    run = SimpleNamespace(recipe=recipe_from_dict(recipe))  # as open_run reads it
    tuned = heads.finetune_recipe("speech", run, tmp_path / "pruned", _args({"speech": "x"}))
    assert tuned["data"] == recipe_to_dict(run.recipe)["data"]
    assert tuned["data"]["dataset"] == recipe["data"]["dataset"]
    assert tuned["task"] == recipe["task"]
    assert tuned["model"]["pretrained"] == str(tmp_path / "pruned")
    assert tuned["optim"]["lr"] == pytest.approx(0.5 * recipe["optim"]["lr"])
    assert tuned["optim"]["layer_decay"] is None and tuned["train"]["ema_decay"] is None
    train = tuned["train"]
    assert (train["max_steps"], train["eval_every"], train["checkpoint_every"]) == (40, 40, 40)
    assert (train["seed"], train["device"]) == (3, "cpu")
    assert tuned["schedule"] == {"name": "cosine", "warmup_steps": 4}
    recipe_from_dict(tuned)  # still a valid recipe


def test_without_a_run_the_mini_recipe_is_used(heads, tmp_path: Path) -> None:
    tuned = heads.finetune_recipe("speech", SimpleNamespace(), tmp_path / "pruned", _args({}))
    assert tuned["model"] == {"name": "asr_transformer_ctc_mini",
                              "pretrained": str(tmp_path / "pruned")}
    assert tuned["data"]["dataset"] == "fsdd" and tuned["train"]["max_steps"] == 40
    assert tuned["train"]["ema_decay"] is None
    assert recipe_from_dict(tuned).train.max_steps == 40


def test_the_table_shows_each_fraction_with_its_flops_and_speed_up(heads) -> None:
    rows = [{"method": m, "fraction": f, "heads": h, "params": p, "flops": fl, "cer": c}
            for m in ("importance", "random")
            for f, h, p, fl, c in ((0.0, 24, 1000, 4.0e9, 22.3), (0.5, 12, 900, 3.5e9, 22.6))]
    lines = heads.table("speech", {"metric": "cer", "rows": rows,
                                   "ms_per_batch": {"0.0": 200.0, "0.5": 160.0}})
    assert lines[2].split(" | ")[-3:] == ["GFLOPs/sample (importance)", "ms/batch (importance)",
                                          "speed-up |"]
    assert lines[5] == "| 50% | 12 | 900 | 22.6 | 22.6 | 3.5 | 160.00 | 1.25x |"


def test_time_models_times_a_model_against_its_pruned_copy(tmp_path: Path, capsys) -> None:
    import zoo
    from zoo.interpret.prune import prune_heads

    timer = load_script(ROOT / "benchmarks" / "time_models.py", "benchmarks_time_models",
                        siblings=True)
    model = zoo.create_model("test_vit")
    zoo.save_pretrained(model, tmp_path / "full")
    pruned = prune_heads(model, {"core.blocks.0.attn": [0], "core.blocks.1.attn": [1]})
    zoo.save_pretrained(pruned, tmp_path / "pruned")
    rows = timer.main([str(tmp_path / "full"), str(tmp_path / "pruned"), "--batch", "3",
                       "--repeats", "2", "--iters", "1"])
    assert [r["model"] for r in rows] == [str(tmp_path / "full"), str(tmp_path / "pruned")]
    assert rows[0]["speed_up"] == 1.0 and rows[1]["ms"] > 0
    assert rows[1]["flops"] < rows[0]["flops"]
    assert "batch 3 x one 32x32 image" in capsys.readouterr().out
    batch = timer.batch_of([torch.zeros(1, 5), 7], 4)
    assert batch[0].shape == (4, 5) and batch[1] == 7
