"""Tiny CIFAR-10/100 datasets written in their TRUE on-disk format: for tests and benchmarks, never for results.

The files are the python pickles of the official tarballs. Those were written by Python 2, whose `str` keys and
raw array bytes load in Python 3 only with `encoding="latin1"` (why torchvision passes it). `_Py2Pickler` writes
bytes as Python 2 `str` opcodes (BINSTRING), so these files load exactly like the real ones: latin1-decoded str
keys ('data', 'labels' / 'fine_labels', 'label_names' / 'fine_label_names') and a uint8 N × 3072 array (1024 R,
then G, then B values, each plane row-major). Pixels are random: a fixture exercises the reading and training
code, not accuracy.

Here, not in tests/, so that a benchmark (benchmarks/gpu_check.py) writes the same files as the loader tests
without importing the test suite (or pytest). Writing is all this module does: torchvision's md5 check still
rejects these files as CIFAR. A test points our reader subclasses' expected checksums at the returned `md5`
for its own duration (tests/fixtures_data.py `patch_md5`), and processes started by a test or benchmark get the
same through tests/fixture_site/sitecustomize.py; nothing in the package can turn the check off.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@dataclass
class Written:
    """What a fixture writer wrote: its folder, each file's md5 and the pixels/labels in file order."""

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


def py2_dump(obj: object, path: Path) -> None:
    """Write `obj` as Python 2's cPickle would have (bytes become Python 2 `str`)."""
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    path.write_bytes(buf.getvalue())


def random_images(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """n × 3 × size × size uint8 noise."""
    return rng.integers(0, 256, size=(n, 3, size, size), dtype=np.uint8)


def balanced_labels(num_classes: int, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """`per_class` of each class 0..num_classes-1, shuffled."""
    return rng.permutation(np.repeat(np.arange(num_classes), per_class))


def write_cifar10(root: Path, train_per_class: int = 5, test_per_class: int = 2, seed: int = 0) -> Written:
    """`<root>/cifar-10-batches-py/`: data_batch_1..5 (the training images split in five), test_batch,
    batches.meta."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = Written(folder)
    out.train_labels = balanced_labels(10, train_per_class, rng)
    out.test_labels = balanced_labels(10, test_per_class, rng)
    out.train_images = random_images(rng, len(out.train_labels), 32)
    out.test_images = random_images(rng, len(out.test_labels), 32)
    batches = np.array_split(np.arange(len(out.train_labels)), 5)
    for b, idx in enumerate(batches, start=1):
        py2_dump(
            {
                b"batch_label": f"training batch {b} of 5".encode(),
                b"labels": [int(v) for v in out.train_labels[idx]],
                b"data": out.train_images[idx].reshape(len(idx), 3072),
                b"filenames": [f"img_{i}.png".encode() for i in idx],
            },
            folder / f"data_batch_{b}",
        )
    py2_dump(
        {
            b"batch_label": b"testing batch 1 of 1",
            b"labels": [int(v) for v in out.test_labels],
            b"data": out.test_images.reshape(len(out.test_labels), 3072),
            b"filenames": [f"test_{i}.png".encode() for i in range(len(out.test_labels))],
        },
        folder / "test_batch",
    )
    py2_dump(
        {b"num_cases_per_batch": 10000, b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_vis": 3072},
        folder / "batches.meta",
    )
    out.md5 = {p.name: md5_of(p) for p in folder.iterdir()}
    return out


def write_cifar100(
    root: Path, train_per_class: int = 2, test_per_class: int = 1, seed: int = 0, classes: int = 100
) -> Written:
    """`<root>/cifar-100-python/`: train, test, meta. `classes` < 100 labels images with the first classes only
    (the meta still names all 100): the smallest valid CIFAR-100 for end-to-end runs."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = Written(folder)
    out.train_labels = balanced_labels(classes, train_per_class, rng)
    out.test_labels = balanced_labels(classes, test_per_class, rng)
    out.train_images = random_images(rng, len(out.train_labels), 32)
    out.test_images = random_images(rng, len(out.test_labels), 32)
    for name, labels, images in (("train", out.train_labels, out.train_images),
                                 ("test", out.test_labels, out.test_images)):
        py2_dump(
            {
                b"filenames": [f"{name}_{i}.png".encode() for i in range(len(labels))],
                b"batch_label": f"{name}ing batch 1 of 1".encode(),
                b"fine_labels": [int(v) for v in labels],
                b"coarse_labels": [int(v) // 5 for v in labels],
                b"data": images.reshape(len(labels), 3072),
            },
            folder / name,
        )
    py2_dump(
        {
            b"fine_label_names": [f"fine_{i:02d}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse_{i:02d}".encode() for i in range(20)],
        },
        folder / "meta",
    )
    out.md5 = {p.name: md5_of(p) for p in folder.iterdir()}
    return out
