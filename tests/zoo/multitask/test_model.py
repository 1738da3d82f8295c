"""The multitask model (zoo/multitask/model.py): one core shared by each task's own model."""

from __future__ import annotations

import torch

import zoo
from zoo.transfer import freeze


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


def test_linear_probe_trains_every_tasks_readout_and_nothing_else() -> None:
    entries = [{"name": "vision", "model": "test_vit"},
               {"name": "translation", "model": "test_mt_transformer"}]
    model = zoo.create_model("multitask", core="test", tasks=entries)
    freeze(model, "linear_probe")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith("core.") for n in trainable)
    tied = {id(p) for p in model.tasks["translation"].tgt_adapter.parameters()}
    for name, param in model.named_parameters():
        part = name.split(".")[2]  # tasks.<name>.<part>...
        if part == "src_adapter":  # its embedding is the target's (tied), nothing else trains
            assert param.requires_grad == (id(param) in tied), name
        else:
            assert param.requires_grad == (part in ("head", "decoder", "tgt_adapter")), name
    assert any(n.startswith("tasks.vision.head.") for n in trainable)
    assert any(n.startswith("tasks.translation.decoder.") for n in trainable)
    assert not model.core.blocks[0].attn.qkv.weight.requires_grad
    assert not any(p.requires_grad for p in model.tasks["vision"].adapter.parameters())
