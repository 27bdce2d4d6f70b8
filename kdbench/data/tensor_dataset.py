"""Image splits held decoded in memory (digits, CIFAR, STL-10), served a whole batch at a time.

A batch is index → gather → keyed augmentation → `finish` (e.g. uint8 → normalised float), all tensor ops on the
device the images are on (kdbench.data.loaders.InMemoryBatches): no per-sample `__getitem__`, no collate.
`__getitem__` stays for code that reads single items (tests, a validation split's view): it gives the item
without random augmentation (no key).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import Dataset

from kdbench.data.augment import PadCropFlip, SampleKey


class IndexedTensorDataset(Dataset):
    """`images` N × C × H × W (any dtype), `targets` (N,) int64; yields (image, label, index).

    `augment` runs on gathered batches before `finish`, which turns raw pixels into the model's input (a per-
    channel normalisation that broadcasts over a batch). `classes`: the class names, when the set has them.
    """

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        augment: PadCropFlip | None = None,
        finish: Callable[[torch.Tensor], torch.Tensor] | None = None,
        classes: list[str] | None = None,
    ) -> None:
        assert images.shape[0] == targets.shape[0]
        self.images = images
        self.targets = targets.to(torch.int64)
        self.augment = augment
        self.finish = finish
        if classes is not None:
            self.classes = classes

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device) -> IndexedTensorDataset:
        """This set with its tensors on `device` (a loader's copy, kept on the GPU by `data.on_device`)."""
        if self.images.device == device:
            return self
        moved = IndexedTensorDataset(self.images.to(device), self.targets.to(device), self.augment, self.finish)
        moved.__dict__.update({k: v for k, v in self.__dict__.items() if k not in moved.__dict__})
        return moved

    def offsets(self, seed: int, epoch: int, index: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
        """The augmentation's keyed crop offsets and flips of the samples `index` (None: no augmentation)."""
        return None if self.augment is None else self.augment.offsets(seed, epoch, index.to(self.images.device))

    def batch(self, rows: torch.Tensor, offsets: tuple[torch.Tensor, ...] | None = None,
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) of the samples at `rows`, on this set's device; augmented with `offsets` (from
        :meth:`offsets`) when given."""
        rows = rows.to(self.images.device, non_blocking=True)
        x = self.images.index_select(0, rows)
        if offsets is not None and self.augment is not None:
            x = self.augment.crop(x, *offsets)
        if self.finish is not None:
            x = self.finish(x)
        return x, self.targets.index_select(0, rows)

    def keyed_item(self, index: int, key: SampleKey | None) -> tuple[torch.Tensor, int, int]:
        """One sample through the very batch functions (a loader worker's path)."""
        offsets = None if key is None else self.offsets(key.seed, key.epoch, torch.tensor([key.index]))
        x, y = self.batch(torch.tensor([index]), offsets)
        return x[0], int(y[0]), index

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        return self.keyed_item(index, None)
