"""The image classification task: datasets from a recipe, batching, loss, top-1/top-5, predict.

Recipe settings it reads: ``data`` (``dataset``: synthetic, fashion_mnist, mnist, cifar10,
cifar100, imagefolder; ``root``, ``val_fraction``, ``max_samples``), ``data.options`` and
``augment`` (the dataclasses of ``tasks.classification.options``), ``train.label_smoothing``,
and the model's ``img_size``, ``in_chans``, ``mean`` and ``std`` from ``model.overrides``
(default: the data's native size and channels, 0.5 per channel).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from tasks.base import Batch, Task, iterate, register_task
from tasks.classification.data import (
    BATCH_AUGMENTS,
    FASHION_MNIST_CLASSES,
    BatchTransform,
    ImageDataset,
    Split,
    build_mixing,
    build_transform,
    load_cifar,
    load_idx,
    load_image,
    load_imagefolder,
)
from tasks.classification.metrics import (
    confusion_matrix,
    per_class_accuracy,
    plot_confusion_matrix,
    topk_correct,
)
from tasks.classification.options import (
    DATASETS,
    MOVED,
    ClassificationAugment,
    ClassificationData,
)
from tasks.classification.synthetic import SYNTHETIC_CLASSES, make_synthetic

log = logging.getLogger(__name__)

NATIVE_SIZE = {"fashion_mnist": 28, "mnist": 28, "cifar10": 32, "cifar100": 32, "imagefolder": 224}

def _random_subset(split: Split, n: int | None, seed: int) -> Split:
    """At most ``n`` samples, drawn without replacement by ``seed`` (all when n is None)."""
    if n is None or n >= len(split):
        return split
    return split.subset(
        torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n]
    )


def _carve(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """(train, val): a seeded ``fraction`` of ``split`` becomes the validation split."""
    n_val = max(1, round(len(split) * fraction))
    if n_val >= len(split):
        raise ValueError(f"val_fraction {fraction} leaves no training samples of {len(split)}")
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
    return split.subset(order[n_val:]), split.subset(order[:n_val])


@register_task
class ClassificationTask(Task):
    """Image classification with ``ImageClassifier`` models (ViT)."""

    name = "classification"
    metric = "top1"
    metric_mode = "max"
    metrics = ("top1", "top5", "loss")
    unit = "samples"
    dataset_names = DATASETS
    option_types = {"data.options": ClassificationData, "augment": ClassificationAugment}
    moved_keys = MOVED

    def __init__(self, recipe: Any, run_dir: str | Path | None = None) -> None:
        super().__init__(recipe, run_dir)
        self.opts: ClassificationData = self.section("data.options")
        self.augment: ClassificationAugment = self.section("augment")
        self.label_smoothing = float(recipe.train.label_smoothing)
        self.meta: dict[str, Any] = {}  # class_names, img_size, in_chans, mean, std, crop_pct
        self.splits: dict[str, Split] = {}
        self._mixing = None
        self.last_confusion: Tensor | None = None  # (K, K) of the last evaluate, for reports

    # -- data ---------------------------------------------------------------------------------
    def _root(self) -> Path:
        if self.data.root is None:
            raise ValueError(f"dataset '{self.data.dataset}' needs data.root (its folder)")
        root = Path(self.data.root).expanduser()
        if not root.exists():
            raise FileNotFoundError(f"data root {root} does not exist")
        return root

    def _where(self) -> str:
        root = f" at {self.data.root}" if self.data.root else ""
        return f"dataset '{self.data.dataset}'{root}"

    def _load(self) -> tuple[dict[str, Split], list[str]]:
        """The dataset's own splits (train, maybe val/test) and class names."""
        dataset, opt = self.data.dataset, self.opts
        if dataset not in DATASETS:  # the recipe checker names the nearest; this is a backstop
            raise ValueError(f"unknown classification dataset '{dataset}'; expected {DATASETS}")
        if dataset == "synthetic":
            size, chans, k, seed = opt.native_size, opt.channels, opt.num_classes, opt.data_seed
            counts = {"train": opt.num_train, "val": opt.num_val, "test": opt.num_test}
            splits = {
                split: Split(*make_synthetic(n, size, chans, 3 * seed + i, k))
                for i, (split, n) in enumerate(counts.items())
            }
            return splits, list(SYNTHETIC_CLASSES[:k])
        if dataset in ("fashion_mnist", "mnist"):
            names = FASHION_MNIST_CLASSES if dataset == "fashion_mnist" else range(10)
            return load_idx(self._root()), [str(n) for n in names]
        if dataset in ("cifar10", "cifar100"):
            return load_cifar(self._root(), 10 if dataset == "cifar10" else 100)
        return load_imagefolder(self._root())

    def _split(self, splits: dict[str, Split]) -> dict[str, Split]:
        """Carve val from train when the data has none; cap the sizes."""
        fraction = self.data.val_fraction
        for name, split in splits.items():
            if len(split) == 0:
                raise ValueError(f"the {name} split of {self._where()} is empty")
        if "val" not in splits:
            if not fraction:
                raise ValueError(f"{self._where()} has no validation split and val_fraction is 0")
            splits["train"], splits["val"] = _carve(splits["train"], fraction, self.seed)
        splits["train"] = _random_subset(splits["train"], self.data.max_samples, self.seed)
        for name in ("val", "test"):
            if name in splits:
                splits[name] = _random_subset(splits[name], self.opts.max_eval_samples, 0)
        return {name: splits[name] for name in ("train", "val", "test") if name in splits}

    def prepare(self) -> dict[str, Any]:
        """Load (or generate) the data; return the model settings it implies: ``num_classes``,
        ``in_chans``, ``img_size``, and the normalisation ``mean``/``std`` kept with the model."""
        splits, names = self._load()
        self.splits = self._split(splits)
        names = [str(n) for n in (self.opts.class_names or names)]
        k = self._num_classes(names)
        self.meta = {"class_names": names, **self._image_settings()}
        self._mixing = build_mixing(self.augment.mixup, self.augment.cutmix, k)
        log.info("%s: %s", self._where(), {n: len(s) for n, s in self.splits.items()})
        m = self.meta
        return dict(
            num_classes=k, in_chans=m["in_chans"], img_size=m["img_size"],
            mean=tuple(m["mean"]), std=tuple(m["std"]),
        )  # fmt: skip

    def _num_classes(self, names: list[str]) -> int:
        k = max(int(s.labels.max()) for s in self.splits.values()) + 1
        if len(names) < k:
            raise ValueError(f"data.options.class_names has {len(names)} names for {k} classes")
        k = max(k, len(names))  # a small subset may miss the last classes
        if self.recipe.model.overrides.get("num_classes", k) < k:
            raise ValueError(f"model.overrides.num_classes is below the {k} classes of the data")
        return k

    def _image_settings(self) -> dict[str, Any]:
        """img_size, in_chans, mean, std: the model overrides, else the dataset's native size
        and channels and 0.5 per channel; crop_pct from ``data.options``."""
        overrides, opt, dataset = self.recipe.model.overrides, self.opts, self.data.dataset
        first = self.splits["train"].images
        native_chans = first.shape[1] if isinstance(first, Tensor) else opt.channels
        chans = overrides.get("in_chans", native_chans)
        native_size = opt.native_size if dataset == "synthetic" else NATIVE_SIZE[dataset]
        size = overrides.get("img_size", native_size)
        mean = list(overrides.get("mean", (0.5,) * chans))
        std = list(overrides.get("std", (0.5,) * chans))
        if len(mean) != chans or len(std) != chans:
            raise ValueError(
                f"mean and std need {chans} values (one per channel), got {mean}, {std}"
            )
        crop_pct = opt.crop_pct or (0.875 if dataset == "imagefolder" else 1.0)
        return dict(img_size=size, in_chans=chans, mean=mean, std=std, crop_pct=crop_pct)

    def datasets(self) -> dict[str, Dataset]:
        """``train``, ``val`` and (when the data has one) ``test``, with their transforms."""
        if not self.splits:
            self.prepare()
        m = self.meta
        augment, padding = self.augment.policy, self.augment.crop_padding
        rrc = self.augment.random_resized_crop
        rrc = self.data.dataset == "imagefolder" if rrc is None else rrc
        out = {}
        for name, split in self.splits.items():
            train = name == "train"
            settings = (m["img_size"], m["mean"], m["std"], train, augment, m["crop_pct"])
            transform = build_transform(*settings, rrc, padding)
            # In-memory images without per-image policies are transformed a batch at a time
            batched = isinstance(split.images, Tensor) and augment in BATCH_AUGMENTS and not rrc
            batch_transform = BatchTransform(*settings, padding) if batched else None
            out[name] = ImageDataset(
                split, transform, m["in_chans"], mixable=train, batch_transform=batch_transform
            )
        return out

    def collate(self, samples: list[tuple[Tensor, int, bool]]) -> Batch:
        """Samples -> ``{"images": (B, C, H, W) float, "labels": (B,) int64}``; training batches
        with MixUp/CutMix on get soft ``labels`` (B, K) instead."""
        images = torch.stack([s[0] for s in samples])
        labels = torch.tensor([s[1] for s in samples], dtype=torch.long)
        if self._mixing is not None and samples[0][2]:
            images, labels = self._mixing(images, labels)
        return {"images": images, "labels": labels}

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers under spawn pickle the task with its collate: the datasets hold
        # their own samples, so leave the full splits behind.
        return {**self.__dict__, "splits": {}}

    # -- model --------------------------------------------------------------------------------
    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        """Cross-entropy (hard or soft targets, with ``train.label_smoothing``) and accuracy."""
        logits = model(batch["images"])
        labels = batch["labels"]
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        hard = labels.argmax(1) if labels.ndim == 2 else labels
        acc = (logits.argmax(1) == hard).float().mean() * 100
        return loss, {"loss": loss.item(), "acc": acc.item()}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any) -> dict[str, float]:
        """``top1`` and ``top5`` accuracy in percent and the mean cross-entropy ``loss``."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        n, loss_sum, top1, top5 = 0, 0.0, 0, 0
        matrix = None
        for batch in iterate(loader, device):
            logits = model(batch["images"]).float()
            labels = batch["labels"]
            labels = labels.argmax(1) if labels.ndim == 2 else labels
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
            c1, c5 = topk_correct(logits, labels, (1, 5))
            n, top1, top5 = n + len(labels), top1 + c1, top5 + c5
            counts = confusion_matrix(logits.argmax(1), labels, logits.shape[1])  # on device
            matrix = counts if matrix is None else matrix + counts
        model.train(was_training)
        if n == 0:
            raise ValueError("cannot evaluate on an empty loader")
        self.last_confusion = matrix.cpu()
        return {"top1": 100 * top1 / n, "top5": 100 * top5 / n, "loss": loss_sum / n}

    def write_report(self, directory: Path, split: str) -> list[str]:
        """``confusion_{split}.png`` and ``per_class_{split}.json`` (accuracy in percent by
        class name) from the last ``evaluate``; returns the per-class accuracy lines."""
        matrix = self.last_confusion
        if matrix is None:
            return []
        names = list(self.meta.get("class_names") or [])
        if len(names) != len(matrix):
            names = [str(i) for i in range(len(matrix))]
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        accuracy = {  # a class absent from the split has no accuracy: null
            n: None if math.isnan(a) else float(a)
            for n, a in zip(names, (per_class_accuracy(matrix) * 100).tolist())
        }
        (directory / f"per_class_{split}.json").write_text(json.dumps(accuracy, indent=1) + "\n")
        lines = [
            f"  {name}: {'no samples' if acc is None else f'{acc:.2f}'}"
            for name, acc in accuracy.items()
        ]
        image = directory / f"confusion_{split}.png"
        if plot_confusion_matrix(matrix, names, image, split):
            lines.append(f"confusion matrix: {image}")
        return ["per-class top-1:", *lines]

    @torch.no_grad()
    def predict(
        self, model: nn.Module, inputs: Sequence[str], topk: int = 5, batch_size: int = 64
    ) -> list[str]:
        """``"path: label (p=0.93), label2 (p=0.03), ..."`` for each image file.

        Raises:
            FileNotFoundError: an image file does not exist.
            ValueError: an image file is not a readable image.
        """
        meta = self._predict_meta(model)
        transform = build_transform(
            meta["img_size"], meta["mean"], meta["std"], crop_pct=meta["crop_pct"]
        )
        names = meta["class_names"]
        model.eval()
        device = next(model.parameters()).device
        lines = []
        for i in range(0, len(inputs), batch_size):
            chunk = inputs[i : i + batch_size]
            x = torch.stack([transform(load_image(p, meta["in_chans"])) for p in chunk])
            probs = model(x.to(device)).float().softmax(-1)
            top = probs.topk(min(topk, probs.shape[1]), dim=1)
            for path, p_row, i_row in zip(chunk, top.values, top.indices):
                shown = [
                    f"{names[j] if j < len(names) else j} (p={p:.2f})"
                    for p, j in zip(p_row.tolist(), i_row.tolist())
                ]
                lines.append(f"{path}: {', '.join(shown)}")
        return lines

    def _predict_meta(self, model: nn.Module) -> dict[str, Any]:
        """What predict needs: saved task metadata, else the model's own config."""
        cfg = model.cfg
        defaults = dict(
            class_names=[str(i) for i in range(cfg.num_classes)], img_size=cfg.img_size,
            in_chans=cfg.in_chans, mean=list(cfg.mean), std=list(cfg.std), crop_pct=1.0,
        )  # fmt: skip
        return {**defaults, **self.meta}

    # -- saved with the model -----------------------------------------------------------------
    def save_extra(self, directory: Path) -> dict[str, Any]:
        """Class names and the image settings predict needs (JSON, no files)."""
        return dict(self.meta)

    def load_extra(self, directory: Path, meta: dict[str, Any]) -> None:
        """Restore ``save_extra``'s metadata."""
        self.meta = dict(meta)
