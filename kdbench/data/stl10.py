"""`stl10`: STL-10's labelled splits (5,000 train / 8,000 test, 10 classes, 96 px) via torchvision's STL10 reader.

Files: `<data-root>/stl10_binary/{train_X.bin,train_y.bin,test_X.bin,test_y.bin}` (+ `class_names.txt`) from the
official `stl10_binary.tar.gz`. The 100,000 unlabelled images are not used, so our subclass drops
`unlabeled_X.bin` from the files it requires and checks; the md5 design is the one described in
`kdbench/data/cifar.py` (torchvision's check kept on; tests patch our subclass's `train_list`/`test_list`).

Normalisation: the per-channel mean/std of the labelled training images, computed at load time (5,000 images,
well under a second) and recorded in the run's data notes. The images are kept in memory as uint8 tensors
(resized once when `data.image_size` is not 96) and served as whole batches: gather, keyed pad-crop-flip,
normalisation (kdbench.data.loaders.InMemoryBatches; on the GPU by default).

Recipe `stl10-v1` (our choice, documented): the CRD schedule shape — SGD 0.9, lr 0.05 ×0.1 after 150/180/210 of
240 epochs, weight decay 5e-4, batch 64 — with CIFAR's crop scaled to 96 px ("crop-pad12-flip": pad = side/8,
as 4/32) and timm's ImageNet stem (96 px → 24 px after the stem: a CIFAR stem would run every stage at 96 px,
9× CIFAR's cost).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import STL10

from kdbench.core.errors import check_range
from kdbench.data._files import open_verified
from kdbench.data.augment import PadCropFlip
from kdbench.data.registry import DataSplits, register_dataset
from kdbench.data.tensor_dataset import IndexedTensorDataset
from kdbench.data.transforms import Normalize255, eval_transform, in_memory_augment
from kdbench.spec.recipe import crd_schedule

STL10_RECIPE = crd_schedule("stl10-v1", augment="crop-pad12-flip", cifar_stem=False)


class STL10Labelled(STL10):
    """torchvision's STL10 reader for the labelled splits, md5 check on; its decoded array becomes an in-memory
    split."""

    train_list = STL10.train_list[:2]  # train_X.bin, train_y.bin: the unlabelled file is neither needed nor checked

    def __init__(self, root: str, split: str, transform=None, download: bool = False) -> None:
        super().__init__(root, split=split, transform=transform, download=download)
        # torchvision keeps a transposed (non-contiguous) view of the column-major file; one copy makes each
        # image a contiguous C × H × W slice.
        self.data = np.ascontiguousarray(self.data)


def fit_images(data: np.ndarray, size: int, chunk: int = 500) -> torch.Tensor:
    """N × 3 × 96 × 96 uint8 images as an N × 3 × size × size uint8 tensor: resized once at load time
    (antialiased, as the per-sample pipeline did), in chunks so that the resize's float copy stays small."""
    images = torch.from_numpy(data)
    if size == data.shape[-1]:
        return images
    steps = eval_transform(size, (0.0,), (1.0,), source_size=data.shape[-1]).steps[:-1]  # the fit, no normalise
    out = []
    for start in range(0, images.shape[0], chunk):
        x = images[start : start + chunk]
        for step in steps:
            x = step(x)
        out.append(x)
    return torch.cat(out)


def _check_bin(path: Path) -> None:
    """An image file must hold whole 3×96×96 images (labels: any number of bytes)."""
    if path.name.endswith("_X.bin") and path.stat().st_size % (3 * 96 * 96):
        raise ValueError(f"{path.stat().st_size} bytes is not a whole number of 3×96×96 images")


@dataclass(frozen=True)
class STL10Params:
    image_size: int = 96  # resized (antialiased) when not 96

    def __post_init__(self) -> None:
        check_range("data.image_size", self.image_size, 16, 512)


def channel_stats(data: np.ndarray, chunk: int = 500) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std in [0, 1] of N × C × H × W uint8 images, in chunks so that the
    float copy stays small (5,000 STL images would be 1.1 GB at once)."""
    total = torch.zeros(data.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, data.shape[0], chunk):
        x = torch.from_numpy(data[start : start + chunk]).to(torch.float64).div_(255.0)
        total += x.sum(dim=(0, 2, 3))
        squares += x.square().sum(dim=(0, 2, 3))
    n = data.shape[0] * data.shape[2] * data.shape[3]
    mean = total / n
    std = (squares / n - mean.square()).clamp_min(0).sqrt()
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


@register_dataset(
    "stl10",
    params=STL10Params(),
    recipe=STL10_RECIPE,
    description="STL-10 labelled splits, 10 classes, 5,000/8,000 at 96 px (torchvision reader, download when missing)",
    needs_root=True,
)
def build_stl10(params: STL10Params, root: Path, augment: str) -> DataSplits:
    cls = STL10Labelled
    folder = root / cls.base_folder
    files = [(f, md5) for f, md5 in [*cls.train_list, *cls.test_list]]

    def open_split(split: str) -> STL10Labelled:
        return open_verified(
            "stl10", root, folder, files, cls.url,
            construct=lambda: cls(str(root), split=split),
            download=lambda: cls(str(root), split="train", download=True),
            file_format=f"the raw uint8 .bin files of the official {cls.filename} (images 3×96×96 each)",
            read_file=_check_bin,
        )

    train, test = open_split("train"), open_split("test")
    mean, std = channel_stats(train.data)
    size = params.image_size
    finish = Normalize255(mean, std)
    classes = list(train.classes)

    def in_memory(split: STL10Labelled, augment: PadCropFlip | None) -> IndexedTensorDataset:
        labels = torch.from_numpy(split.labels.astype(np.int64))
        return IndexedTensorDataset(fit_images(split.data, size), labels, augment, finish, classes=classes)

    return DataSplits(
        train=in_memory(train, in_memory_augment(augment, "stl10")),
        test=in_memory(test, None),
        num_classes=10,
        in_chans=3,
        image_size=size,
        train_targets=torch.from_numpy(train.labels.astype(np.int64)),
        mean=mean,
        std=std,
        notes={
            "split": f"official labelled train/test ({len(train):,}/{len(test):,}); unlabelled images unused",
            "normalisation": "per-channel mean/std of the labelled training images",
        },
    )
