"""The masked image modelling task (MAE pre-training): the image data of the classification task
(every dataset, option and augmentation of it; the labels are not used), and the loss of a
masked autoencoder: the mean squared error of the hidden patches' (normalised) pixels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from tasks.base import Batch, iterate, register_task
from tasks.classification.data import load_image
from tasks.classification.task import ClassificationTask
from tasks.classification.transforms import build_transform
from tasks.masked_image.model import masked_patch_loss


def _noise(batch_size: int, num_patches: int, seed: int, device: torch.device) -> Tensor:
    """(B, L) masking scores drawn from ``seed``: evaluations see the same masks each time."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch_size, num_patches, generator=generator).to(device)


@register_task
class MaskedImageTask(ClassificationTask):
    """MAE pre-training (He et al. 2021) of ``MaskedAutoencoder`` models on image datasets.

    ``recipe.data`` is read as for classification (``dataset``, ``root``, ``options``...). The
    mask ratio and the target normalisation are the model's (``model.overrides.mask_ratio``).
    """

    name: ClassVar[str] = "masked_image"
    metric: ClassVar[str] = "loss"
    metric_mode: ClassVar[str] = "min"
    unit: ClassVar[str] = "samples"

    def prepare(self) -> dict[str, Any]:
        """Load the images; return the settings kept with the model (``in_chans``, ``img_size``,
        ``mean``, ``std``): a masked autoencoder has no classes."""
        settings = super().prepare()
        del settings["num_classes"]
        return settings

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        """Mean squared error of the hidden patches (fresh random masks every step)."""
        loss = masked_patch_loss(model(batch["images"]))  # through the wrapper, for DDP
        return loss, {"loss": loss.item()}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        """``loss``: the mean hidden-patch error over the loader, on masks fixed by the seed."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        total, n = 0.0, 0
        for i, batch in enumerate(iterate(loader, device)):
            images = batch["images"]
            noise = _noise(len(images), model.num_patches, self.seed + i, device)
            total += masked_patch_loss(model(images, noise)).item() * len(images)
            n += len(images)
        model.train(was_training)
        if n == 0:
            raise ValueError("cannot evaluate on an empty loader")
        return {"loss": total / n}

    def write_report(self, directory: Any, split: str) -> list[str]:
        return []  # no confusion matrix: there are no predicted classes

    @torch.no_grad()
    def predict(self, model: nn.Module, inputs: Sequence[str], seed: int = 0,
                **options: Any) -> list[str]:
        """``"path: hidden-patch error E (H of L patches hidden)"`` for each image file."""
        cfg = model.cfg
        meta = {"img_size": cfg.img_size, "in_chans": cfg.in_chans, "mean": list(cfg.mean),
                "std": list(cfg.std), "crop_pct": 1.0, **self.meta}
        transform = build_transform(meta["img_size"], meta["mean"], meta["std"],
                                    crop_pct=meta["crop_pct"])
        model.eval()
        device = next(model.parameters()).device
        lines = []
        for i, path in enumerate(inputs):
            x = transform(load_image(path, meta["in_chans"]))[None].to(device)
            out = model(x, _noise(1, model.num_patches, seed + i, device))
            hidden = int(out.mask.sum())
            lines.append(f"{path}: hidden-patch error {masked_patch_loss(out).item():.4f} "
                         f"({hidden} of {model.num_patches} patches hidden)")
        return lines
