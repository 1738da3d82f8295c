"""Model cards: FLOPs per sample counted by torch's flop counter, and recipe results."""

from __future__ import annotations

from pathlib import Path

from zoo.cli import main
from zoo.interpret.prune import prune_heads
from zoo.model_card import forward_flops, model_flops, recipe_results
from zoo.pretrained import create_model


def test_vit_flops_equal_the_analytic_count() -> None:
    flops, what = forward_flops("test_vit")  # 32 px, 8 px patches, width 64, 2 layers
    n, d, depth, patches = 17, 64, 2, 16  # 16 patches + the class token
    linear = 2 * n * d * (3 * d + d + 4 * d + 4 * d)  # qkv, proj, fc1, fc2
    attention = 2 * 2 * n * n * d  # QK^T and AV over all heads
    patch_embed = 2 * patches * (3 * 8 * 8) * d
    assert flops == patch_embed + depth * (linear + attention) + 2 * d * 10
    assert what == "one 32x32 image"


def test_a_pruned_model_counts_the_flops_of_the_heads_it_kept() -> None:
    model = create_model("test_vit")
    full, _ = model_flops(model)
    assert full == forward_flops("test_vit")[0]
    pruned = prune_heads(model, {"core.blocks.0.attn": [0, 1, 2], "core.blocks.1.attn": [1]})
    n, d, hd, removed = 17, 64, 16, 1 + 3  # tokens, width, head width, heads removed
    per_head = 2 * n * d * 3 * hd + 2 * n * hd * d + 2 * 2 * n * n * hd  # qkv, proj, QK^T, AV
    assert model_flops(pruned)[0] == full - removed * per_head


def test_flops_are_counted_for_every_family() -> None:
    for name in ("test_mt_transformer", "test_asr_transformer"):
        flops, what = forward_flops(name)
        assert flops > 0 and what


def test_recipe_results_list_the_recipes_of_a_model(tmp_path: Path) -> None:
    (tmp_path / "configs" / "vision").mkdir(parents=True)
    (tmp_path / "configs" / "vision" / "a.yaml").write_text("model:\n  name: test_vit\n")
    (tmp_path / "configs" / "vision" / "b.yaml").write_text("model:\n  name: other\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "results.yaml").write_text(
        "configs/vision/a.yaml: {result: top-1 1%, measured: here}\n"
        "configs/vision/b.yaml: {result: top-1 2%, measured: here}\n"
    )
    rows = recipe_results("test_vit", tmp_path)
    assert rows == [{"recipe": "configs/vision/a.yaml", "result": "top-1 1%", "measured": "here"}]


def test_every_result_names_an_existing_recipe() -> None:
    table = Path(__file__).resolve().parents[2] / "docs" / "results.yaml"
    import yaml

    for recipe in yaml.safe_load(table.read_text()):
        assert (table.parent.parent / recipe).is_file(), recipe


def test_cli_info_prints_flops_and_results(capsys) -> None:
    assert main(["info", "vit_tiny_patch4_28"]) == 0
    out = capsys.readouterr().out
    assert "forward FLOPs per sample:" in out and "(one 28x28 image)" in out
    assert "measured: configs/vision/vit_tiny_fashion_mnist.yaml: test top-1 93.42%" in out
