"""Pruning: which heads a plan removes, and a pruned model equal to the original with those
heads masked, in every family."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from tests.zoo.interpret.test_extract import family_cases
from zoo import create_model
from zoo.interpret.extract import attention_modules, masked_heads, original_heads
from zoo.interpret.prune import kept_indices, plan_pruning, prune_heads, random_scorer

# kept heads (of 4) per module kind; a decoder's self and cross attention differ
KEEP = {"core.blocks.0.attn": [0, 2, 3], "core.blocks.1.attn": [1],
        "decoder.blocks.0.attn": [1, 2], "decoder.blocks.0.cross_attn": [3],
        "decoder.blocks.1.cross_attn": [0, 1, 3]}  # fmt: skip


@pytest.mark.parametrize("family", ["vision", "translation", "speech"])
def test_a_pruned_model_equals_the_original_with_those_heads_masked(family: str) -> None:
    model, run = family_cases()[family]
    modules = attention_modules(model)
    keep = {n: h for n, h in KEEP.items() if n in modules}
    masks = {n: torch.tensor([float(h in keep.get(n, range(4))) for h in range(4)])
             for n in modules}
    with masked_heads(model, masks):
        expected = run(model)
    pruned = prune_heads(model, keep)
    torch.testing.assert_close(run(pruned), expected, atol=1e-5, rtol=0)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    heads = original_heads(pruned)
    assert all(heads[n] == tuple(h) for n, h in keep.items())
    assert pruned.cfg.core.heads_per_layer == ((0, 2, 3), (1,))
    # pruning again keeps indices of the original model
    twice = prune_heads(pruned, {"core.blocks.0.attn": [1, 2]})
    assert original_heads(twice)["core.blocks.0.attn"] == (2, 3)


def test_a_pruned_config_rebuilds_the_same_shapes() -> None:
    model, _ = family_cases()["translation"]
    pruned = prune_heads(model, KEEP)
    rebuilt = create_model("test_mt_transformer", **_as_dict(pruned.cfg))
    shapes = {k: v.shape for k, v in rebuilt.state_dict().items()}
    assert shapes == {k: v.shape for k, v in pruned.state_dict().items()}
    assert pruned.cfg.decoder_heads[0] == ((1, 2), (3,))


def _as_dict(cfg):
    return json.loads(json.dumps(dataclasses.asdict(cfg)))  # as read from config.json


def test_every_module_keeps_a_head_and_bad_plans_are_refused() -> None:
    model, _ = family_cases()["vision"]
    with pytest.raises(ValueError, match="must keep at least one of its 4 heads"):
        prune_heads(model, {"core.blocks.0.attn": []})
    with pytest.raises(ValueError, match=r"--fraction must be in \[0, 1\)"):
        plan_pruning(model, 1.0, random_scorer())
    masks = plan_pruning(model, 0.95, random_scorer())
    assert all(m.sum() == 1 for m in masks.values())


def test_global_plans_remove_the_lowest_scores_in_rounds() -> None:
    model, _ = family_cases()["vision"]  # 2 layers x 4 heads
    fixed = {"core.blocks.0.attn": torch.tensor([0.9, 0.1, 0.8, 0.7]),
             "core.blocks.1.attn": torch.tensor([0.2, 0.6, 0.05, 0.95])}
    seen = []

    def scorer(masks):
        seen.append({n: m.clone() for n, m in masks.items()})
        return fixed

    masks = plan_pruning(model, 0.4, scorer, step=0.25)  # rounds remove 2, then 3 of 8
    assert kept_indices(masks) == {"core.blocks.0.attn": [0, 2, 3],
                                   "core.blocks.1.attn": [1, 3]}
    assert len(seen) == 2 and seen[1]["core.blocks.1.attn"].tolist() == [1, 1, 0, 1]
    assert all(m.sum() == 4 for m in seen[0].values())


def test_per_layer_plans_prune_each_layer_alike_and_random_plans_repeat() -> None:
    model, _ = family_cases()["translation"]
    masks = plan_pruning(model, 0.5, random_scorer(1), per_layer=True)
    assert all(m.sum() == 2 for m in masks.values())
    again = plan_pruning(model, 0.5, random_scorer(1), per_layer=True)
    assert kept_indices(masks) == kept_indices(again)
    other = plan_pruning(model, 0.5, random_scorer(2), per_layer=True)
    assert kept_indices(masks) != kept_indices(other)
    assert sum(m.sum() for m in plan_pruning(model, 0.3, random_scorer()).values()) == 24 - 7
