"""Import timm Vision Transformers (``timm.models.vision_transformer.VisionTransformer``).

Our layer names follow timm's ViT, so weights move over by a prefix rename::

    patch_embed.proj.*      -> adapter.patch_embed.proj.*
    cls_token, pos_embed    -> adapter.cls_token, adapter.pos_embed
    blocks.N.*              -> core.blocks.N.*   (norm1, attn.qkv, attn.proj, norm2, mlp.fc1,
                                                  mlp.fc2, ls1.gamma, ls2.gamma)
    norm.*                  -> core.norm.*       (a final norm before pooling)
    fc_norm.*               -> head.norm.*       (a norm after pooling: ViTConfig.fc_norm; the
                                                  core's own norm is then kept but not used)
    head.*                  -> head.fc.*

timm itself is not imported: ``from_timm`` reads the module's attributes, and the checkpoint
loaders read plain ``.safetensors`` / ``.pth`` state dicts.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from encoders.core import CoreConfig
from encoders.layers import NORM_EPS
from encoders.positional import interpolate_pos_embed
from tasks.classification import ImageClassifier, ViTConfig
from zoo.checkpoint import load_reason
from zoo.registry import apply_overrides, build_model, get_config, list_models

log = logging.getLogger(__name__)

_RENAMES = [  # (timm key pattern, our key template), tried in order
    (r"patch_embed\.proj\.(weight|bias)", r"adapter.patch_embed.proj.\1"),
    (r"(cls_token|pos_embed)", r"adapter.\1"),
    (
        r"blocks\.(\d+)\.(norm1|attn\.qkv|attn\.proj|norm2|mlp\.fc1|mlp\.fc2)\.(weight|bias)",
        r"core.blocks.\1.\2.\3",
    ),
    (r"blocks\.(\d+)\.(ls1|ls2)\.gamma", r"core.blocks.\1.\2.gamma"),
    (r"norm\.(weight|bias)", r"core.norm.\1"),
    (r"fc_norm\.(weight|bias)", r"head.norm.\1"),
    (r"head\.(weight|bias)", r"head.fc.\1"),
]
# Biases timm may leave out (patch_embed without bias in CLIP-style models, proj_bias=False):
# ours always exist, so a zero bias reproduces timm exactly.
_OPTIONAL_BIAS = re.compile(r".*(patch_embed\.proj|attn\.proj|attn\.qkv|mlp\.fc1|mlp\.fc2)\.bias")


def timm_to_zoo_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename a timm ViT state dict to our ``ImageClassifier`` keys.

    Raises:
        ValueError: a timm key has no counterpart in our ViT (register tokens, pre-norm,
            qk-norm, attention pooling...); the message names the key.
    """
    out = {}
    for key, tensor in state.items():
        for pattern, template in _RENAMES:
            if re.fullmatch(pattern, key):
                out[re.sub(pattern, template, key)] = tensor
                break
        else:
            raise ValueError(
                f"timm weight '{key}' has no counterpart in the zoo ViT (supported: patch "
                "embedding, cls token, learned positions, pre-norm blocks, final norm or fc_norm, "
                "linear head)"
            )
    return out


def _fit(model: ImageClassifier, state: dict[str, Tensor], skip_head: bool) -> dict[str, Tensor]:
    """Complete and check renamed weights against ``model``: zero biases timm left out,
    resample positions to our grid, optionally drop a head of another size."""
    expected = model.state_dict()
    state = dict(state)
    for key, tensor in expected.items():
        if key not in state and _OPTIONAL_BIAS.fullmatch(key):
            weight = state.get(key.removesuffix("bias") + "weight")
            if weight is not None:
                state[key] = torch.zeros_like(tensor, dtype=weight.dtype)
    pos = state.get("adapter.pos_embed")
    want = expected.get("adapter.pos_embed")
    if pos is not None and want is not None and pos.shape != want.shape and pos.ndim == 3:
        state["adapter.pos_embed"] = _resample_pos_embed(pos, model)
    if skip_head:
        _keep_own_head(state, expected)
    if model.cfg.fc_norm:  # timm has no final norm there; ours stays as initialised, unused
        state.update({k: expected[k] for k in ("core.norm.weight", "core.norm.bias")})
    problems = [f"weight '{k}' is missing" for k in expected if k not in state]
    problems += [f"weight '{k}' is unexpected" for k in state if k not in expected]
    problems += [
        f"weight '{k}' has shape {tuple(state[k].shape)} in the timm weights vs "
        f"{tuple(t.shape)} in the zoo model"
        for k, t in expected.items()
        if k in state and state[k].shape != t.shape
    ]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ValueError(f"timm weights do not fit {model.model_name}: {problems[0]}{more}")
    return state


