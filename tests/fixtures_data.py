"""Writers of tiny datasets in their TRUE on-disk formats, for loader tests and the throughput benchmark.

- CIFAR: the python pickles of the official tarballs, written by `kdbench.data.fixtures` (shared with
  benchmarks/gpu_check.py; re-exported here) — Python 2 `str` opcodes, latin1 keys, uint8 N × 3072 arrays.
- STL-10: raw uint8 `.bin` files, each image 3 × 96 × 96 stored column-major per channel (as the real files:
  torchvision transposes the last two axes after reading), labels 1-based, `class_names.txt`.
- Mini-ImageNet: `images/*.jpg` + `train/val/test.csv` (`filename,label`, disjoint classes as in the few-shot
  split), or one folder per class; ImageFolder: `train/<class>/*` + `val/<class>/*`.

Each writer returns what it wrote (arrays and md5s) so tests compare pixels, not just shapes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kdbench.data.fixtures import (  # noqa: F401  (CIFAR writers: re-exported for the tests that import them here)
    CIFAR10_NAMES,
    Written,
    balanced_labels,
    md5_of,
    random_images,
    write_cifar10,
    write_cifar100,
)

STL10_NAMES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


def write_stl10(root: Path, train_per_class: int = 3, test_per_class: int = 2, seed: int = 0) -> Written:
    folder = root / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = Written(folder)
    out.train_labels = balanced_labels(10, train_per_class, rng)
    out.test_labels = balanced_labels(10, test_per_class, rng)
    out.train_images = random_images(rng, len(out.train_labels), 96)
    out.test_images = random_images(rng, len(out.test_labels), 96)
    for split, images, labels in (("train", out.train_images, out.train_labels),
                                  ("test", out.test_images, out.test_labels)):
        # Column-major per channel, as in the official files (Matlab order): store each channel transposed.
        (folder / f"{split}_X.bin").write_bytes(np.ascontiguousarray(images.transpose(0, 1, 3, 2)).tobytes())
        (folder / f"{split}_y.bin").write_bytes((labels + 1).astype(np.uint8).tobytes())
    (folder / "class_names.txt").write_text("\n".join(STL10_NAMES) + "\n")
    out.md5 = {p.name: md5_of(p) for p in folder.iterdir()}
    return out


def patch_md5(monkeypatch: pytest.MonkeyPatch, cls: type, md5: dict[str, str]) -> None:
    """Point `cls`'s expected checksums (torchvision's `train_list`/`test_list`/`meta`) at a fixture's files.

    Only our subclass is patched, for the test's duration; torchvision's own classes keep the real md5s.
    """
    monkeypatch.setattr(cls, "train_list", [[name, md5[name]] for name, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[name, md5[name]] for name, _ in cls.test_list])
    if isinstance(getattr(cls, "meta", None), dict):
        monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5[cls.meta["filename"]]})


def _jpeg(path: Path, rng: np.random.Generator, size: tuple[int, int]) -> None:
    # Smooth images (a colour per quadrant) survive JPEG compression well enough to check decoding.
    w, h = size
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[: h // 2, : w // 2], img[: h // 2, w // 2 :] = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    img[h // 2 :, : w // 2], img[h // 2 :, w // 2 :] = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    Image.fromarray(img).save(path, quality=90)


def mini_imagenet_classes(n: int) -> list[str]:
    return [f"n{1532829 + 1000 * i:08d}" for i in range(n)]


def write_mini_imagenet_csv(
    root: Path, num_classes: int = 6, per_class: int = 4, size: tuple[int, int] = (84, 84), seed: int = 0
) -> Path:
    """`images/<wnid><index>.jpg` + train/val/test.csv with disjoint classes (the few-shot split's shape)."""
    base = root / "mini-imagenet"
    (base / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    classes = mini_imagenet_classes(num_classes)
    parts = np.array_split(np.arange(num_classes), 3)  # train / val / test classes
    for csv_name, idx in zip(("train.csv", "val.csv", "test.csv"), parts, strict=True):
        lines = ["filename,label"]
        for c in idx:
            for j in range(per_class):
                name = f"{classes[c]}{j + 1:08d}.jpg"
                _jpeg(base / "images" / name, rng, size)
                lines.append(f"{name},{classes[c]}")
        (base / csv_name).write_text("\n".join(lines) + "\n")
    return base


def write_mini_imagenet_folders(
    root: Path, num_classes: int = 6, per_class: int = 4, size: tuple[int, int] = (84, 84), seed: int = 0
) -> Path:
    """`{train,val,test}/<wnid>/<wnid><index>.jpg`: the same file names as the CSV layout, one folder per class."""
    base = root / "mini-imagenet"
    rng = np.random.default_rng(seed)
    classes = mini_imagenet_classes(num_classes)
    parts = np.array_split(np.arange(num_classes), 3)
    for split, idx in zip(("train", "val", "test"), parts, strict=True):
        for c in idx:
            (base / split / classes[c]).mkdir(parents=True, exist_ok=True)
            for j in range(per_class):
                _jpeg(base / split / classes[c] / f"{classes[c]}{j + 1:08d}.jpg", rng, size)
    return base


def write_imagefolder(
    root: Path, num_classes: int = 3, train_per_class: int = 4, val_per_class: int = 2,
    size: tuple[int, int] = (40, 30), seed: int = 0,
) -> Path:
    """`train/<class>/*` + `val/<class>/*`, JPEGs plus one PNG per class (ImageFolder trees mix formats)."""
    base = root / "imagefolder"
    rng = np.random.default_rng(seed)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for c in range(num_classes):
            folder = base / split / f"class_{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for j in range(n):
                _jpeg(folder / f"{j}.jpg", rng, size)
            Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(folder / "extra.png")
            (folder / "notes.txt").write_text("not an image")
    return base
