"""``zoo fill-mask`` on a run trained by the engine from the demo recipe, its one-sentence
errors, and the registered pre-training variants' encoders loading into the models they
initialise (``bert_mini`` -> ``mt_transformer_mini``, ``mae_vit_mini_patch4_28`` ->
``vit_mini_patch4_28``) by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import zoo
from tasks.masked_image import encoder_state_dict
from tasks.masked_lm import translation_encoder_state
from zoo.cli import main
from zoo.config import load_recipe
from zoo.engine import train

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def mlm_run(tmp_path_factory) -> Path:
    """The demo recipe, shortened: the engine trains, checkpoints and saves best/ as usual."""
    recipe = load_recipe(REPO / "configs/demo/mlm.yaml", [
        "train.max_steps=10", "schedule.warmup_steps=2", "train.eval_every=10",
        "train.checkpoint_every=10", "data.options.num_samples=300", "data.options.num_eval=50",
    ])
    out = tmp_path_factory.mktemp("runs") / "mlm"
    metrics = train(recipe, out)
    assert metrics["best_step"] == 10 and (out / "best" / "spm.model").is_file()
    return out


def test_fill_mask_prints_top_k_per_mask(mlm_run: Path, capsys) -> None:
    assert main(["fill-mask", str(mlm_run), "We buy [MASK] cats in the [MASK].", "--top-k",
                 "3", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "We buy [MASK] cats in the [MASK]."
    assert [line.split(":")[0] for line in lines[1:3]] == ["  [MASK] 1", "  [MASK] 2"]
    assert all(line.count("(") == 3 for line in lines[1:3])
    assert lines[3].startswith("  best: We buy ") and "[MASK]" not in lines[3]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["a man rides a bike"], "has no [MASK]"),
        (["a man is [MASK] a bike", "--top-k", "0"], "--top-k must be at least 1"),
    ],
)
def test_fill_mask_errors_are_one_sentence(mlm_run: Path, capsys, argv, message) -> None:
    assert main(["fill-mask", str(mlm_run), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1


def test_fill_mask_refuses_a_model_of_another_task(tmp_path: Path, capsys) -> None:
    zoo.save_pretrained(zoo.create_model("test_vit"), tmp_path / "vit",
                        extra={"task": "classification"})
    assert main(["fill-mask", str(tmp_path / "vit"), "a [MASK]"]) == 2
    assert "not a masked_lm model" in capsys.readouterr().err


def test_bert_mini_encoder_loads_into_mt_transformer_mini() -> None:
    mlm = zoo.create_model("bert_mini", vocab_size=500).eval()
    mt = zoo.create_model("mt_transformer_mini", vocab_size=500).eval()
    missing, unexpected = mt.load_state_dict(translation_encoder_state(mlm.state_dict()),
                                             strict=False)
    assert unexpected == [] and not any(k.startswith(("core.", "src_")) for k in missing)
    ids = torch.randint(5, 500, (2, 8))
    with torch.no_grad():
        torch.testing.assert_close(mt.forward_features(ids)[0], mlm.forward_features(ids)[0])


def test_mae_encoder_loads_into_vit_mini_patch4_28(tmp_path: Path) -> None:
    mae = zoo.create_model("mae_vit_mini_patch4_28").eval()
    vit = zoo.create_model("vit_mini_patch4_28").eval()
    missing, unexpected = vit.load_state_dict(encoder_state_dict(mae.state_dict()), strict=False)
    assert unexpected == [] and all(k.startswith("head.") for k in missing)
    zoo.save_pretrained(vit, tmp_path / "vit")  # a fine-tune's model.pretrained
    images = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        want = mae.forward_features(images)[0]
        loaded = zoo.create_model("vit_mini_patch4_28", pretrained=tmp_path / "vit").eval()
        torch.testing.assert_close(loaded.forward_features(images)[0], want)
