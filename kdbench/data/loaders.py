"""DataLoaders whose order is a pure function of (seed, epoch), so a resumed run sees the same batches."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class EpochShuffleSampler(Sampler[int]):
    """A fresh permutation per epoch drawn from (seed, epoch) alone; `set_epoch` is called by the engine.

    Unlike RandomSampler (whose order depends on how many epochs the process has already drawn) this gives a
    resumed run the exact batches of an uninterrupted one.
    """

    def __init__(self, length: int, seed: int) -> None:
        self.length = length
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.length, generator=g).tolist())

    def __len__(self) -> int:
        return self.length


class FixedOrderSampler(Sampler[int]):
    """One fixed shuffled order for evaluation. Batch-dependent students (graph over the batch) see the same
    neighbours in every evaluation; the order seed is recorded with the results."""

    def __init__(self, length: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(length, generator=g).tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


def loader_workers(device: torch.device, requested: int | None = None) -> int:
    """In-memory tensor sets need no worker processes; disk-backed sets set `requested` explicitly."""
    return 0 if requested is None else requested


def make_train_loader(
    ds: Dataset, batch_size: int, seed: int, device: torch.device, num_workers: int | None = None
) -> DataLoader:
    n = len(ds)  # type: ignore[arg-type]
    workers = loader_workers(device, num_workers)
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=EpochShuffleSampler(n, seed),
        # A last batch of one sample would crash BatchNorm in train mode; any other remainder is kept.
        drop_last=(n % batch_size == 1),
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )


def make_eval_loader(
    ds: Dataset, batch_size: int, order_seed: int, device: torch.device, num_workers: int | None = None
) -> DataLoader:
    workers = loader_workers(device, num_workers)
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=FixedOrderSampler(len(ds), order_seed),  # type: ignore[arg-type]
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
