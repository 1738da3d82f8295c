"""The classification task: generated and on-disk datasets, batching, loss, metrics, predict,
and that a tiny ViT learns the built-in data."""

from __future__ import annotations

import gzip
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

import tasks  # noqa: F401  (registers the tasks)
from tasks.base import get_task
from tasks.classification.data import (
    BatchTransform,
    ImageDataset,
    Split,
    build_transform,
    load_image,
    read_idx,
)
from tasks.classification.metrics import topk_correct
from tasks.classification.synthetic import make_synthetic
from zoo.config import recipe_from_dict
from zoo.registry import create_model

SMALL = {"num_train": 200, "num_val": 50, "num_test": 50}
FASHION_MNIST = Path(__file__).resolve().parents[3] / "shared" / "data" / "fashion-mnist"


def make_task(
    data: dict | None = None, model: dict | None = None, augment: dict | None = None, **train
):
    data = {"options": dict(SMALL)} if data is None else data
    recipe = recipe_from_dict(
        {
            "task": "classification",
            "model": {"name": "test_vit", **(model or {})},
            "data": data,
            "augment": augment,
            "train": {"max_steps": 10, **train},
        }
    )
    return get_task("classification")(recipe)


def build(task):
    """What the engine does: prepare, build the model from the overrides, make the splits."""
    overrides = task.prepare()
    model = create_model("test_vit", **{**overrides, **task.recipe.model.overrides})
    return model, task.datasets()


def first_batch(task, dataset, batch_size=16):
    batches = task.batches(dataset, batch_size, shuffle=True, epoch_seed=0)
    return next(iter(DataLoader(dataset, batch_sampler=batches, collate_fn=task.collate)))


# -- built-in data ---------------------------------------------------------------------------


def test_synthetic_is_deterministic_and_balanced() -> None:
    x, y = make_synthetic(100, image_size=32, channels=3, seed=5)
    x2, y2 = make_synthetic(100, image_size=32, channels=3, seed=5)
    assert x.shape == (100, 3, 32, 32) and x.dtype == torch.uint8
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(make_synthetic(100, seed=6)[0], x)
    assert torch.bincount(y).tolist() == [10] * 10
    grey, _ = make_synthetic(8, image_size=24, channels=1)
    assert grey.shape == (8, 1, 24, 24)


def test_prepare_synthetic_returns_model_settings() -> None:
    task = make_task({"max_samples": 120, "options": {**SMALL, "channels": 1, "native_size": 16}})
    assert task.prepare() == {
        "num_classes": 10, "in_chans": 1, "img_size": 16, "mean": (0.5,), "std": (0.5,),
    }  # fmt: skip
    sizes = {name: len(d) for name, d in task.datasets().items()}
    assert sizes == {"train": 120, "val": 50, "test": 50}


def test_the_model_input_settings_resize_and_normalise_the_data() -> None:
    overrides = {"img_size": 64, "in_chans": 1, "mean": [0.25], "std": [0.5]}
    task = make_task({"options": SMALL}, {"overrides": overrides})
    model, splits = build(task)
    image, label, _ = splits["val"][0]
    assert image.shape == (1, 64, 64) and model.cfg.img_size == 64 and 0 <= label < 10
    assert (task.meta["mean"], model.cfg.mean) == ([0.25], (0.25,))


def test_collate_loss_and_label_smoothing() -> None:
    task = make_task()
    model, splits = build(task)
    batch = first_batch(task, splits["train"])
    assert batch["images"].shape == (16, 3, 32, 32) and batch["images"].dtype == torch.float32
    assert batch["labels"].shape == (16,) and batch["labels"].dtype == torch.long
    loss, logs = task.loss(model, batch)
    assert loss.ndim == 0 and torch.isfinite(loss) and set(logs) == {"loss", "acc"}
    smooth = make_task(label_smoothing=0.3)
    smooth.prepare()
    assert smooth.loss(model, batch)[0].item() != pytest.approx(loss.item())


def test_mixup_cutmix_give_soft_targets_on_train_only() -> None:
    task = make_task(augment={"mixup": 0.8, "cutmix": 1.0, "policy": "randaugment"})
    model, splits = build(task)
    batch = first_batch(task, splits["train"])
    assert batch["labels"].shape == (16, 10)
    torch.testing.assert_close(batch["labels"].sum(1), torch.ones(16))
    loss, _ = task.loss(model, batch)
    loss.backward()
    assert first_batch(task, splits["val"])["labels"].shape == (16,)


