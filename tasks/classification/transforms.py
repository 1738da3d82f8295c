"""The image dataset wrapper and the torchvision ``transforms.v2`` pipelines: resizing and
cropping to the model's input, the augmentation policies, a batch-at-a-time transform for
tensors in memory, and MixUp/CutMix."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from tasks.classification.data import Split, load_image, match_channels

AUGMENTS = ("none", "flip", "randaugment", "trivialaugment")
BATCH_AUGMENTS = ("none", "flip")  # what BatchTransform can do a batch at a time


# ---------------------------------------------------------------------------------------------
# Dataset and transforms


class ImageDataset(Dataset):
    """Transformed samples of a ``Split``: ``(image (C, H, W) float, label, mixable)``.

    Args:
        split: the images and labels.
        transform: a ``transforms.v2`` pipeline from uint8 (C, H, W) to a float tensor.
        channels: channels the model takes; images are converted to it.
        mixable: samples may be mixed (MixUp/CutMix) when batched (the training split).
        batch_transform: the same pipeline for whole batches of in-memory images (see
            ``BatchTransform``); used instead of ``transform`` when given.
    """

    def __init__(
        self,
        split: Split,
        transform: v2.Transform,
        channels: int,
        mixable: bool,
        batch_transform: BatchTransform | None = None,
    ):
        self.split, self.transform = split, transform
        self.channels, self.mixable = channels, mixable
        self.batch_transform, self.prepared = batch_transform, None
        if batch_transform is not None:
            if not isinstance(split.images, Tensor):
                raise ValueError("a batch transform needs the images in memory (a uint8 tensor)")
            self.prepared = batch_transform.prepare(match_channels(split.images, channels))

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[Tensor, int, bool]:
        if self.prepared is not None:
            return self.__getitems__([i])[0]
        images = self.split.images
        image = images[i] if isinstance(images, Tensor) else load_image(images[i], self.channels)
        image = tv_tensors.Image(match_channels(image, self.channels))
        out = self.transform(image).as_subclass(Tensor)
        return out, int(self.split.labels[i]), self.mixable

    def __getitems__(self, indices: list[int]) -> list[tuple[Tensor, int, bool]]:
        """A batch of samples; the DataLoader asks for whole batches this way."""
        if self.prepared is None:
            return [self[i] for i in indices]
        images = self.batch_transform(self.prepared[indices])
        labels = self.split.labels[indices].tolist()
        return [(image, label, self.mixable) for image, label in zip(images, labels)]


def _resize_and_crop(img_size: int, crop_pct: float) -> list[v2.Transform]:
    """The deterministic part: short side to img_size / crop_pct, then the centre crop."""
    return [v2.Resize(math.floor(img_size / crop_pct), antialias=True), v2.CenterCrop(img_size)]


class BatchTransform:
    """``build_transform``'s pipeline without RandAugment or random-resized crops, applied to
    in-memory images a batch at a time: the deterministic resize and centre crop once for the
    whole split (``prepare``), then per batch the random padded crop, the flip and the
    normalisation as tensor ops. Each image gets its own crop offset and flip, drawn from the
    same distributions as ``v2.RandomCrop(padding=...)`` and ``v2.RandomHorizontalFlip``. On
    28 px images the per-image transforms cost about a third of a small ViT's training step.

    Args: as ``build_transform`` (``augment`` "none" or "flip").
    """

    def __init__(
        self,
        img_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        train: bool = False,
        augment: str = "none",
        crop_pct: float = 1.0,
        crop_padding: int = 0,
    ):
        if augment not in BATCH_AUGMENTS:
            raise ValueError(f"a batch transform does '{augment}' augmentation per image only")
        self.resize = v2.Compose(_resize_and_crop(img_size, crop_pct))
        self.size = img_size
        self.padding = crop_padding if train else 0
        self.flip = train and augment == "flip"
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def prepare(self, images: Tensor, chunk: int = 4096) -> Tensor:
        """uint8 (N, C, H, W) -> uint8 (N, C, img_size, img_size), resized and centre-cropped."""
        return torch.cat([self.resize(images[i : i + chunk]) for i in range(0, len(images), chunk)])

    def __call__(self, images: Tensor) -> Tensor:
        """Prepared uint8 (B, C, S, S) -> augmented, normalised float (B, C, S, S)."""
        b, c, s = len(images), images.shape[1], self.size
        if self.padding:
            p = self.padding
            padded = torch.nn.functional.pad(images, (p, p, p, p))  # zeros, as v2.RandomCrop
            top, left = torch.randint(0, 2 * p + 1, (2, b, 1))
            rows = (top + torch.arange(s))[:, None, :, None]  # (B, 1, S, 1)
            cols = (left + torch.arange(s))[:, None, None, :]  # (B, 1, 1, S)
            images = padded[
                torch.arange(b)[:, None, None, None], torch.arange(c)[:, None, None], rows, cols
            ]
        if self.flip:
            flipped = torch.rand(b) < 0.5
            images = torch.where(flipped[:, None, None, None], images.flip(-1), images)
        return (images.float() / 255 - self.mean) / self.std


def build_transform(
    img_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    train: bool = False,
    augment: str = "none",
    crop_pct: float = 1.0,
    random_resized_crop: bool = False,
    crop_padding: int = 0,
) -> v2.Compose:
    """uint8 (C, H, W) image -> normalised float (C, img_size, img_size).

    Args:
        img_size: the model's input side.
        mean: per-channel mean (of images scaled to [0, 1]).
        std: per-channel standard deviation.
        train: add the training augmentation.
        augment: "none", "flip", "randaugment" or "trivialaugment" (the last two also flip).
        crop_pct: evaluation resizes the short side to img_size / crop_pct, then centre-crops.
        random_resized_crop: train on random crops of random scale (ImageNet style).
        crop_padding: train on random img_size crops of the image padded by this many pixels
            (the usual small-image augmentation, e.g. 4 for CIFAR).
    """
    if augment not in AUGMENTS:
        raise ValueError(f"unknown augment '{augment}'; expected one of {AUGMENTS}")
    if train and random_resized_crop:
        ops: list[v2.Transform] = [v2.RandomResizedCrop(img_size, antialias=True)]
    else:
        ops = _resize_and_crop(img_size, crop_pct)
    if train and crop_padding > 0:
        ops.append(v2.RandomCrop(img_size, padding=crop_padding))
    if train and augment != "none":
        ops.append(v2.RandomHorizontalFlip())
    if train and augment == "randaugment":
        ops.append(v2.RandAugment())
    elif train and augment == "trivialaugment":
        ops.append(v2.TrivialAugmentWide())
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(ops)


def build_mixing(mixup: float, cutmix: float, num_classes: int) -> v2.Transform | None:
    """Batch-level MixUp and/or CutMix (one of the two per batch when both are on), or None."""
    ops = [
        op(alpha=alpha, num_classes=num_classes)
        for op, alpha in ((v2.MixUp, mixup), (v2.CutMix, cutmix))
        if alpha
    ]
    if not ops:
        return None
    return ops[0] if len(ops) == 1 else v2.RandomChoice(ops)
