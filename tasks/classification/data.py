"""Image data: readers of the standard layouts (IDX, CIFAR python batches, ImageFolder), the
dataset wrapper and the torchvision ``transforms.v2`` pipelines.

Every reader returns ``Split``s: images as one uint8 tensor (N, C, H, W) when the whole set fits
in memory (IDX, CIFAR, generated), or a list of file paths read lazily (ImageFolder).
Nothing is ever downloaded.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import v2

from tasks.files import check_file

log = logging.getLogger(__name__)

AUGMENTS = ("none", "flip", "randaugment", "trivialaugment")
BATCH_AUGMENTS = ("none", "flip")  # what BatchTransform can do a batch at a time
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


@dataclass
class Split:
    """One split: ``images`` (N, C, H, W) uint8 or N image paths, and ``labels`` (N,) int64."""

    images: Tensor | list[Path]
    labels: Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: Tensor) -> Split:
        """The samples at ``index`` (K,), in that order."""
        if isinstance(self.images, Tensor):
            return Split(self.images[index], self.labels[index])
        return Split([self.images[i] for i in index.tolist()], self.labels[index])


def load_image(path: str | Path, channels: int = 3) -> Tensor:
    """Read an image file as a (C, H, W) uint8 tensor with ``channels`` 1 (grey) or 3 (RGB).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable image (or a directory, a device).
    """
    path = check_file(path, "image")
    try:
        with Image.open(path) as im:
            return v2.functional.pil_to_tensor(im.convert("L" if channels == 1 else "RGB"))
    except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for unknown/truncated files
        raise ValueError(f"cannot read image {path}: it is not a valid image file ({e})") from e


def match_channels(image: Tensor, channels: int) -> Tensor:
    """(..., C, H, W) -> (..., channels, H, W): grey is repeated to RGB, RGB is turned grey."""
    have = image.shape[-3]
    if have == channels:
        return image
    if have == 1:
        return image.expand(*image.shape[:-3], channels, -1, -1)
    if have == 3 and channels == 1:
        return v2.functional.rgb_to_grayscale(image)
    raise ValueError(f"cannot turn a {have}-channel image into {channels} channels")


# ---------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST)


def read_idx(path: Path) -> Tensor:
    """An IDX file of unsigned bytes (``.gz`` or raw) as a uint8 tensor of its dimensions.

    torchvision's ``read_sn3_pascalvincent_tensor`` reads raw files only and asserts on bad
    input; this reads both and names the file at fault.
    """
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as e:
        raise ValueError(f"cannot read IDX file {path}: {e}") from e
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":  # magic: 0, 0, type 0x08 (ubyte), ndim
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise ValueError(
            f"IDX file {path} is truncated: it ends inside its header ({len(data)} bytes, the "
            f"header of {ndim} dimensions needs {4 + 4 * ndim})"
        )
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])  # big-endian sizes
    payload = data[4 + 4 * ndim :]
    if len(payload) != math.prod(dims):
        raise ValueError(f"IDX file {path} holds {len(payload)} bytes, its header says {dims}")
    if not payload:  # frombuffer refuses an empty buffer
        return torch.zeros(dims, dtype=torch.uint8)
    return torch.frombuffer(bytearray(payload), dtype=torch.uint8).reshape(dims)


def _find_idx(root: Path, prefix: str, kind: str) -> Path:
    names = [f"{prefix}-{kind}-ubyte", f"{prefix}-{kind.replace('-', '.')}-ubyte"]
    dirs = [root, root / "raw", root / "FashionMNIST" / "raw", root / "MNIST" / "raw"]
    for d in dirs:
        for name in names:
            for suffix in (".gz", ""):
                if (d / (name + suffix)).is_file():
                    return d / (name + suffix)
    raise FileNotFoundError(f"IDX file {root / (names[0] + '.gz')} does not exist (nor unzipped)")


def load_idx(root: Path) -> dict[str, Split]:
    """``train`` and ``test`` splits of an MNIST-style folder (``train-images-idx3-ubyte.gz``,
    ``train-labels-idx1-ubyte.gz``, ``t10k-*``; also accepts torchvision's ``<Name>/raw``)."""
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(_find_idx(root, prefix, "images-idx3"))
        labels = read_idx(_find_idx(root, prefix, "labels-idx1"))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"IDX {split} files in {root} disagree: images {tuple(images.shape)}, "
                f"labels {tuple(labels.shape)}"
            )
        splits[split] = Split(images.unsqueeze(1), labels.long())  # (N, H, W) -> (N, 1, H, W)
    return splits


# ---------------------------------------------------------------------------------------------
# CIFAR python batches


