"""An in-memory image dataset that returns (image, label, index), with an optional per-sample augmentation."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import Dataset


class IndexedTensorDataset(Dataset):
    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        assert images.shape[0] == targets.shape[0]
        self.images = images
        self.targets = targets
        self.transform = transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        x = self.images[index]
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.targets[index]), index


class IndexedDataset(Dataset):
    """Wraps any dataset yielding (x, y) so that it yields (x, y, index)."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        x, y = self.base[index]
        return x, int(y), index
