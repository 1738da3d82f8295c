"""The recipe settings of the classification task: ``data.options`` and ``augment``.

The model's input (``img_size``, ``in_chans``, ``mean``, ``std``) is set in one place, the
model (``model.overrides``); what the data implies fills in the rest (timm's data config works
the same way, from the model's pretrained config).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tasks.options import setting

DATASETS = ("synthetic", "fashion_mnist", "mnist", "cifar10", "cifar100", "imagefolder")
SYNTHETIC = ("synthetic",)


@dataclass
class ClassificationData:
    """``data.options``: the splits and preprocessing of the images."""

    # evaluation: resize to img_size / crop_pct, then centre-crop; None: 0.875 for imagefolder,
    # else 1 (no crop)
    crop_pct: float | None = setting(None, gt=0, le=1)
    class_names: tuple[str, ...] | None = None  # names shown by predict; None: the dataset's
    max_eval_samples: int | None = setting(None, ge=1)  # cap the validation and test splits
    # the images' channels: synthetic ones are generated with, imagefolder ones converted to it
    channels: int = setting(3, ge=1, datasets=("synthetic", "imagefolder"))
    num_train: int = setting(6000, ge=1, datasets=SYNTHETIC)
    num_val: int = setting(1000, ge=1, datasets=SYNTHETIC)
    num_test: int = setting(1000, ge=1, datasets=SYNTHETIC)
    # the generated images' side in pixels (the model's img_size resizes them)
    native_size: int = setting(32, ge=1, datasets=SYNTHETIC)
    num_classes: int = setting(10, ge=1, le=10, datasets=SYNTHETIC)  # the first N shapes
    # seed of the generated images; train.seed carves val out of train and draws max_samples
    data_seed: int = setting(0, datasets=SYNTHETIC)


@dataclass
class ClassificationAugment:
    """``augment``: training-time augmentation (evaluation images are only resized)."""

    policy: Literal["none", "flip", "randaugment", "trivialaugment"] = "none"
    mixup: float = setting(0.0, ge=0)  # Beta alpha of MixUp (soft targets); 0: off
    cutmix: float = setting(0.0, ge=0)  # Beta alpha of CutMix; with mixup, one per batch
    random_resized_crop: bool | None = None  # crops of random scale; None: on for imagefolder
    crop_padding: int = setting(0, ge=0)  # random crops of the image padded by N pixels


MOVED = {
    "data.image_size": "model.overrides.img_size",
    "data.options.image_size": "data.options.native_size",
    "data.options.in_chans": "data.options.channels",
    "data.options.seed": "data.options.data_seed",
    "data.options.mean": "model.overrides.mean",
    "data.options.std": "model.overrides.std",
    "data.options.augment": "augment.policy",
    **{
        f"data.options.{key}": f"augment.{key}"
        for key in ("mixup", "cutmix", "random_resized_crop", "crop_padding")
    },
}