@pytest.mark.parametrize("augment", ["none", "flip", "randaugment", "trivialaugment"])
@pytest.mark.parametrize("channels", [1, 3])
def test_transforms(augment: str, channels: int) -> None:
    image = torch.randint(0, 256, (channels, 28, 28), dtype=torch.uint8)
    mean = (0.5,) * channels
    for train in (True, False):
        out = build_transform(32, mean, mean, train, augment, random_resized_crop=train)(image)
        assert out.shape == (channels, 32, 32) and out.dtype == torch.float32
    with pytest.raises(ValueError, match="augment"):
        build_transform(32, mean, mean, True, "autoaugment")


def test_crop_padding_shifts_training_images_only() -> None:
    torch.manual_seed(0)
    image = torch.arange(28 * 28, dtype=torch.float32).reshape(1, 28, 28).div(3).to(torch.uint8)
    train = build_transform(28, (0.5,), (0.5,), True, crop_padding=4)
    plain = build_transform(28, (0.5,), (0.5,), False, crop_padding=4)
    crops = [train(image) for _ in range(8)]
    assert all(c.shape == (1, 28, 28) for c in crops)
    assert any(not torch.equal(c, crops[0]) for c in crops)  # random positions
    assert torch.equal(plain(image), plain(image))  # evaluation is untouched


@pytest.mark.parametrize("channels", [1, 3])
def test_batch_transform_matches_the_per_image_pipeline(channels: int) -> None:
    torch.manual_seed(0)
    split = Split(torch.randint(0, 256, (12, 1, 28, 28), dtype=torch.uint8), torch.arange(12))
    mean, std = (0.2,) * channels, (0.3,) * channels
    plain = ImageDataset(split, build_transform(32, mean, std), channels, mixable=False)
    fast = ImageDataset(
        split, build_transform(32, mean, std), channels, False, BatchTransform(32, mean, std)
    )
    for i in range(12):  # evaluation: the same resize, crop and normalisation
        torch.testing.assert_close(fast[i][0], plain[i][0], atol=1e-6, rtol=0)
    assert [s[1] for s in fast.__getitems__([3, 7])] == [3, 7]

    # training: every image is one of the 5 x 5 offsets of the 2 px padded image, maybe flipped
    settings = (32, mean, std, True, "flip")
    train = ImageDataset(
        split, build_transform(*settings), channels, True, BatchTransform(*settings, 1.0, 2)
    )
    padded = torch.nn.functional.pad(
        torch.stack([plain[i][0] for i in range(12)]), (2,) * 4, value=-0.2 / 0.3
    )  # the normalised black border
    seen = set()
    for _ in range(10):
        for i, (image, label, mixable) in enumerate(train.__getitems__(list(range(12)))):
            assert label == i and mixable
            variants = {
                (dy, dx, f): padded[i, :, dy : dy + 32, dx : dx + 32].flip(-1)
                if f
                else padded[i, :, dy : dy + 32, dx : dx + 32]
                for dy in range(5)
                for dx in range(5)
                for f in (0, 1)
            }
            match = [k for k, v in variants.items() if torch.allclose(image, v, atol=1e-6)]
            assert match, "a training image is no padded crop of its source"
            seen.update(match)
    assert len({k[:2] for k in seen}) > 10 and {k[2] for k in seen} == {0, 1}
    with pytest.raises(ValueError, match="per image"):
        BatchTransform(32, mean, std, True, "randaugment")


class Constant(nn.Module):
    """Always the same logits: class 0 first, then 1, ... (a known top-1 and top-5)."""

    def __init__(self, k: int = 10) -> None:
        super().__init__()
        self.logits = nn.Parameter(-torch.arange(k, dtype=torch.float32))

    def forward(self, images):
        return self.logits.expand(len(images), -1)


