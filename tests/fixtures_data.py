"""Writers of tiny datasets in their TRUE on-disk formats, for loader tests and the throughput benchmark.

- CIFAR: the python pickles of the official tarballs. Those were written by Python 2, whose `str` keys and raw
  array bytes load in Python 3 only with `encoding="latin1"` (why torchvision passes it). `_Py2Pickler` writes
  bytes as Python 2 `str` opcodes (BINSTRING), so our files load exactly like the real ones: latin1-decoded
  str keys ('data', 'labels' / 'fine_labels', 'label_names' / 'fine_label_names') and a uint8 N × 3072 array
  (1024 R, then G, then B values, each plane row-major).
- STL-10: raw uint8 `.bin` files, each image 3 × 96 × 96 stored column-major per channel (as the real files:
  torchvision transposes the last two axes after reading), labels 1-based, `class_names.txt`.
- Mini-ImageNet: `images/*.jpg` + `train/val/test.csv` (`filename,label`, disjoint classes as in the few-shot
  split), or one folder per class; ImageFolder: `train/<class>/*` + `val/<class>/*`.

Each writer returns what it wrote (arrays and md5s) so tests compare pixels, not just shapes.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
STL10_NAMES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


@dataclass
class Written:
    folder: Path
    md5: dict[str, str] = field(default_factory=dict)  # file name → md5
    train_images: np.ndarray | None = None  # N × 3 × H × W uint8, in file order
    train_labels: np.ndarray | None = None  # 0-based
    test_images: np.ndarray | None = None
    test_labels: np.ndarray | None = None


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


class _Py2Pickler(pickle._Pickler):  # type: ignore[misc,name-defined]
    """Protocol 2 pickler that writes `bytes` as Python 2 `str` (SHORT_BINSTRING / BINSTRING opcodes)."""

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def _py2_dump(obj: object, path: Path) -> None:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    path.write_bytes(buf.getvalue())


def _images(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3, size, size), dtype=np.uint8)


def _labels(num_classes: int, per_class: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.repeat(np.arange(num_classes), per_class))


def write_cifar10(root: Path, train_per_class: int = 5, test_per_class: int = 2, seed: int = 0) -> Written:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = Written(folder)
    out.train_labels, out.test_labels = _labels(10, train_per_class, rng), _labels(10, test_per_class, rng)
    out.train_images = _images(rng, len(out.train_labels), 32)
    out.test_images = _images(rng, len(out.test_labels), 32)
    batches = np.array_split(np.arange(len(out.train_labels)), 5)
    for b, idx in enumerate(batches, start=1):
        _py2_dump(
            {
                b"batch_label": f"training batch {b} of 5".encode(),
                b"labels": [int(v) for v in out.train_labels[idx]],
                b"data": out.train_images[idx].reshape(len(idx), 3072),
                b"filenames": [f"img_{i}.png".encode() for i in idx],
            },
            folder / f"data_batch_{b}",
        )
    _py2_dump(
        {
            b"batch_label": b"testing batch 1 of 1",
            b"labels": [int(v) for v in out.test_labels],
            b"data": out.test_images.reshape(len(out.test_labels), 3072),
            b"filenames": [f"test_{i}.png".encode() for i in range(len(out.test_labels))],
        },
        folder / "test_batch",
    )
    _py2_dump(
        {b"num_cases_per_batch": 10000, b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_vis": 3072},
        folder / "batches.meta",
    )
    out.md5 = {p.name: md5_of(p) for p in folder.iterdir()}
    return out


def write_cifar100(
    root: Path, train_per_class: int = 2, test_per_class: int = 1, seed: int = 0, classes: int = 100
) -> Written:
    """`classes` < 100 labels images with the first classes only (the meta still names all 100): the smallest
    valid CIFAR-100 for end-to-end runs."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = Written(folder)
    out.train_labels, out.test_labels = _labels(classes, train_per_class, rng), _labels(classes, test_per_class, rng)
    out.train_images = _images(rng, len(out.train_labels), 32)
    out.test_images = _images(rng, len(out.test_labels), 32)
    for name, labels, images in (("train", out.train_labels, out.train_images),
                                 ("test", out.test_labels, out.test_images)):
        _py2_dump(
            {
                b"filenames": [f"{name}_{i}.png".encode() for i in range(len(labels))],
                b"batch_label": f"{name}ing batch 1 of 1".encode(),
                b"fine_labels": [int(v) for v in labels],
                b"coarse_labels": [int(v) // 5 for v in labels],
                b"data": images.reshape(len(labels), 3072),
            },
            folder / name,
        )
    _py2_dump(
        {
            b"fine_label_names": [f"fine_{i:02d}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse_{i:02d}".encode() for i in range(20)],
        },
        folder / "meta",
    )
    out.md5 = {p.name: md5_of(p) for p in folder.iterdir()}
    return out


def write_stl10(root: Path, train_per_class: int = 3, test_per_class: int = 2, seed: int = 0) -> Written:
    folder = root / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = Written(folder)
    out.train_labels, out.test_labels = _labels(10, train_per_class, rng), _labels(10, test_per_class, rng)
    out.train_images = _images(rng, len(out.train_labels), 96)
    out.test_images = _images(rng, len(out.test_labels), 96)
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
