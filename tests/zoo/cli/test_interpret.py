"""``zoo attention``, ``zoo heads`` and ``zoo prune`` on tiny trained runs; a pruned model is a
saved model like any other (eval, classify, fine-tune and resume)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from tests.zoo.cli.helpers import fails
from tests.zoo.helpers import tiny_vit
from zoo.cli import main
from zoo.cli.interpret import HEAD_FUSIONS
from zoo.interpret.extract import original_heads
from zoo.pretrained import load_pretrained

VISION = tiny_vit(model={"depth": 2, "num_heads": 4},
                  train={"max_steps": 2, "eval_every": 2, "checkpoint_every": 2})
TRANSLATION = {
    "task": "translation",
    "model": {"name": "test_mt_transformer"},
    "data": {"dataset": "synthetic", "options": {"num_samples": 200, "num_eval": 4}},
    "tokenizer": {"vocab_size": 200},
    "train": {"max_steps": 2, "batch_size": 512, "eval_every": 2, "checkpoint_every": 2},
    "decode": {"beam_size": 1},
}  # fmt: skip


def test_the_parser_knows_rollouts_head_fusions() -> None:
    from zoo.interpret.rollout import HEAD_FUSIONS as fusions

    assert HEAD_FUSIONS == fusions


def _train(folder: Path, recipe: dict, *overrides: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["train", str(path), "--out", str(folder / "run"), *overrides]) == 0
    return folder / "run"


@pytest.fixture(scope="module")
def vision(tmp_path_factory) -> tuple[Path, Path]:
    """A finished tiny vision run and an image for it."""
    folder = tmp_path_factory.mktemp("vision")
    image = folder / "x.png"
    Image.fromarray(torch.randint(0, 255, (16, 16, 3), dtype=torch.uint8).numpy()).save(image)
    return _train(folder, VISION), image


def test_attention_draws_the_figures_of_a_vision_run(vision, tmp_path, capsys) -> None:
    run, image = vision
    assert main(["attention", str(run), str(image), "--out", str(tmp_path),
                 "--head-fusion", "min"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "x_heads.png"), str(tmp_path / "x_rollout.png")]


def test_attention_draws_a_translation_runs_alignments(tmp_path, capsys) -> None:
    run = _train(tmp_path, TRANSLATION)
    assert main(["attention", str(run), "one two", "--out", str(tmp_path / "figs")]) == 0
    figs = tmp_path / "figs"
    assert capsys.readouterr().out.split()[-2:] == [
        str(figs / "sentence0_layer1_heads.png"), str(figs / "sentence0.html")]
    fails(["attention", str(run), "one", "--out", str(tmp_path), "--layer", "7"], capsys,
          "--layer 7 is out of range")


def test_heads_prints_importance_and_ablation_tables(vision, capsys) -> None:
    run, _ = vision
    assert main(["heads", str(run), "--max-batches", "1", "--ablate"]) == 0
    out = capsys.readouterr().out
    assert "head importance on val" in out and "top1 change with the head masked" in out
    assert out.count("enc 1") == 2
    report = json.loads((run / "heads_val.json").read_text())
    assert len(report["importance"]["core.blocks.0.attn"]) == 4
    assert len(report["ablation"]["core.blocks.1.attn"]) == 4
    assert (run / "heads_val.png").is_file()


def test_a_pruned_model_evaluates_predicts_fine_tunes_and_resumes(vision, tmp_path, capsys):
    run, image = vision
    out = tmp_path / "pruned"
    assert main(["prune", str(run), "--fraction", "0.5", "--out", str(out),
                 "--max-batches", "1"]) == 0
    assert "kept 4 of 8 heads" in capsys.readouterr().out
    model = load_pretrained(out)
    assert sum(len(h) for h in original_heads(model).values()) == 4
    note = json.loads((out / "config.json").read_text())["pruned"]
    assert note["method"] == "importance" and note["heads_kept"] == 4
    assert main(["eval", str(out)]) == 0 and main(["classify", str(out), str(image)]) == 0
    tune = tmp_path / "tune"
    recipe = {**VISION, "model": {"name": "test_vit", "pretrained": str(out)}}
    recipe["train"] = {**VISION["train"], "checkpoint_every": 1}
    first = _train(tune, recipe)
    assert main(["train", str(tune / "recipe.yaml"), "--out", str(first), "--resume",
                 "train.max_steps=3"]) == 0
    resumed = load_pretrained(first / "checkpoints" / "step_00000003")
    assert resumed.cfg.core.heads_per_layer == model.cfg.core.heads_per_layer


def test_random_per_layer_pruning_keeps_each_layers_share(vision, tmp_path, capsys) -> None:
    run, _ = vision
    out = tmp_path / "random"
    assert main(["prune", str(run), "--fraction", "0.5", "--per-layer", "--random",
                 "--out", str(out)]) == 0
    heads = original_heads(load_pretrained(out))
    assert [len(h) for h in heads.values()] == [2, 2]
    assert json.loads((out / "config.json").read_text())["pruned"]["method"] == "random"
    fails(["prune", str(run), "--fraction", "0.5", "--out", str(out)], capsys, "already exists")
    fails(["prune", str(run), "--out", str(tmp_path / "x")], capsys, "needs --fraction")
    fails(["prune", str(run), "--gates", "--out", str(tmp_path / "x")], capsys, "no head gates")
    fails(["prune", str(run), "--gates", "--fraction", "0.3", "--out", str(tmp_path / "x")],
          capsys, "takes no --fraction")


def test_closed_gates_are_pruned_from_a_gated_run(tmp_path, capsys) -> None:
    run = _train(tmp_path, VISION, "model.overrides.head_gate_l0=0.1")
    out = tmp_path / "gated"
    assert main(["prune", str(run), "--gates", "--out", str(out)]) == 0
    model = load_pretrained(out)
    assert model.cfg.core.head_gate_l0 is None and model.core.blocks[0].attn.gate is None
    assert json.loads((out / "config.json").read_text())["pruned"]["method"] == "gates"


def test_heads_needs_the_runs_recipe(vision, tmp_path, capsys) -> None:
    run, _ = vision
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((run / "best" / name).read_bytes())
    fails(["heads", str(bare)], capsys, "needs the run's recipe")