def test_evaluate_top1_top5_and_loss() -> None:
    task = make_task()
    _, splits = build(task)
    metrics = task.evaluate(Constant(), task.loader(splits["val"], 16))
    # 50 balanced validation images: 5 of class 0 (top-1), 25 of classes 0-4 (top-5)
    assert metrics["top1"] == pytest.approx(10.0) and metrics["top5"] == pytest.approx(50.0)
    assert metrics["loss"] > 0 and task.metric == "top1" and task.metric_mode == "max"
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]])
    assert topk_correct(logits, torch.tensor([0, 0]), (1, 2, 5)) == [1, 2, 2]


def test_tiny_vit_learns_synthetic_data() -> None:
    task = make_task({"options": {"num_train": 1500, "num_val": 300, "num_test": 10}})
    torch.manual_seed(0)
    model, splits = build(task)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    steps, step = 100, 0  # enough to learn the shapes, short enough for the default suite
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps, pct_start=0.1)
    while step < steps:
        batches = task.batches(splits["train"], 64, shuffle=True, epoch_seed=step)
        loader = DataLoader(splits["train"], batch_sampler=batches, collate_fn=task.collate)
        for batch in loader:
            loss, _ = task.loss(model, batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step == steps:
                break
    metrics = task.evaluate(model, task.loader(splits["val"], 100))
    assert metrics["top1"] >= 40.0, metrics  # chance is 10%; ~60% is typical here


# -- files on disk ---------------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def write_mnist(root: Path, n_train: int = 40, n_test: int = 20, gz: bool = True) -> None:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ext = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte{ext}", rng.integers(0, 256, (n, 28, 28)))
        write_idx(root / f"{prefix}-labels-idx1-ubyte{ext}", np.arange(n) % 10)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_dataset(tmp_path: Path, gz: bool) -> None:
    write_mnist(tmp_path, gz=gz)
    task = make_task({"dataset": "fashion_mnist", "root": str(tmp_path), "val_fraction": 0.25})
    assert task.prepare() == {
        "num_classes": 10, "in_chans": 1, "img_size": 28, "mean": (0.5,), "std": (0.5,),
    }  # fmt: skip
    splits = task.datasets()
    assert {k: len(v) for k, v in splits.items()} == {"train": 30, "val": 10, "test": 20}
    assert splits["train"][0][0].shape == (1, 28, 28)
    assert task.meta["class_names"][9] == "Ankle boot"


def test_idx_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        make_task({"dataset": "mnist", "root": str(tmp_path / "nowhere")}).prepare()
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        make_task({"dataset": "mnist", "root": str(tmp_path)}).prepare()
    write_mnist(tmp_path)
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(gzip.decompress(bad.read_bytes())[:-5]))
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz"):
        read_idx(bad)
    write_mnist(tmp_path, n_train=0)
    with pytest.raises(ValueError, match="train split of dataset 'mnist'.* is empty"):
        make_task({"dataset": "mnist", "root": str(tmp_path)}).prepare()


@pytest.mark.parametrize("keep", [4, 9, 15])
def test_an_idx_file_cut_inside_its_header_is_one_sentence(tmp_path: Path, keep: int) -> None:
    write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(gzip.decompress((tmp_path / "train-images-idx3-ubyte.gz").read_bytes())[:keep])
    with pytest.raises(
        ValueError,
        match=f"IDX file {path} is truncated: it ends inside its "
        f"header \\({keep} bytes, the header of 3 dimensions "
        r"needs 16\)",
    ):
        read_idx(path)


def write_cifar(folder: Path, num_classes: int = 10, n: int = 30) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    key = "labels" if num_classes == 10 else "fine_labels"

    def batch(m: int) -> dict:
        return {
            "data": rng.integers(0, 256, (m, 3072), dtype=np.uint8),
            key: [i % num_classes for i in range(m)],
        }

    names = [f"class{i}" for i in range(num_classes)]
    files = (
        {"data_batch_1": batch(n), "data_batch_2": batch(n), "test_batch": batch(n)}
        if num_classes == 10
        else {"train": batch(n), "test": batch(n)}
    )
    files["batches.meta" if num_classes == 10 else "meta"] = {
        "label_names" if num_classes == 10 else "fine_label_names": names
    }
    for name, content in files.items():
        (folder / name).write_bytes(pickle.dumps(content, protocol=2))


