"""Attention figures of an image classifier: where the class token (or, with mean pooling,
the average patch query) looks in every layer and head, and the attention rollout over the
image."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tasks.base import Task
from tasks.classification.data import load_image
from tasks.classification.transforms import build_transform
from zoo.interpret import figures as fg
from zoo.interpret.extract import AttentionExtract, original_heads
from zoo.interpret.rollout import attention_rollout


def load_images(task: Task, model: nn.Module, paths: Sequence[str | Path]) -> Tensor:
    """Image files -> the model's input (B, C, H, W), transformed as for prediction."""
    cfg = model.cfg
    crop_pct = (getattr(task, "meta", None) or {}).get("crop_pct", 1.0)
    transform = build_transform(cfg.img_size, cfg.mean, cfg.std, crop_pct=crop_pct)
    return torch.stack([transform(load_image(p, cfg.in_chans)) for p in paths])


def query_attention(weights: Tensor, num_prefix: int, pool: str) -> Tensor:
    """(B, H, N, N) weights -> (B, H, P) attention of the pooled query over the P patches:
    the class token's row, or the mean of the patch rows for mean pooling."""
    if pool == "cls":
        return weights[:, :, 0, num_prefix:]
    return weights[:, :, num_prefix:, num_prefix:].mean(2)


@torch.no_grad()
def vision_figures(
    task: Task, model: nn.Module, paths: Sequence[str | Path], out: Path,
    head_fusion: str = "mean",
) -> list[Path]:
    """Write ``<image>_heads.png`` and ``<image>_rollout.png`` per image into ``out``."""
    model.eval()
    device = next(model.parameters()).device
    images = load_images(task, model, paths).to(device)
    names = [n for n in original_heads(model) if n.startswith("core.")]
    with AttentionExtract(model, names) as found:
        probs = model(images).float().softmax(-1)
    maps = [found.last(n) for n in names]  # per layer (B, H, N, N)
    labels = list((getattr(task, "meta", None) or {}).get("class_names") or [])
    written = []
    for i, path in enumerate(paths):
        k = int(probs[i].argmax())
        title = f"{Path(path).name}: {labels[k] if k < len(labels) else k} (p={probs[i, k]:.2f})"
        picture = _display_image(images[i], model.cfg)
        layer_maps = [m[i : i + 1] for m in maps]
        stem = out / Path(path).stem
        written.append(_heads_figure(model, layer_maps, picture, title, stem))
        written.append(_rollout_figure(model, layer_maps, picture, title, head_fusion, stem))
    return written


def _display_image(image: Tensor, cfg: Any) -> Tensor:
    """A normalised (C, H, W) input back to (H, W, C) or (H, W) values in [0, 1]."""
    mean = torch.tensor(cfg.mean, device=image.device)[:, None, None]
    std = torch.tensor(cfg.std, device=image.device)[:, None, None]
    pixels = (image * std + mean).clamp(0, 1).cpu()
    return pixels[0] if pixels.shape[0] == 1 else pixels.permute(1, 2, 0)


def _patch_grid(model: nn.Module, picture: Tensor) -> tuple[int, int]:
    size = model.adapter.patch_size
    return picture.shape[0] // size, picture.shape[1] // size


def _overlay(ax: Any, picture: Tensor, values: Tensor, vmax: float, vmin: float = 0.0) -> Any:
    """The image with ``values`` (Gh, Gw) laid over it; returns the overlay (for a bar)."""
    h, w = picture.shape[:2]
    extent = (0, w, h, 0)
    ax.imshow(picture.numpy(), cmap="gray" if picture.ndim == 2 else None, extent=extent)
    return ax.imshow(values.numpy(), cmap="inferno", alpha=0.6, vmin=vmin, vmax=vmax,
                     extent=extent, interpolation="nearest")


def _heads_figure(model: nn.Module, maps: list[Tensor], picture: Tensor, title: str,
                  stem: Path) -> Path:
    """Rows: layers; columns: heads, then their mean."""
    pool, prefix = model.cfg.global_pool, model.adapter.num_prefix
    heads = original_heads(model)
    names = [n for n in heads if n.startswith("core.")]
    cols = max(len(heads[n]) for n in names) + 1
    fig, axes = fg.grid(len(maps), cols, cell=(2.2, 2.2))
    gh, gw = _patch_grid(model, picture)
    for row, (name, weights) in enumerate(zip(names, maps)):
        per_head = fg.as_cpu(query_attention(weights, prefix, pool)[0])  # (H, P)
        panels = [*per_head, per_head.mean(0)]
        vmax = float(torch.stack(panels).max())
        labels = [f"head {h}" for h in heads[name]] + ["mean of heads"]
        for col in range(cols):
            ax = axes[row, col]
            if col >= len(panels) - 1 and col != cols - 1:
                ax.axis("off")  # a pruned layer has fewer heads
                continue
            j = len(panels) - 1 if col == cols - 1 else col
            image = _overlay(ax, picture, panels[j].reshape(gh, gw), vmax)
            ax.set_title(f"layer {row} · {labels[j]}", fontsize=8)
            ax.set_xlabel("x (px)" if row == len(maps) - 1 else "", fontsize=7)
            ax.set_ylabel("y (px)" if col == 0 else "", fontsize=7)
            ax.tick_params(labelsize=6)
        fg.colorbar(fig, image, axes[row, :].tolist())
    query = "class token" if pool == "cls" else "mean of the patch queries"
    fig.suptitle(f"{title}\nattention of the {query} over the {gh}x{gw} patches")
    return fg.save(fig, stem.with_name(stem.name + "_heads.png"))


def _rollout_figure(model: nn.Module, maps: list[Tensor], picture: Tensor, title: str,
                    head_fusion: str, stem: Path) -> Path:
    """The image, the rollout over the patches, and the two overlaid."""
    pool, prefix = model.cfg.global_pool, model.adapter.num_prefix
    rolled = attention_rollout(maps, head_fusion)  # (1, N, N)
    values = fg.as_cpu(query_attention(rolled[:, None], prefix, pool)[0, 0])
    gh, gw = _patch_grid(model, picture)
    grid = values.reshape(gh, gw)
    fig, axes = fg.grid(1, 3, cell=(3.2, 3.0))
    h, w = picture.shape[:2]
    axes[0, 0].imshow(picture.numpy(), cmap="gray" if picture.ndim == 2 else None,
                      extent=(0, w, h, 0))
    axes[0, 0].set_title("input", fontsize=9)
    # the residual path spreads rollout evenly: the colours span its range, not 0 to max
    image = fg.heatmap(axes[0, 1], grid, cmap="inferno", aspect="equal")
    axes[0, 1].set_title("rollout over the patches", fontsize=9)
    axes[0, 1].set_xticks(range(gw))
    axes[0, 1].set_yticks(range(gh))
    axes[0, 1].set_xlabel("patch column")
    axes[0, 1].set_ylabel("patch row")
    fg.colorbar(fig, image, axes[0, 1], "share of the output")
    overlay = _overlay(axes[0, 2], picture, grid, float(grid.max()), float(grid.min()))
    axes[0, 2].set_title("rollout on the image", fontsize=9)
    fg.colorbar(fig, overlay, axes[0, 2], "share of the output")
    for ax in (axes[0, 0], axes[0, 2]):
        ax.set_xlabel("x (px)")
        ax.set_ylabel("y (px)")
    fig.suptitle(f"{title}\nattention rollout, {head_fusion} over heads "
                 f"(Abnar & Zuidema 2020)", fontsize=10)
    return fg.save(fig, stem.with_name(stem.name + "_rollout.png"))
