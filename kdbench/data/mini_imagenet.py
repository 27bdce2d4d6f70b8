"""`mini-imagenet`: Mini-ImageNet (100 ImageNet classes × 600 images) as a 100-class *classification* set.

Mini-ImageNet's standard split (Ravi & Larochelle 2017) is few-shot: 64/16/20 *different* classes in
train/val/test, useless for classification. We pool the images of all three parts and cut a classification
split over all 100 classes: for each class, its images are ordered by file name, permuted by a generator seeded
with (`data.split_seed`, crc32 of the class name), and the first `data.train_per_class` (500) go to training,
the next `data.test_per_class` (100) to test; any remainder is left unused (none with the standard 600). The
partition depends only on those parameters and the file names, not on the layout or on the run's seed, and it
is recorded in the run's data notes.

Two layouts are read, under `<data-root>/<data.path>` (default `mini-imagenet`):
- `images/*.jpg` + `train.csv`, `val.csv`, `test.csv` with the header `filename,label` (the common release);
- one folder per class, either under `train/`, `val/`, `test/` or directly under the root.

Recipe `mini-imagenet-v1` (our choice, documented): the CRD schedule shape (SGD 0.9, lr 0.05 ×0.1 after
150/180/210 of 240 epochs, weight decay 5e-4, batch 64), images resized to 84 px, CIFAR's crop scaled to 84 px
("crop-pad10-flip": pad = side/8) + flip, ImageNet mean/std, timm's ImageNet stem (84 px → 21 px after it).
"""

from __future__ import annotations

import csv
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdbench.core.errors import UserError, check_range
from kdbench.data.imagefolder import ImageFileDataset, resolve_path, scan_class_folders
from kdbench.data.loaders import AUTO_WORKERS
from kdbench.data.registry import DataSplits, register_dataset
from kdbench.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform, train_transform
from kdbench.spec.recipe import crd_schedule

MINI_IMAGENET_RECIPE = crd_schedule("mini-imagenet-v1", augment="crop-pad10-flip", cifar_stem=False)

CSV_SPLITS = ("train.csv", "val.csv", "test.csv")
FOLDER_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class MiniImageNetParams:
    path: str = "mini-imagenet"  # absolute, or relative to the data root
    image_size: int = 84
    train_per_class: int = 500
    test_per_class: int = 100
    split_seed: int = 0

    def __post_init__(self) -> None:
        check_range("data.image_size", self.image_size, 8, 512)
        check_range("data.train_per_class", self.train_per_class, 1, 100_000)
        check_range("data.test_per_class", self.test_per_class, 1, 100_000)
        check_range("data.split_seed", self.split_seed, 0, 2**31 - 1)


def read_csv_layout(base: Path) -> dict[str, list[str]]:
    """Class label → image paths from `images/` + the three CSVs (`filename,label`)."""
    images = base / "images"
    missing = [name for name in CSV_SPLITS if not (base / name).is_file()]
    if missing:
        raise UserError(f"mini-imagenet: {images} is there but {', '.join(str(base / m) for m in missing)} missing")
    on_disk = set(os.listdir(images))
    classes: dict[str, set[str]] = {}
    for name in CSV_SPLITS:
        try:
            with open(base / name, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                if not {"filename", "label"} <= set(reader.fieldnames or ()):
                    raise UserError(f"mini-imagenet: {base / name} must start with the header 'filename,label'")
                for row in reader:
                    classes.setdefault(row["label"], set()).add(row["filename"])
        except (UnicodeDecodeError, csv.Error) as e:
            reason = " ".join(f"{type(e).__name__}: {e}".split())[:160]
            raise UserError(f"mini-imagenet: {base / name} is unreadable ({reason}); expected a UTF-8 CSV with the "
                            "header 'filename,label' (the few-shot split files); restore it") from None
    absent = sorted(f for files in classes.values() for f in files if f not in on_disk)
    if absent:
        raise UserError(f"mini-imagenet: {len(absent)} images named in the CSVs are not in {images} (e.g. {absent[0]})")
    return {label: [str(images / f) for f in files] for label, files in classes.items()}


def read_folder_layout(base: Path) -> dict[str, list[str]]:
    """Class folder → image paths, pooled over `train/`, `val/`, `test/` when present, else the root's folders."""
    parts = [base / s for s in FOLDER_SPLITS if (base / s).is_dir()] or [base]
    classes: dict[str, list[str]] = {}
    for part in parts:
        for name, files in scan_class_folders(part).items():
            classes.setdefault(name, []).extend(files)
    return classes


def partition(
    classes: dict[str, list[str]], train_per_class: int, test_per_class: int, seed: int
) -> tuple[list[tuple[str, int]], list[tuple[str, int]], int]:
    """Per class: order by file name, permute with a (seed, crc32(class)) generator, cut train | test | unused.

    Returns (train, test, unused) with (path, label) pairs; labels index the sorted class names.
    """
    need = train_per_class + test_per_class
    train: list[tuple[str, int]] = []
    test: list[tuple[str, int]] = []
    unused = 0
    for label, name in enumerate(sorted(classes)):
        files = sorted(classes[name], key=lambda p: (os.path.basename(p), p))
        if len(files) < need:
            raise UserError(
                f"mini-imagenet: class {name} has {len(files)} images, fewer than data.train_per_class + "
                f"data.test_per_class = {need}"
            )
        order = np.random.default_rng([seed, zlib.crc32(name.encode())]).permutation(len(files))
        train += [(files[i], label) for i in sorted(order[:train_per_class])]
        test += [(files[i], label) for i in sorted(order[train_per_class:need])]
        unused += len(files) - need
    return train, test, unused


@register_dataset(
    "mini-imagenet",
    params=MiniImageNetParams(),
    recipe=MINI_IMAGENET_RECIPE,
    description="Mini-ImageNet, 100 classes pooled from the few-shot splits, 500/100 per class at 84 px",
    needs_root=True,
)
def build_mini_imagenet(params: MiniImageNetParams, root: Path, augment: str) -> DataSplits:
    base = resolve_path(root, params.path)
    if (base / "images").is_dir():
        classes, layout = read_csv_layout(base), "images/ + train/val/test.csv"
    elif base.is_dir():
        classes, layout = read_folder_layout(base), "class folders"
    else:
        classes, layout = {}, ""
    if not classes:
        raise UserError(
            f"mini-imagenet: expected {base}/images/*.jpg with {base}/{{train,val,test}}.csv (filename,label), "
            f"or class folders {base}/{{train,val,test}}/<class>/*.jpg (set data.path to move {base})"
        )
    train_pairs, test_pairs, unused = partition(
        classes, params.train_per_class, params.test_per_class, params.split_seed
    )
    size = params.image_size
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    train = ImageFileDataset(*zip(*train_pairs, strict=True), train_transform(augment, size, mean, std))
    test = ImageFileDataset(*zip(*test_pairs, strict=True), eval_transform(size, mean, std))
    return DataSplits(
        train=train,
        test=test,
        num_classes=len(classes),
        in_chans=3,
        image_size=size,
        train_targets=train.targets,
        mean=mean,
        std=std,
        notes={
            "split": (
                f"classification split over all {len(classes)} classes (few-shot train/val/test pooled): per class "
                f"{params.train_per_class} train / {params.test_per_class} test images, permutation seeded by "
                f"(split_seed={params.split_seed}, crc32(class name)) over file-name order; {unused} images unused"
            ),
            "layout": layout,
        },
        num_workers=AUTO_WORKERS,
    )