def _keep_own_head(state: dict[str, Tensor], expected: dict[str, Tensor]) -> None:
    """Replace a timm head of another size (or none) by the model's own, freshly initialised."""
    for key in ("head.fc.weight", "head.fc.bias"):
        if key not in expected:
            state.pop(key, None)
        elif key not in state or state[key].shape != expected[key].shape:
            log.info("timm weights have no head of this size: '%s' stays freshly initialised", key)
            state[key] = expected[key]


def _resample_pos_embed(pos: Tensor, model: ImageClassifier) -> Tensor:
    """Bicubic resampling of timm positions (1, P + G*G, D) to our grid, as timm does on load."""
    prefix = model.adapter.num_prefix
    side = math.isqrt(pos.shape[1] - prefix)
    if side * side != pos.shape[1] - prefix:
        return pos  # not a square grid: let the shape check name it
    return interpolate_pos_embed(pos, (side, side), model.adapter.grid, prefix)


def load_weights_from_timm(
    model: ImageClassifier, state: dict[str, Tensor], skip_head: bool = False
) -> ImageClassifier:
    """Load a timm ViT state dict into our ``model`` (strict; missing biases become zeros,
    positions are resampled to the model's grid).

    Args:
        model: a zoo ``ImageClassifier``.
        state: timm-named weights (``load_timm_checkpoint`` or ``timm_model.state_dict()``).
        skip_head: keep the model's own head when the timm head has another number of classes.
    Raises:
        ValueError: a key is missing, unexpected or of another shape; the message names it.
    """
    fitted = _fit(model, timm_to_zoo_state_dict(state), skip_head)
    model.load_state_dict(fitted)
    return model