@pytest.mark.parametrize("parent", [True, False])
def test_cifar10(tmp_path: Path, parent: bool) -> None:
    write_cifar(tmp_path / "cifar-10-batches-py")
    root = tmp_path if parent else tmp_path / "cifar-10-batches-py"
    task = make_task({"dataset": "cifar10", "root": str(root), "val_fraction": 0.1})
    overrides = task.prepare()
    assert (overrides["num_classes"], overrides["in_chans"], overrides["img_size"]) == (10, 3, 32)
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 54, "val": 6, "test": 30}
    assert task.meta["class_names"][3] == "class3"


def test_cifar100_and_unsafe_pickles(tmp_path: Path) -> None:
    write_cifar(tmp_path / "cifar-100-python", num_classes=100, n=200)
    task = make_task({"dataset": "cifar100", "root": str(tmp_path)})
    assert task.prepare()["num_classes"] == 100

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "cifar-100-python" / "train").write_bytes(pickle.dumps({"data": Evil()}))
    with pytest.raises(ValueError, match="refusing to load builtins.print"):
        make_task({"dataset": "cifar100", "root": str(tmp_path)}).prepare()


def write_images(folder: Path, classes: tuple[str, ...] = ("cat", "dog"), n: int = 4) -> None:
    rng = np.random.default_rng(0)
    for c in classes:
        (folder / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / c / f"{i}.png")


def test_imagefolder_with_train_val_test(tmp_path: Path) -> None:
    for split in ("train", "val", "test"):
        write_images(tmp_path / split)
    folder = {"dataset": "imagefolder", "root": str(tmp_path)}
    task = make_task(folder, {"overrides": {"img_size": 32}})
    _, splits = build(task)
    assert task.prepare()["num_classes"] == 2 and task.meta["class_names"] == ["cat", "dog"]
    assert {k: len(v) for k, v in splits.items()} == {"train": 8, "val": 8, "test": 8}
    assert first_batch(task, splits["train"], 4)["images"].shape == (4, 3, 32, 32)


def test_imagefolder_single_root_is_carved(tmp_path: Path) -> None:
    write_images(tmp_path, ("a", "b", "c"), n=10)
    task = make_task({"dataset": "imagefolder", "root": str(tmp_path), "val_fraction": 0.2})
    task.prepare()
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 24, "val": 6}


def test_imagefolder_does_not_follow_directory_links(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, deadline: None
) -> None:
    """Followed, a link loop (``train/cat/loop -> ..``) repeats every class's images under
    'cat' until the path is too deep for the system (with a second link, for minutes), and
    a linked class folder copies one class under another name."""
    write_images(tmp_path / "train")
    (tmp_path / "train" / "cat" / "loop").symlink_to("..", target_is_directory=True)
    (tmp_path / "train" / "kitty").symlink_to("cat", target_is_directory=True)
    task = make_task({"dataset": "imagefolder", "root": str(tmp_path), "val_fraction": 0.25})
    with caplog.at_level("WARNING", logger="tasks.classification.data"):
        task.prepare()
    assert task.meta["class_names"] == ["cat", "dog"]
    images = [*task.splits["train"].images, *task.splits["val"].images]
    labels = [*task.splits["train"].labels.tolist(), *task.splits["val"].labels.tolist()]
    assert sorted((p.parent.name, p.name, c) for p, c in zip(images, labels)) == [
        (name, f"{i}.png", c) for c, name in enumerate(("cat", "dog")) for i in range(4)
    ]
    assert "skipped 2 directory link(s)" in caplog.text
    assert str(tmp_path / "train" / "cat" / "loop") in caplog.text
    assert str(tmp_path / "train" / "kitty") in caplog.text


def test_imagefolder_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty.* holds no class folders"):
        make_task({"dataset": "imagefolder", "root": str(tmp_path / "empty")}).prepare()
    (tmp_path / "noimg" / "cls").mkdir(parents=True)
    with pytest.raises(ValueError, match="noimg.* holds no images"):
        make_task({"dataset": "imagefolder", "root": str(tmp_path / "noimg")}).prepare()
    write_images(tmp_path / "tv" / "train")
    write_images(tmp_path / "tv" / "val", ("cat", "bird"))
    with pytest.raises(ValueError, match="bird"):
        make_task({"dataset": "imagefolder", "root": str(tmp_path / "tv")}).prepare()
    write_images(tmp_path / "bad")
    (tmp_path / "bad" / "cat" / "0.png").write_bytes(b"not a png")
    task = make_task({"dataset": "imagefolder", "root": str(tmp_path / "bad"), "val_fraction": 0.5})
    task.prepare()
    with pytest.raises(ValueError, match=r"cannot read image .*cat/0\.png"):
        for split in task.datasets().values():
            for i in range(len(split)):
                split[i]


