"""Head importance against finite differences, and the per-head ablation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zoo import create_model
from zoo.interpret.extract import attention_modules, masked_heads
from zoo.interpret.importance import ablate_heads, head_importance


def _tiny():
    torch.manual_seed(0)
    model = create_model("test_vit", num_classes=3, depth=2, dim=16, num_heads=4).double()
    batch = {"images": torch.randn(3, 3, 32, 32, dtype=torch.float64),
             "labels": torch.tensor([0, 2, 1])}
    return model, batch


def _loss(model, batch):
    return F.cross_entropy(model(batch["images"]), batch["labels"]), {}


def test_importance_equals_finite_differences_of_each_samples_loss() -> None:
    model, batch = _tiny()
    scores = head_importance(model, _loss, [batch], normalize=False)
    eps = 1e-5
    for name, module in attention_modules(model).items():
        expected = torch.zeros(module.num_heads, dtype=torch.float64)
        for b in range(3):
            for h in range(module.num_heads):
                change = []
                for sign in (1, -1):
                    gate = torch.ones(3, module.num_heads, dtype=torch.float64)
                    gate[b, h] += sign * eps
                    with masked_heads(model.eval(), {name: gate}), torch.no_grad():
                        change.append(_loss(model, batch)[0])
                expected[h] += abs(change[0] - change[1]) / (2 * eps)
        torch.testing.assert_close(scores[name].double(), expected, rtol=1e-4, atol=1e-7)


def test_scores_are_normalised_per_layer_and_masked_heads_score_zero() -> None:
    model, batch = _tiny()
    masks = {"core.blocks.0.attn": torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.float64)}
    scores = head_importance(model, _loss, [batch, batch], masks)
    for values in scores.values():
        torch.testing.assert_close(values.norm(), torch.tensor(1.0))
    assert scores["core.blocks.0.attn"][1] == 0
    assert model.training  # the mode is restored


def test_ablation_evaluates_the_model_with_each_head_masked_alone() -> None:
    model, batch = _tiny()
    model.eval()

    def evaluate(m):
        with torch.no_grad():
            return float(_loss(m, batch)[0])

    baseline, masked = ablate_heads(model, evaluate)
    assert baseline == evaluate(model)
    mask = torch.tensor([1.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    with masked_heads(model, {"core.blocks.1.attn": mask}):
        expected = evaluate(model)
    assert masked["core.blocks.1.attn"].shape == (4,)
    assert masked["core.blocks.1.attn"][2].item() == expected
    assert (masked["core.blocks.0.attn"] != baseline).all()  # every head changes the loss
