"""`digits`: scikit-learn's 8×8 handwritten digits (1,797 images, 10 classes), the embedded default dataset.

It ships inside the scikit-learn wheel, so the harness runs end to end with no download. Images are upsampled
to `image_size` (default 16, so that timm's ImageNet stem still leaves a spatial map for the later stages),
replicated to 3 channels, and normalised with the training split's mean and std. The train/test split is
stratified and fixed by `split_seed` (not by the run's seed: every run of every method sees the same split).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from kdbench.core.errors import check_range
from kdbench.data.augment import make_augment
from kdbench.data.registry import DataSplits, register_dataset
from kdbench.data.tensor_dataset import IndexedTensorDataset
from kdbench.spec.recipe import Recipe


@dataclass(frozen=True)
class DigitsParams:
    image_size: int = 16
    split_seed: int = 0
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        check_range("data.image_size", self.image_size, 8, 224)
        check_range("data.test_fraction", self.test_fraction, 0.05, 0.5)


# Chosen so that `kdbench run --method kd --teacher resnet152` (teacher training included) fits in ~5 minutes
# on 2 CPU cores while the teacher passes 95 % top-1 (figures in the README).
DIGITS_RECIPE = Recipe(
    name="digits-v1",
    epochs=10,
    batch_size=64,
    lr=0.05,
    optimizer="sgd",
    momentum=0.9,
    nesterov=True,
    weight_decay=5e-4,
    schedule="cosine",
    warmup_epochs=1,
    augment="crop-pad2",
    eval_batch_size=256,
)


@register_dataset(
    "digits",
    params=DigitsParams(),
    recipe=DIGITS_RECIPE,
    description="scikit-learn load_digits, 10 classes, 1,437/360 stratified split, embedded (no download)",
)
def build_digits(params: DigitsParams, root: Path, augment: str) -> DataSplits:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32) / 16.0  # (N, 8, 8) in [0, 1]
    targets = torch.tensor(data.target, dtype=torch.int64)
    idx = torch.arange(len(targets)).numpy()
    train_idx, test_idx = train_test_split(
        idx, test_size=params.test_fraction, stratify=data.target, random_state=params.split_seed
    )
    images = F.interpolate(images[:, None], size=params.image_size, mode="bilinear", align_corners=False)
    images = images.expand(-1, 3, -1, -1).contiguous()
    train_x, test_x = images[train_idx], images[test_idx]
    mean, std = train_x.mean().item(), train_x.std().item()
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    return DataSplits(
        train=IndexedTensorDataset(train_x, targets[train_idx], make_augment(augment)),
        test=IndexedTensorDataset(test_x, targets[test_idx]),
        num_classes=10,
        in_chans=3,
        image_size=params.image_size,
        train_targets=targets[train_idx],
        mean=(mean,) * 3,
        std=(std,) * 3,
        notes={"split": f"stratified, test_fraction={params.test_fraction}, split_seed={params.split_seed}"},
    )
