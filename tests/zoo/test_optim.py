"""Parameter groups, schedules and the weight EMA."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from zoo.ema import ModelEMA
from zoo.optim import build_optimizer, build_scheduler, layer_decay_scales, param_groups
from zoo.pretrained import create_model


class Tiny(nn.Module):
    """Token embedding tied to the output layer, plus every kind of no-decay parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.pos_embed = nn.Parameter(torch.zeros(1, 3, 4))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 4))
        self.adapter = nn.Module()
        self.adapter.pos_embed = nn.Embedding(3, 4)  # "adapter.pos_embed.weight"
        self.block = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


def _groups_by_name(groups: list[dict]) -> dict[str, dict]:
    return {name: g for g in groups for name in g["param_names"]}


def test_param_groups_split_decay_and_take_each_param_once() -> None:
    model = Tiny()
    groups = param_groups(model, weight_decay=0.05)
    by_name = _groups_by_name(groups)
    decayed = {n for n, g in by_name.items() if g["weight_decay"] == 0.05}
    assert decayed == {"embed.weight", "block.weight"}
    assert {n for n, g in by_name.items() if g["weight_decay"] == 0.0} == {
        "pos_embed",
        "cls_token",
        "adapter.pos_embed.weight",
        "block.bias",
        "norm.weight",
        "norm.bias",
    }
    params = [p for g in groups for p in g["params"]]
    assert len(params) == len({id(p) for p in params})  # the tied head weight is taken once
    assert {id(p) for p in params} == {id(p) for p in model.parameters() if p.requires_grad}
    assert all(g["lr_scale"] == 1.0 for g in groups)


def test_lr_scale_hook_sets_group_lr() -> None:
    model = Tiny()
    opt = build_optimizer(
        model, lr=1e-3, weight_decay=0.1, lr_scale_fn=lambda n: 0.5 if "block" in n else 1.0
    )
    by_name = _groups_by_name(opt.param_groups)
    assert by_name["block.weight"]["lr"] == pytest.approx(5e-4)
    assert by_name["block.bias"]["lr_scale"] == 0.5 and by_name["block.bias"]["weight_decay"] == 0.0
    assert by_name["embed.weight"]["lr"] == pytest.approx(1e-3)
    build_scheduler(opt, "constant", total_steps=10, warmup_steps=2)
    assert by_name["block.weight"]["lr"] == pytest.approx(
        5e-4 / 2
    )  # warmup applies to the scaled lr


def test_layer_decay_scales_count_layers_from_the_input() -> None:
    vit = create_model("test_vit", depth=3)
    scale = layer_decay_scales(vit, 0.5)
    assert scale("adapter.patch_embed.proj.weight") == 0.5**4  # layer 0 of L + 1 = 4
    assert scale("adapter.cls_token") == scale("adapter.pos_embed") == 0.5**4
    assert [scale(f"core.blocks.{i}.attn.qkv.weight") for i in range(3)] == [0.5**3, 0.25, 0.5]
    assert scale("core.norm.weight") == scale("head.fc.weight") == 1.0
    groups = param_groups(vit, 0.05, scale)
    assert sorted({g["lr_scale"] for g in groups}) == [0.0625, 0.125, 0.25, 0.5, 1.0]
    speech = layer_decay_scales(create_model("test_asr_transformer"), 0.9)
    assert speech("adapter.subsample.conv.0.weight") == pytest.approx(0.9**3)
    assert speech("head.1.weight") == 1.0


def test_layer_decay_needs_one_stack_of_blocks() -> None:
    with pytest.raises(ValueError, match="one stack of blocks; .* has 'core.blocks', 'decoder"):
        layer_decay_scales(create_model("test_mt_transformer"), 0.75)
    with pytest.raises(ValueError, match="Tiny has none"):
        layer_decay_scales(Tiny(), 0.75)


def test_build_optimizer_without_trainable_params_raises() -> None:
    with pytest.raises(ValueError, match="no trainable parameter"):
        build_optimizer(nn.Linear(2, 2).requires_grad_(False), lr=1e-3, weight_decay=0.0)


def _factors(name: str, steps: int, **kwargs: float) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, name, total_steps=steps, **kwargs)
    out = []
    for _ in range(steps + 5):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_warmup_then_decay_to_min() -> None:
    f = _factors("cosine", 100, warmup_steps=10, min_lr_ratio=0.1)
    assert f[0] == pytest.approx(0.1)  # (0 + 1) / 10: the first step already moves
    assert f[:10] == sorted(f[:10]) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0)
    assert f[55] == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the cosine
    assert all(a >= b for a, b in zip(f[10:100], f[11:101]))
    assert f[100] == pytest.approx(0.1) and f[104] == pytest.approx(0.1)


