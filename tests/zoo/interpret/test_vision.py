"""Image classifier figures: per-layer, per-head attention of the pooled query, and rollout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.tasks.test_classification import make_task
from tests.zoo.interpret.test_figures import bar_labels, capture_figures, is_png
from zoo import create_model
from zoo.interpret.vision import query_attention, vision_figures

NAMES = ["circle", "square", "cross"]


def _setup(tmp_path: Path, **overrides):
    task = make_task()
    task.load_extra(tmp_path, {"class_names": NAMES, "crop_pct": 1.0})
    model = create_model("test_vit", num_classes=3, **overrides).eval()
    image = tmp_path / "digit.png"
    pixels = torch.randint(0, 255, (32, 32, 3), generator=torch.Generator().manual_seed(0))
    Image.fromarray(pixels.to(torch.uint8).numpy()).save(image)
    return task, model, image


@pytest.mark.parametrize("pool", ["cls", "avg"])
def test_vision_figures_show_each_head_and_the_rollout(tmp_path, monkeypatch, pool: str):
    figures = capture_figures(monkeypatch)
    task, model, image = _setup(tmp_path, global_pool=pool)
    paths = vision_figures(task, model, [image], tmp_path / "out", head_fusion="max")
    assert [p.name for p in paths] == ["digit_heads.png", "digit_rollout.png"]
    assert all(is_png(p) for p in paths)
    heads, rollout = figures
    titles = [ax.get_title() for ax in heads.axes if ax.get_title()]
    assert titles[:5] == ["layer 0 · head 0", "layer 0 · head 1", "layer 0 · head 2",
                          "layer 0 · head 3", "layer 0 · mean of heads"]
    assert len(titles) == 10 and bar_labels(heads) == ["attention weight"] * 2
    query = "class token" if pool == "cls" else "mean of the patch queries"
    assert query in heads._suptitle.get_text() and "4x4 patches" in heads._suptitle.get_text()
    assert any(name in heads._suptitle.get_text() for name in NAMES)
    assert heads.axes[5].get_xlabel() == "x (px)" and heads.axes[0].get_ylabel() == "y (px)"
    panels = [ax.get_title() for ax in rollout.axes if ax.get_title()]
    assert panels == ["input", "rollout over the patches", "rollout on the image"]
    assert "max over heads" in rollout._suptitle.get_text()
    grid = rollout.axes[1]
    assert [t.get_text() for t in grid.get_xticklabels()] == ["0", "1", "2", "3"]
    assert grid.images[0].get_array().shape == (4, 4)
    assert bar_labels(rollout) == ["share of the output"] * 2


def test_a_pruned_layer_leaves_its_missing_heads_blank(tmp_path, monkeypatch) -> None:
    figures = capture_figures(monkeypatch)
    task, model, image = _setup(tmp_path, heads_per_layer=[[0, 1, 2, 3], [2]])
    vision_figures(task, model, [image], tmp_path / "out")
    titles = [ax.get_title() for ax in figures[0].axes[5:10]]
    assert titles == ["layer 1 · head 2", "", "", "", "layer 1 · mean of heads"]
    assert not figures[0].axes[6].axison


def test_the_pooled_query_is_the_cls_row_or_the_mean_patch_row() -> None:
    weights = torch.rand(1, 2, 5, 5).softmax(-1)  # a cls token and 4 patches
    assert torch.equal(query_attention(weights, 1, "cls"), weights[:, :, 0, 1:])
    mean = query_attention(weights, 1, "avg")
    torch.testing.assert_close(mean[0, 1], weights[0, 1, 1:, 1:].mean(0))