class _ArrayUnpickler(pickle.Unpickler):
    """CIFAR batches are pickles: allow numpy arrays and nothing else (no code objects)."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> Any:
        module = module.replace("numpy.core.", "numpy._core.")  # numpy 1 pickles under numpy 2
        if (module, name) in self.ALLOWED or (
            module == "numpy._core.multiarray" and name in ("_reconstruct", "scalar")
        ):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")


def _read_batch(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR batch {path} does not exist")
    try:
        with path.open("rb") as f:
            batch = _ArrayUnpickler(f, encoding="latin1").load()
    except Exception as e:  # truncated file, not a pickle, forbidden class
        raise ValueError(f"cannot read CIFAR batch {path}: {e}") from e
    if not isinstance(batch, dict):
        raise ValueError(f"CIFAR batch {path} holds a {type(batch).__name__}, not a dict")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def _cifar_split(paths: list[Path], label_key: str) -> Split:
    batches = [_read_batch(p) for p in paths]
    try:
        data = [
            torch.as_tensor(b["data"], dtype=torch.uint8).reshape(-1, 3, 32, 32) for b in batches
        ]
        labels = [torch.as_tensor(b[label_key], dtype=torch.long) for b in batches]
    except (KeyError, RuntimeError) as e:
        raise ValueError(f"CIFAR batch in {paths[0].parent} lacks or mis-shapes {e}") from e
    return Split(torch.cat(data), torch.cat(labels))


def load_cifar(root: Path, num_classes: int) -> tuple[dict[str, Split], list[str]]:
    """``train``/``test`` splits and class names of CIFAR-10 or -100 python batches; ``root`` is
    the ``cifar-10-batches-py`` (``cifar-100-python``) folder or its parent.

    torchvision's CIFAR classes would work too, but they check the official MD5 sums (so a
    re-packed copy fails) and unpickle without restriction.
    """
    folder = "cifar-10-batches-py" if num_classes == 10 else "cifar-100-python"
    if (root / folder).is_dir():
        root = root / folder
    if num_classes == 10:
        train_files = sorted(root.glob("data_batch_*")) or [root / "data_batch_1"]
        test_files, meta_file, label_key = [root / "test_batch"], root / "batches.meta", "labels"
        names_key = "label_names"
    else:
        train_files, test_files = [root / "train"], [root / "test"]
        meta_file, label_key, names_key = root / "meta", "fine_labels", "fine_label_names"
    splits = {"train": _cifar_split(train_files, label_key)}
    splits["test"] = _cifar_split(test_files, label_key)
    names = [str(i) for i in range(num_classes)]
    if meta_file.is_file():
        names = list(_read_batch(meta_file).get(names_key, names))
    return splits, names


# ---------------------------------------------------------------------------------------------
# ImageFolder


def _warn_links(links: list[Path]) -> None:
    if links:
        more = f" and {len(links) - 5} more" if len(links) > 5 else ""
        log.warning(
            "skipped %d directory link(s) in an image folder, not followed (a link such as "
            "'loop -> ..' would repeat images under another class): %s%s",
            len(links), ", ".join(map(str, links[:5])), more,
        )  # fmt: skip


def _class_images(folder: Path, links: list[Path]) -> list[Path]:
    """The image files under a class folder in torchvision's order (walk sorted by folder,
    files sorted). Directory links are not followed (torchvision's ``make_dataset`` follows
    them, so a link to a parent repeats the tree without end): they are added to ``links``."""
    found = []
    for root, dirs, files in sorted(os.walk(folder)):  # followlinks=False
        links += [Path(root, d) for d in sorted(dirs) if os.path.islink(os.path.join(root, d))]
        found += [Path(root, f) for f in sorted(files) if f.lower().endswith(IMG_EXTENSIONS)]
    return found


def _folder(directory: Path, class_to_idx: dict[str, int] | None) -> tuple[Split, list[str]]:
    entries = [d for d in directory.iterdir() if d.name[0] != "." and d.is_dir()]
    links = sorted(d for d in entries if d.is_symlink())
    classes = sorted(d.name for d in entries if not d.is_symlink())
    if not classes:
        _warn_links(links)
        raise ValueError(f"image folder {directory} holds no class folders")
    if class_to_idx is None:
        class_to_idx = {c: i for i, c in enumerate(classes)}
    unknown = [c for c in classes if c not in class_to_idx]
    if unknown:
        raise ValueError(f"class folder {directory / unknown[0]} is not among the training classes")
    paths, labels = [], []
    for name in classes:
        images = _class_images(directory / name, links)
        paths += images
        labels += [class_to_idx[name]] * len(images)
    _warn_links(links)
    if not paths:
        raise ValueError(f"image folder {directory} holds no images ({', '.join(IMG_EXTENSIONS)})")
    return Split(paths, torch.tensor(labels, dtype=torch.long)), classes


def load_imagefolder(root: Path) -> tuple[dict[str, Split], list[str]]:
    """Splits of an ImageFolder tree: ``root/train`` (+ ``root/val``, ``root/test``), or class
    folders right under ``root`` (one split, ``train``)."""
    if not (root / "train").is_dir():
        split, classes = _folder(root, None)
        return {"train": split}, classes
    train, classes = _folder(root / "train", None)
    splits = {"train": train}
    index = {c: i for i, c in enumerate(classes)}
    for name in ("val", "test"):
        if (root / name).is_dir():
            splits[name] = _folder(root / name, index)[0]
    return splits, classes


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