def test_inverse_sqrt_and_constant() -> None:
    f = _factors("inverse_sqrt", 50, warmup_steps=4)
    assert f[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert f[4] == pytest.approx(1.0) and f[16] == pytest.approx(0.5)
    assert f[36] == pytest.approx(math.sqrt(4 / 36))
    c = _factors("constant", 10, warmup_steps=2)
    assert c[:4] == pytest.approx([0.5, 1.0, 1.0, 1.0]) and c[-1] == 1.0
    assert _factors("constant", 3) == pytest.approx([1.0] * 8)


def test_cooldown_anneals_linearly_to_zero() -> None:
    plain = _factors("inverse_sqrt", 100, warmup_steps=4)
    f = _factors("inverse_sqrt", 100, warmup_steps=4, cooldown_steps=20)
    assert f[:80] == pytest.approx(plain[:80])  # untouched before the cooldown
    held = plain[80]
    assert f[80] == pytest.approx(held) and f[90] == pytest.approx(held / 2)
    assert f[99] == pytest.approx(held / 20) and f[100] == 0.0 and f[104] == 0.0
    assert all(a > b for a, b in zip(f[80:100], f[81:101]))
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="cooldown_steps \\(97\\) must fit after the warmup"):
        build_scheduler(opt, "constant", total_steps=100, warmup_steps=4, cooldown_steps=97)


def test_unknown_schedule_names_the_choices() -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="cosine.*inverse_sqrt|constant, cosine, inverse_sqrt"):
        build_scheduler(opt, "linear", total_steps=10)


def test_scheduler_state_loads_weights_only_and_resumes() -> None:
    model = Tiny()
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.1)
    sched = build_scheduler(opt, "cosine", total_steps=20, warmup_steps=5)
    for _ in range(7):
        model.block(torch.randn(2, 4)).sum().backward()
        opt.step()
        sched.step()
    buf = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert state["sched"]["lr_lambdas"] == [None] * len(opt.param_groups)  # no code in the state
    assert state["opt"]["state"]  # AdamW moments were saved too

    opt2 = build_optimizer(model, lr=1e-3, weight_decay=0.1)
    sched2 = build_scheduler(opt2, "cosine", total_steps=20, warmup_steps=5)
    opt2.load_state_dict(state["opt"])
    sched2.load_state_dict(state["sched"])
    opt.step(), sched.step(), opt2.step(), sched2.step()
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]


def test_ema_decay_with_warmup_and_tied_weights() -> None:
    torch.manual_seed(0)
    model = Tiny()
    ema = ModelEMA(model, decay=0.999)
    assert not ema.module.training
    assert not any(p.requires_grad for p in ema.module.parameters())
    assert ema.module.head.weight is ema.module.embed.weight  # tie preserved in the copy
    start = ema.module.embed.weight.clone()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    # Update 0 uses min(0.999, 1 / 10) = 0.1; a tied weight updated twice would differ.
    assert torch.allclose(ema.module.embed.weight, 0.1 * start + 0.9 * (start + 1.0))
    ema.update(model)
    assert ema.updates == 2 and ema.current_decay() == pytest.approx(3 / 12)


def test_ema_without_warmup_is_float32_and_copies_int_buffers() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)).to(torch.bfloat16)
    ema = ModelEMA(model, decay=0.5, warmup=False)
    assert ema.module[0].weight.dtype == torch.float32
    before = ema.module[0].weight.clone()
    model.train()
    model(torch.randn(4, 3, dtype=torch.bfloat16))  # moves BN running stats and its counter
    with torch.no_grad():
        model[0].weight.add_(2.0)
    ema.update(model)
    expected = 0.5 * before + 0.5 * model[0].weight.float()
    assert torch.allclose(ema.module[0].weight, expected)
    assert ema.module[1].num_batches_tracked.item() == 1


def test_ema_state_dict_round_trip_weights_only() -> None:
    model = Tiny()
    ema = ModelEMA(model)
    ema.update(model)
    buf = io.BytesIO()
    torch.save(ema.state_dict(), buf)
    buf.seek(0)
    other = ModelEMA(Tiny())
    other.load_state_dict(torch.load(buf, weights_only=True))
    assert other.updates == 1
    assert torch.equal(other.module.block.weight, ema.module.block.weight)
