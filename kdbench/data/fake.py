"""`fake`: torchvision's FakeData (random images with random labels), for fast tests of the plumbing only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.datasets import FakeData
from torchvision.transforms import v2

from kdbench.core.errors import check_range
from kdbench.data.augment import make_augment
from kdbench.data.registry import DataSplits, register_dataset
from kdbench.data.tensor_dataset import IndexedTensorDataset
from kdbench.spec.recipe import Recipe


@dataclass(frozen=True)
class FakeParams:
    num_train: int = 64
    num_test: int = 32
    num_classes: int = 10
    image_size: int = 16

    def __post_init__(self) -> None:
        check_range("data.num_train", self.num_train, 1, 1_000_000)
        check_range("data.num_test", self.num_test, 1, 1_000_000)
        check_range("data.num_classes", self.num_classes, 2, 100_000)
        check_range("data.image_size", self.image_size, 4, 512)


FAKE_RECIPE = Recipe(name="fake-v1", epochs=2, batch_size=16, lr=0.05, schedule="cosine", eval_batch_size=32)


def _materialise(ds: FakeData) -> tuple[torch.Tensor, torch.Tensor]:
    # FakeData draws each item from a per-index seed: materialising once keeps epochs cheap and deterministic.
    xs, ys = zip(*(ds[i] for i in range(len(ds))), strict=True)
    return torch.stack(xs), torch.tensor(ys, dtype=torch.int64)


@register_dataset("fake", params=FakeParams(), recipe=FAKE_RECIPE, description="torchvision FakeData (tests only)")
def build_fake(params: FakeParams, root: Path, augment: str) -> DataSplits:
    to_tensor = v2.Compose([v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True)])
    shape = (3, params.image_size, params.image_size)
    train = FakeData(params.num_train, shape, params.num_classes, transform=to_tensor, random_offset=0)
    test = FakeData(params.num_test, shape, params.num_classes, transform=to_tensor, random_offset=10_000_000)
    train_x, train_y = _materialise(train)
    test_x, test_y = _materialise(test)
    return DataSplits(
        train=IndexedTensorDataset(train_x, train_y, make_augment(augment)),
        test=IndexedTensorDataset(test_x, test_y),
        num_classes=params.num_classes,
        in_chans=3,
        image_size=params.image_size,
        train_targets=train_y,
    )
