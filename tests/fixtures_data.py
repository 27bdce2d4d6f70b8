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


# ImageNet (ILSVRC2012): a few of the real 1000 wnids, in the devkit's true files. The devkit numbers its 1000
# leaf synsets (ILSVRC2012_ID 1..1000) in its own order, not sorted-wnid order; the fixture numbers them by a
# fixed permutation of the sorted list so that a reader that confused the two would give wrong labels, and adds
# non-leaf synsets (num_children > 0, IDs above 1000) as meta.mat has.
IMAGENET_FIXTURE_WNIDS = ("n01440764", "n01443537", "n02085620", "n04037443", "n15075141")


def imagenet_devkit_ids(wnids: list[str]) -> dict[str, int]:
    order = np.random.default_rng(37).permutation(len(wnids))
    return {wnids[int(j)]: i + 1 for i, j in enumerate(order)}


def _meta_mat(wnids: list[str]) -> bytes:
    import io

    import scipy.io

    ids = imagenet_devkit_ids(wnids)
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
              "num_train_images"]
    rows = [(ids[w], w, f"words of {w}", "a gloss", 0, np.zeros((0,), np.uint8), 0, 1300) for w in wnids]
    rows.sort(key=lambda r: r[0])
    rows += [(1001, "n00001740", "entity", "the root", 2, np.array([1, 2], np.uint8), 18, 0),
             (1002, "n99999999", "a parent", "inner node", 1, np.array([3], np.uint8), 1, 0)]
    synsets = np.empty((len(rows), 1), dtype=[(f, object) for f in fields])
    for i, row in enumerate(rows):
        synsets[i, 0] = row
    out = io.BytesIO()
    scipy.io.savemat(out, {"synsets": synsets})
    return out.getvalue()


def write_imagenet(
    root: Path, wnids: tuple[str, ...] = IMAGENET_FIXTURE_WNIDS, train_per_class: int = 2, val_images: int = 10,
    val: str = "flat", labels: str = "devkit", size: tuple[int, int] = (64, 48), seed: int = 0,
) -> tuple[Path, dict[str, str]]:
    """`imagenet/train/<wnid>/<wnid>_<n>.JPEG` + `val/` flat (labels from the devkit archive `labels="devkit"`,
    its extracted folder `"devkit-folder"` or Kaggle's `"loc"` CSV) or as class folders (`val="folders"`).
    The first training image is grayscale and the second CMYK. Returns the base and val file name → wnid."""
    import io
    import tarfile

    from kdbench.data.imagenet import imagenet_wnids

    base = root / "imagenet"
    rng = np.random.default_rng(seed)
    for wnid in wnids:
        (base / "train" / wnid).mkdir(parents=True, exist_ok=True)
        for j in range(train_per_class):
            _jpeg(base / "train" / wnid / f"{wnid}_{j + 1}.JPEG", rng, size)
    first = base / "train" / wnids[0]
    Image.fromarray(rng.integers(0, 256, (size[1], size[0]), dtype=np.uint8), "L").save(first / f"{wnids[0]}_1.JPEG")
    Image.new("CMYK", size, (0, 128, 255, 30)).save(first / f"{wnids[0]}_2.JPEG")
    truth = {f"ILSVRC2012_val_{n:08d}.JPEG": wnids[int(rng.integers(len(wnids)))] for n in range(1, val_images + 1)}
    for name, wnid in truth.items():
        folder = base / "val" / (wnid if val == "folders" else "")
        folder.mkdir(parents=True, exist_ok=True)
        _jpeg(folder / name, rng, size)
    ids = imagenet_devkit_ids(list(imagenet_wnids()))
    ground_truth = "".join(f"{ids[w]}\n" for w in truth.values()).encode()
    meta = _meta_mat(list(imagenet_wnids()))
    if labels == "loc":
        rows = "".join(f"{Path(n).stem},{w} 1 2 30 40 {w} 5 6 7 8\n" for n, w in truth.items())
        (base / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + rows)
    elif labels == "devkit-folder":
        data = base / "ILSVRC2012_devkit_t12" / "data"
        data.mkdir(parents=True)
        (data / "meta.mat").write_bytes(meta)
        (data / "ILSVRC2012_validation_ground_truth.txt").write_bytes(ground_truth)
    else:
        with tarfile.open(base / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tar:
            for name, blob in (("meta.mat", meta), ("ILSVRC2012_validation_ground_truth.txt", ground_truth)):
                info = tarfile.TarInfo(f"ILSVRC2012_devkit_t12/data/{name}")
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
    return base, truth
