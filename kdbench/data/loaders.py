"""DataLoaders whose order is a pure function of (seed, epoch), so a resumed run sees the same batches."""

from __future__ import annotations

import os
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


# DataSplits.num_workers for disk-backed sets: "decode in worker processes, as many as suit the device".
AUTO_WORKERS = -1


def _available_cpus() -> int:
    from ..environment import allocated_cpus

    return allocated_cpus()[0]  # SLURM_CPUS_PER_TASK in a job, else the CPUs this process may use


def loader_workers(device: torch.device, requested: int | None = None) -> int:
    """Worker processes for a loader.

    In-memory tensor sets ask for none (`None`/0). Disk-backed sets ask for AUTO_WORKERS: on a GPU up to 8
    workers (one CPU left to the training loop) keep decoding off the critical path; on a CPU the model's
    intra-op threads already use every core, so only a quarter of them decode (none on a machine with < 4).
    KDBENCH_WORKERS=N overrides the automatic choice.
    """
    if requested is None or requested == 0:
        return 0
    if requested != AUTO_WORKERS:
        return requested
    env = os.environ.get("KDBENCH_WORKERS", "")
    if env.strip().isdigit():
        return int(env)
    cpus = _available_cpus()
    if device.type == "cuda":
        return max(0, min(8, cpus - 1))
    return min(4, cpus // 4)


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
        # Not persistent: workers seed their RNG from the main process's torch RNG when an epoch's iterator
        # starts, and the engine reseeds that RNG per epoch — so the random crops of epoch e are a function of
        # (seed, e) and a resumed run draws the same ones. Persistent workers would carry their RNG across
        # epochs (and restart it differently on resume). Restarting forked workers costs well under a second.
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
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
        persistent_workers=workers > 0,  # evaluation draws no random numbers: keep its workers between epochs
    )