def load_timm_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """Read timm ViT weights from a ``.safetensors`` file or a ``.pth``/``.pt``/``.bin`` file
    (``torch.load(weights_only=True)``; ``{"state_dict": ...}``/``{"model": ...}`` wrappers and
    DDP's ``module.`` prefix are removed).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be read as a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"timm checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, pickle with code objects, wrong format
        raise ValueError(f"cannot read timm checkpoint {path}: {load_reason(e)}") from e
    for wrapper in ("state_dict", "model", "state_dict_ema", "model_ema"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"timm checkpoint {path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def create_from_timm_checkpoint(name: str, path: str | Path, **overrides: Any) -> ImageClassifier:
    """``create_model(name, pretrained="timm:PATH", **overrides)``: build a registered ViT and load
    timm weights into it. With ``num_classes`` overridden, a timm head of another size is
    skipped (fine-tuning); otherwise every shape must match."""
    model = build_model(name, get_config(name, **overrides))
    if not isinstance(model, ImageClassifier):
        raise ValueError(f"timm weights load into ViT classifiers only, not into '{name}'")
    state = load_timm_checkpoint(path)
    return load_weights_from_timm(model, state, skip_head="num_classes" in overrides)


# ---------------------------------------------------------------------------------------------
# From a timm module


def _square(value: Any, what: str) -> int:
    a, b = (value, value) if isinstance(value, int) else tuple(value)
    if a != b:
        raise ValueError(
            f"timm ViT has a non-square {what} {a}x{b}; the zoo ViT needs a square one"
        )
    return int(a)


def _check_supported(vit: nn.Module) -> None:
    """Raise for timm ViT features our model does not have and whose weights do not show it."""
    pool = getattr(vit, "global_pool", None)
    block = vit.blocks[0]
    unsupported = [
        (pool not in ("token", "avg"), f"global_pool '{pool}' (only 'token' and 'avg' map)"),
        (getattr(vit, "no_embed_class", False), "no_embed_class=True"),
        (getattr(vit, "num_reg_tokens", 0) > 0, "register tokens"),
        (getattr(vit, "pos_embed", None) is None, "no learned position embedding"),
        (pool == "avg" and getattr(vit, "pool_include_prefix", False), "pool_include_prefix"),
        (not _has_norm(vit, "norm") and not _has_norm(vit, "fc_norm"),
         "final norm at all (timm final_norm=False)"),
        (type(block).__name__ != "Block", f"block type {type(block).__name__}"),
        (getattr(block.norm1, "eps", NORM_EPS) != NORM_EPS, f"LayerNorm eps {block.norm1.eps}"),
        (type(block.attn).__name__ != "Attention", f"attention {type(block.attn).__name__}"),
        (type(block.mlp).__name__ != "Mlp", f"MLP type {type(block.mlp).__name__}"),
        (getattr(block.attn, "gate", None) is not None, "gated attention"),
        (
            not (isinstance(block.mlp.act, nn.GELU) and block.mlp.act.approximate == "none"),
            f"activation {block.mlp.act}",
        ),
    ]
    for bad, what in unsupported:
        if bad:
            raise ValueError(f"cannot convert this timm ViT: the zoo ViT has no {what}")


def _has_norm(vit: nn.Module, name: str) -> bool:
    return not isinstance(getattr(vit, name, None), (nn.Identity, type(None)))


def timm_config(vit: nn.Module, **overrides: Any) -> ViTConfig:
    """The ``ViTConfig`` equivalent to a timm ``VisionTransformer`` (plus ``overrides``)."""
    _check_supported(vit)
    block = vit.blocks[0]
    dim = vit.embed_dim
    ls = getattr(block, "ls1", None)
    in_chans = vit.patch_embed.proj.in_channels
    data_cfg = getattr(vit, "pretrained_cfg", None) or {}
    mean, std = tuple(data_cfg.get("mean", ())), tuple(data_cfg.get("std", ()))
    if len(mean) != in_chans or len(std) != in_chans:
        mean, std = (0.5,) * in_chans, (0.5,) * in_chans
    cfg = ViTConfig(
        img_size=_square(vit.patch_embed.img_size, "image size"),
        patch_size=_square(vit.patch_embed.patch_size, "patch size"),
        in_chans=in_chans,
        num_classes=vit.num_classes,
        core=CoreConfig(
            dim=dim,
            depth=len(vit.blocks),
            num_heads=block.attn.num_heads,
            mlp_ratio=block.mlp.fc1.out_features / dim,
            qkv_bias=block.attn.qkv.bias is not None,
            layer_scale=1e-5 if hasattr(ls, "gamma") else None,  # an init: weights replace it
        ),
        global_pool="cls" if vit.global_pool == "token" else "avg",
        fc_norm=_has_norm(vit, "fc_norm"),
        class_token=bool(vit.has_class_token),
        mean=mean,
        std=std,
    )
    return apply_overrides(cfg, overrides, "a timm ViT")


def _closest_name(cfg: ViTConfig) -> str:
    """The registered ViT whose config shares the most settings with ``cfg``."""
    target = _flat(cfg)

    def shared(name: str) -> int:
        return sum(target[k] == v for k, v in _flat(get_config(name)).items())

    names = list_models("vit_*", task="classification")
    return max(names, key=lambda n: (shared(n), n.startswith("vit_")))


def _flat(cfg: ViTConfig) -> dict[str, Any]:
    """The config's settings with the core's among them, for counting shared ones."""
    fields = dataclasses.asdict(cfg)
    return {**fields.pop("core"), **fields}


def from_timm(vit: nn.Module, **overrides: Any) -> ImageClassifier:
    """Convert a timm ``VisionTransformer`` into a zoo ``ImageClassifier`` with equal logits.

    The model is tagged with the closest registered ViT name and carries the full config, so
    ``save_pretrained`` / ``load_pretrained`` round-trip it.

    Args:
        vit: a timm ViT (any size, patch, width, depth, heads, channels, classes; cls-token or
            mean pooling, with or without a class token, the norm before or after pooling;
            with or without qkv bias and LayerScale).
        **overrides: ``ViTConfig`` fields to change (e.g. ``dropout``) — not shapes.
    Returns:
        the converted model, in eval mode.
    Raises:
        ValueError: the timm model uses a feature the zoo ViT does not have.
    """
    cfg = timm_config(vit, **overrides)
    model = build_model(_closest_name(cfg), cfg)
    load_weights_from_timm(model, vit.state_dict())
    return model.eval()
