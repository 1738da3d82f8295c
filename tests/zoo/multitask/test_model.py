"""The multitask model (zoo/multitask/model.py): one core shared by each task's own model."""

from __future__ import annotations

import torch

import zoo


def test_the_model_holds_one_core_and_each_tasks_own_model() -> None:
    entries = [{"name": "vision", "model": "test_vit"},
               {"name": "translation", "model": "test_mt_transformer"}]
    model = zoo.create_model("multitask", core="test", tasks=entries)
    single = [zoo.create_model("test_vit"), zoo.create_model("test_mt_transformer")]
    core = sum(p.numel() for p in model.core.parameters())
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(model) == sum(count(m) for m in single) - core
    assert all(m.core is model.core for m in model.tasks.values())
    images = torch.randn(2, 3, 32, 32)
    logits = model(images, task="vision")
    assert logits.shape == (2, 10) and torch.equal(logits, model.tasks["vision"](images))
    keys = model.state_dict().keys()
    assert "core.blocks.0.attn.qkv.weight" in keys
    assert "tasks.translation.decoder.norm.weight" in keys
