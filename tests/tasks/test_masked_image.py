"""Masked image modelling (MAE): the hidden fraction, per-sample shuffles, a loss on the hidden
patches only, per-patch normalised targets, the encoder's keys equal to vit_mini_patch4_28's,
a smoke run that learns, and the mask ratio's bounds. No ``zoo`` import."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import tasks  # noqa: F401  (registers the tasks)
from encoders.core import core_size
from tasks.base import get_task
from tasks.classification import ViTConfig
from tasks.masked_image import MAEConfig, encoder_state_dict
from tasks.masked_image.model import MAEOutput, masked_patch_loss
from tests.tasks.recipes import make_recipe, tiny_config


def tiny(**overrides) -> MAEConfig:
    """test_mae's settings (zoo/models/masked.py)."""
    return tiny_config("masked_image", **overrides)


@pytest.mark.parametrize("ratio", [0.75, 0.5, 0.9, 0.1])
def test_the_stated_fraction_of_patches_is_hidden(ratio: float) -> None:
    model = tiny(mask_ratio=ratio).build()
    latent, mask, ids_restore = model.forward_encoder(torch.randn(5, 3, 32, 32))
    keep = int(16 * (1 - ratio))  # MAE's rounding: K = int(L * (1 - ratio))
    assert mask.shape == (5, 16) and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [16 - keep] * 5
    assert latent.shape == (5, 1 + keep, 64)  # the cls token and the visible patches only
    assert sorted(ids_restore[0].tolist()) == list(range(16))


def test_masks_are_per_sample_shuffles_and_follow_the_noise() -> None:
    model = tiny().build()
    x = torch.randn(64, 16, 8)
    kept, mask, ids_restore = model.random_masking(x, torch.rand(64, 16))
    assert len({tuple(m.tolist()) for m in mask}) > 60  # rows draw their own masks
    for row in range(64):  # the kept tokens are the visible patches, in shuffled order
        visible = x[row][~mask[row]]
        assert {tuple(t.tolist()) for t in kept[row]} == {tuple(t.tolist()) for t in visible}
    noise = torch.rand(1, 16)
    a = model.random_masking(x[:1], noise)[1]
    b = model.random_masking(x[:1], noise)[1]
    assert torch.equal(a, b) and torch.equal(a[0], noise[0].argsort().argsort() >= 4)


def test_the_loss_ignores_the_visible_patches() -> None:
    model = tiny().build()
    out = model(torch.randn(4, 3, 32, 32))
    loss = masked_patch_loss(out)
    noisy = out.pred + torch.where(out.mask[..., None], 0.0, 1e3)  # visible predictions off
    assert masked_patch_loss(MAEOutput(noisy, out.target, out.mask)) == loss
    pred = out.pred.detach().requires_grad_()
    masked_patch_loss(MAEOutput(pred, out.target, out.mask)).backward()
    assert pred.grad[~out.mask].abs().sum() == 0 and pred.grad[out.mask].abs().sum() > 0
    per_patch = (out.pred - out.target).pow(2).mean(-1)
    torch.testing.assert_close(loss, per_patch[out.mask].mean())


def test_targets_are_normalised_per_patch() -> None:
    model = tiny().build()
    images = torch.rand(2, 3, 32, 32) * 3 + 1
    target = model.pixel_targets(images)
    assert target.shape == (2, 16, 8 * 8 * 3)
    torch.testing.assert_close(target.mean(-1), torch.zeros(2, 16), atol=1e-5, rtol=0)
    torch.testing.assert_close(target.var(-1), torch.ones(2, 16), atol=1e-3, rtol=0)
    raw = tiny(norm_pix_loss=False).build().pixel_targets(images)
    p = images[0, :, 8:16, :8]  # the fifth patch: row 1, column 0, pixels in (p1 p2 c) order
    torch.testing.assert_close(raw[0, 4], p.permute(1, 2, 0).reshape(-1))


def test_the_encoder_loads_into_vit_mini_patch4_28() -> None:
    grey = dict(img_size=28, patch_size=4, in_chans=1, core=core_size("mini"), mean=(0.5,),
                std=(0.5,))  # vit_mini_patch4_28 and mae_vit_mini_patch4_28 (zoo/models)
    torch.manual_seed(0)
    mae = MAEConfig(decoder_dim=64, decoder_depth=2, decoder_num_heads=4, **grey).build().eval()
    vit = ViTConfig(num_classes=10, **grey).build().eval()
    encoder = encoder_state_dict(mae.state_dict())
    vit_encoder = {k: v for k, v in vit.state_dict().items() if k.startswith(("adapter.", "core."))}
    assert list(encoder) == list(vit_encoder)
    assert all(encoder[k].shape == v.shape for k, v in vit_encoder.items())
    missing, unexpected = vit.load_state_dict(encoder, strict=False)
    assert unexpected == [] and all(k.startswith("head.") for k in missing)
    images = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(vit.forward_features(images)[0], mae.forward_features(images)[0])


def recipe(**options) -> SimpleNamespace:
    options = {"num_train": 512, "num_val": 128, "num_test": 64, **options}
    return make_recipe("masked_image", {"options": options})


def test_training_on_the_built_in_images_lowers_the_loss() -> None:
    task = get_task("masked_image")(recipe())
    settings = task.prepare()
    assert "num_classes" not in settings and settings["img_size"] == 32
    torch.manual_seed(0)
    model = tiny(**settings).build()
    splits = task.datasets()
    val = task.loader(splits["val"], 128)
    before = task.evaluate(model, val)["loss"]
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.95))
    for epoch in range(3):
        for batch in task.batches(splits["train"], 64, True, epoch):
            loss, _ = task.loss(model, task.collate([splits["train"][i] for i in batch]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    after = task.evaluate(model, val)["loss"]
    assert after < before - 0.1
    assert task.evaluate(model, val)["loss"] == after  # evaluation masks are fixed


@pytest.mark.parametrize("ratio", [0.0, 1.0, 1.5, -0.25])
def test_mask_ratio_outside_0_1_is_refused(ratio: float) -> None:
    message = f"mask_ratio must lie strictly between 0 and 1, got {ratio}$"
    with pytest.raises(ValueError, match=message):
        tiny(mask_ratio=ratio)


def test_images_of_another_size_are_named() -> None:
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 3, 32, 32\), got shape"):
        tiny().build()(torch.randn(2, 3, 28, 28))
