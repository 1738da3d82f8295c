"""timm ViT -> zoo ImageClassifier: equal logits for every supported configuration, checkpoint
files through ``create_model(pretrained="timm:...")``, clear errors for what does not map."""

from __future__ import annotations

import pytest
import torch

timm_vit = pytest.importorskip("timm.models.vision_transformer")

from zoo.interop import from_timm, load_timm_checkpoint  # noqa: E402
from zoo.pretrained import create_model, load_pretrained  # noqa: E402
from zoo.saved_model import save_pretrained  # noqa: E402

SMALL = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4)
CONFIGS = {
    "cls": {},
    "avg_no_cls_token": dict(global_pool="avg", class_token=False),
    "avg_with_cls_token": dict(global_pool="avg"),
    "avg_norm_before_pooling": dict(global_pool="avg", fc_norm=False),
    "cls_fc_norm": dict(fc_norm=True),
    "no_qkv_bias": dict(qkv_bias=False),
    "layer_scale": dict(init_values=0.1),
    "grey_patch4_28": dict(img_size=28, patch_size=4, in_chans=1, num_classes=7),
    "wide_heads_mlp2": dict(embed_dim=96, num_heads=6, mlp_ratio=2.0, depth=3),
    "no_head": dict(num_classes=0),
    "no_proj_bias": dict(proj_bias=False),
}


def _timm(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm_vit.VisionTransformer(**{**SMALL, **kwargs}).eval()


def _randomise_norms(model: torch.nn.Module) -> None:
    # timm initialises norms to (1, 0) and biases to 0: perturb them so a swapped norm shows.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias") or "gamma" in name:
                p.add_(0.1 * torch.randn_like(p))


def _assert_same_logits(vit: torch.nn.Module, ours: torch.nn.Module, img_size: int, chans: int):
    x = torch.randn(3, chans, img_size, img_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = vit(x), ours(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_from_timm_equal_logits(name: str) -> None:
    kwargs = {**SMALL, **CONFIGS[name]}
    vit = _timm(**kwargs)
    _randomise_norms(vit)
    ours = from_timm(vit)
    _assert_same_logits(vit, ours, kwargs["img_size"], kwargs.get("in_chans", 3))


def test_from_timm_tiny_224() -> None:
    vit = timm_vit.VisionTransformer(embed_dim=192, depth=2, num_heads=3).eval()
    _randomise_norms(vit)
    ours = from_timm(vit)
    assert ours.model_name == "vit_tiny_patch16_224"
    _assert_same_logits(vit, ours, 224, 3)


def test_from_timm_round_trips_through_save_pretrained(tmp_path) -> None:
    vit = _timm(global_pool="avg", class_token=False, num_classes=5)
    ours = from_timm(vit)
    save_pretrained(ours, tmp_path / "m")
    again = load_pretrained(tmp_path / "m")
    assert again.cfg == ours.cfg
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again(x), ours(x), atol=0.0, rtol=0.0)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_create_model_loads_timm_file(tmp_path, suffix: str) -> None:
    vit = timm_vit.VisionTransformer(embed_dim=192, depth=12, num_heads=3, num_classes=1000)
    vit = vit.eval()
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(vit.state_dict(), path)
    else:
        torch.save({"state_dict": vit.state_dict()}, path)
    assert set(load_timm_checkpoint(path)) == set(vit.state_dict())
    ours = create_model("vit_tiny_patch16_224", pretrained=f"timm:{path}").eval()
    _assert_same_logits(vit, ours, 224, 3)


def test_timm_file_for_fine_tuning_resamples_positions_and_skips_head(tmp_path) -> None:
    vit = _timm(num_classes=1000)
    torch.save(vit.state_dict(), tmp_path / "w.pth")
    ours = create_model(
        "test_vit", pretrained=f"timm:{tmp_path / 'w.pth'}", img_size=64, num_classes=3
    )
    assert ours.adapter.pos_embed.shape == (1, 1 + 8 * 8, 64)
    torch.testing.assert_close(ours.core.blocks[1].mlp.fc2.weight, vit.blocks[1].mlp.fc2.weight)
    assert ours(torch.randn(1, 3, 64, 64)).shape == (1, 3)


def test_timm_file_shape_mismatch_names_the_key(tmp_path) -> None:
    torch.save(_timm(embed_dim=32, num_heads=4).state_dict(), tmp_path / "w.pth")
    with pytest.raises(ValueError, match=r"weight .adapter\.cls_token. has shape \(1, 1, 32\)"):
        create_model("test_vit", pretrained=f"timm:{tmp_path / 'w.pth'}")


def test_timm_file_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        create_model("test_vit", pretrained=f"timm:{tmp_path / 'missing.pth'}")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="bad.safetensors"):
        load_timm_checkpoint(tmp_path / "bad.safetensors")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(reg_tokens=2), "register tokens"),
        (dict(global_pool="map"), "global_pool 'map'"),
        (dict(no_embed_class=True), "no_embed_class"),
        (dict(qk_norm=True), "q_norm"),
        (dict(pre_norm=True), "norm_pre"),
        (dict(final_norm=False), "final_norm=False"),
    ],
)
def test_unsupported_timm_configs_raise(kwargs, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        from_timm(_timm(**kwargs))
