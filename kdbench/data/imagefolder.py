"""`imagefolder`: any ImageNet-style tree `<path>/train/<class>/<image>` + `<path>/val/<class>/<image>`.

`data.path` is the tree's root, absolute or relative to the data root (prefer relative: the path is a dataset
parameter, so it is part of the run id, and a relative name keeps ids equal across machines). Classes are the
sorted folder names of the training split (images may sit in nested sub-folders, as torchvision's ImageFolder
allows); every class of the test split must be one of them. Images are decoded per sample in loader workers.

Recipe `imagefolder-v1`: the torchvision/ResNet ImageNet recipe (Goyal et al. 2017 at batch 256) — SGD 0.9,
lr 0.1 ×0.1 after epochs 30/60 of 90, weight decay 1e-4, RandomResizedCrop(224) + flip for training, resize
256 → centre crop 224 for evaluation, ImageNet mean/std.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from kdbench.core.errors import UserError, check_range
from kdbench.data.augment import SampleKey
from kdbench.data.loaders import AUTO_WORKERS
from kdbench.data.registry import DataSplits, register_dataset
from kdbench.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Pipeline,
    decode_image_file,
    eval_transform,
    is_image_file,
    train_transform,
)
from kdbench.spec.recipe import Recipe

IMAGEFOLDER_RECIPE = Recipe(
    name="imagefolder-v1",
    epochs=90,
    batch_size=256,
    lr=0.1,
    optimizer="sgd",
    momentum=0.9,
    weight_decay=1e-4,
    schedule="multistep",
    milestones=(30, 60),
    gamma=0.1,
    augment="rrc-flip",
    eval_batch_size=256,
)


class ImageFileDataset(Dataset):
    """Image files decoded on access, yielding (image, label, index).

    Paths live in one numpy string array rather than a list of Python strings: forked DataLoader workers would
    otherwise touch every string's reference count and copy the whole list page by page (ImageNet: 1.3 M paths).
    """

    def __init__(self, files: Sequence[str], targets: Sequence[int], transform: Callable | None = None) -> None:
        assert len(files) == len(targets)
        self.files = np.asarray(files, dtype=np.str_)
        self.targets = torch.as_tensor(list(targets), dtype=torch.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def keyed_item(self, index: int, key: SampleKey | None) -> tuple[torch.Tensor, int, int]:
        """The sample with its random augmentation keyed by `key` (kdbench.data.loaders.EpochKeyedAugmentation);
        without a key, none."""
        image = decode_image_file(str(self.files[index]))
        if self.transform is not None:
            image = self.transform(image, key) if isinstance(self.transform, Pipeline) else self.transform(image)
        return image, int(self.targets[index]), index

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        return self.keyed_item(index, None)


def resolve_path(root: Path, path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else root / p


def scan_class_folders(folder: Path) -> dict[str, list[str]]:
    """Class folder name → its image files (sorted, nested sub-folders included); folders without images are
    left out."""
    classes: dict[str, list[str]] = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if not entry.is_dir():
            continue
        files = [
            os.path.join(dirpath, name)
            for dirpath, _, names in os.walk(entry.path, followlinks=True)
            for name in names
            if is_image_file(name)
        ]
        if files:
            classes[entry.name] = sorted(files)
    return classes


def flatten(classes: dict[str, list[str]], class_index: dict[str, int]) -> tuple[list[str], list[int]]:
    files: list[str] = []
    targets: list[int] = []
    for name, paths in classes.items():
        files += paths
        targets += [class_index[name]] * len(paths)
    return files, targets


def image_file_splits(
    train: tuple[list[str], list[int]], test: tuple[list[str], list[int]], num_classes: int, augment: str,
    size: int, mean: tuple[float, ...], std: tuple[float, ...], crop_ratio: float, notes: dict,
) -> DataSplits:
    """(files, targets) of each split as image-file datasets: the `augment` pipeline for training, resize to
    size / crop_ratio + centre crop for evaluation; decoded in loader workers (AUTO_WORKERS)."""
    train_set = ImageFileDataset(*train, train_transform(augment, size, mean, std))
    test_set = ImageFileDataset(*test, eval_transform(size, mean, std, crop_ratio=crop_ratio))
    return DataSplits(train=train_set, test=test_set, num_classes=num_classes, in_chans=3, image_size=size,
                      train_targets=train_set.targets, mean=mean, std=std, notes=notes, num_workers=AUTO_WORKERS)


@dataclass(frozen=True)
class ImageFolderParams:
    path: str = "imagefolder"  # absolute, or relative to the data root
    train_dir: str = "train"
    test_dir: str = "val"
    image_size: int = 224
    crop_ratio: float = 0.875  # evaluation: resize to image_size / crop_ratio, centre-crop image_size
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        check_range("data.image_size", self.image_size, 8, 1024)
        check_range("data.crop_ratio", self.crop_ratio, 0.0, 1.0, low_open=True)
        if len(self.mean) != 3 or len(self.std) != 3:
            raise UserError("data.mean and data.std take three values (R,G,B), e.g. data.mean=0.485,0.456,0.406")


@register_dataset(
    "imagefolder",
    params=ImageFolderParams(),
    recipe=IMAGEFOLDER_RECIPE,
    description="any <data.path>/{train,val}/<class>/<image> tree (ImageNet style), 224 px",
    needs_root=True,
)
def build_imagefolder(params: ImageFolderParams, root: Path, augment: str) -> DataSplits:
    base = resolve_path(root, params.path)
    train_dir, test_dir = base / params.train_dir, base / params.test_dir
    if not train_dir.is_dir() or not test_dir.is_dir():
        raise UserError(
            f"imagefolder: expected {train_dir}/<class>/<image> and {test_dir}/<class>/<image> "
            f"(set data.path=DIR, absolute or relative to the data root {root})"
        )
    train_classes = scan_class_folders(train_dir)
    test_classes = scan_class_folders(test_dir)
    if not train_classes or not test_classes:
        empty = train_dir if not train_classes else test_dir
        raise UserError(f"imagefolder: no images in class folders under {empty} (expected {empty}/<class>/<image>)")
    unknown = sorted(set(test_classes) - set(train_classes))
    if unknown:
        raise UserError(f"imagefolder: classes {unknown[:5]} of {test_dir} have no folder in {train_dir}")
    class_index = {name: i for i, name in enumerate(train_classes)}
    train = flatten(train_classes, class_index)
    test = flatten(test_classes, class_index)
    notes = {"split": f"folders {params.train_dir}/ and {params.test_dir}/ as given "
                      f"({len(train[0]):,}/{len(test[0]):,})",
             "classes": len(class_index)}
    return image_file_splits(train, test, len(class_index), augment, params.image_size, tuple(params.mean),
                             tuple(params.std), params.crop_ratio, notes)