def test_bad_recipes_get_one_clear_sentence(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="did you mean 'fashion_mnist'"):
        make_task({"dataset": "fashion-mnist"})
    with pytest.raises(ValueError, match="augment.mixpu' .*did you mean 'augment.mixup'"):
        make_task(augment={"mixpu": 0.2})
    with pytest.raises(ValueError, match="needs data.root"):
        make_task({"dataset": "cifar10"}).prepare()
    write_mnist(tmp_path)
    with pytest.raises(ValueError, match="no validation split and val_fraction is 0"):
        make_task({"dataset": "mnist", "root": str(tmp_path), "val_fraction": 0}).prepare()


# -- saving, predicting ----------------------------------------------------------------------


def test_predict_with_saved_metadata(tmp_path: Path) -> None:
    task = make_task()
    model, _ = build(task)
    meta = task.save_extra(tmp_path)
    assert meta["class_names"][0] == "horizontal_bar" and meta["img_size"] == 32
    images = []
    for i, size in enumerate([(32, 32), (50, 40)]):
        Image.fromarray(np.full((*size, 3), 40 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
        images.append(str(tmp_path / f"{i}.png"))
    fresh = get_task("classification")(task.recipe)
    fresh.load_extra(tmp_path, meta)
    lines = fresh.predict(model, images, topk=3)
    assert len(lines) == 2 and lines[0].startswith(f"{images[0]}: ")
    assert lines[1].count("(p=") == 3
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match="broken.png"):
        fresh.predict(model, [str(tmp_path / "broken.png")])
    with pytest.raises(FileNotFoundError, match="absent.png"):
        load_image(tmp_path / "absent.png")


def test_evaluation_report_writes_confusion_matrix(tmp_path: Path) -> None:
    task = make_task()
    _, splits = build(task)
    names = task.meta["class_names"]
    metrics = task.evaluate(Constant(), task.loader(splits["val"], 25))
    matrix = task.last_confusion
    assert matrix.sum() == len(splits["val"]) and (matrix[:, 1:] == 0).all()  # always class 0
    assert metrics["top1"] == pytest.approx(100 * matrix[0, 0].item() / len(splits["val"]))
    lines = task.write_report(tmp_path, "val")
    per_class = json.loads((tmp_path / "per_class_val.json").read_text())
    assert per_class[names[0]] == 100.0 and per_class[names[1]] == 0.0
    assert f"  {names[1]}: 0.00" in lines
    assert (tmp_path / "confusion_val.png").stat().st_size > 0


def test_task_pickles_small_for_loader_workers() -> None:
    task = make_task(augment={"mixup": 0.5})
    _, splits = build(task)
    assert len(pickle.dumps(task.collate)) < 10_000  # the splits stay behind
    restored = pickle.loads(pickle.dumps(splits["val"]))
    torch.testing.assert_close(restored[3][0], splits["val"][3][0])


@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="no shared Fashion-MNIST copy")
def test_real_fashion_mnist() -> None:
    task = make_task({"dataset": "fashion_mnist", "root": str(FASHION_MNIST), "max_samples": 100})
    assert task.prepare()["in_chans"] == 1
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 100, "val": 6000, "test": 10000}


def test_confusion_matrix_title_gives_the_split_and_the_accuracy(tmp_path: Path, monkeypatch):
    from matplotlib.figure import Figure

    from tasks.classification.metrics import plot_confusion_matrix

    titles = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: titles.append(
        fig.axes[0].get_title()))
    matrix = torch.tensor([[3, 1], [0, 4]])
    assert plot_confusion_matrix(matrix, ["a", "b"], tmp_path / "c.png", "test")
    assert titles == ["confusion matrix (row-normalised)\ntest split, top-1 87.50%"]
