"""DataLoaders whose order is a pure function of (seed, epoch), so a resumed run sees the same batches, and whose
training augmentation is a pure function of (seed, epoch, sample index), so every method sees the same images."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's augmentation draws: a hash of (run seed, epoch, index in the training split)."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class EpochKeyedAugmentation(Dataset):
    """A training set whose random augmentation of sample i in epoch e is a pure function of (seed, e, i).

    Each `__getitem__` runs the wrapped set's transform under a forked torch RNG seeded by :func:`sample_seed`
    and restores the caller's RNG afterwards. So the crops neither consume nor depend on the global stream that
    the engine reseeds per epoch and that methods draw from (CRD's negatives): every method, whatever it draws,
    sees the same images — which is what lets a teacher's outputs be cached per (seed, epoch, index)
    (kdbench.teacher_cache). The epoch comes from the sampler's `set_epoch`. DataLoader workers copy this object
    when an epoch's iterator starts, which is why the train loader's workers must not be persistent (they would
    keep an earlier epoch).
    """

    def __init__(self, base: Dataset, seed: int) -> None:
        self.base = base
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, self.epoch, int(index)))
            return self.base[index]


def train_batch_count(length: int, batch_size: int) -> int:
    """Training batches per epoch: every training batch holds exactly `batch_size` samples and the ragged last
    one is dropped (torch's `drop_last`). A small last batch weighs its few samples like a full batch, and a loss
    that is a mean over pairs of the batch (PKT's B×B similarities, RKD's distances) is several times larger on
    it, so with few batches per epoch it steers training (embedded-hard: 142 samples in batches of 64 left a last
    batch of 14). RepDistiller's and mdistiller's CIFAR loaders keep it (50000 = 781·64 + 16, a last batch of 16
    of 782, too few to matter there). The order is reshuffled every epoch, so the dropped samples differ and none
    is left out for good. A split smaller than one batch is one batch of all of it."""
    return max(1, length // batch_size)


class EpochShuffleSampler(Sampler[int]):
    """A fresh permutation per epoch drawn from (seed, epoch) alone; `set_epoch` is called by the engine.

    Unlike RandomSampler (whose order depends on how many epochs the process has already drawn) this gives a
    resumed run the exact batches of an uninterrupted one. `set_epoch` also tells the `keyed` dataset (the
    loader's :class:`EpochKeyedAugmentation`) the epoch, so that its crops follow the epoch too.
    """

    def __init__(self, length: int, seed: int, keyed: EpochKeyedAugmentation | None = None) -> None:
        self.length = length
        self.seed = seed
        self.epoch = 0
        self.keyed = keyed

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.keyed is not None:
            self.keyed.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.length, generator=g).tolist())

    def __len__(self) -> int:
        return self.length


class RankSliceSampler(Sampler[int]):
    """Rank `rank`'s share of data-parallel training over `world` processes: slice `rank` of every full global
    batch of the single-process permutation (:class:`EpochShuffleSampler`'s, from (seed, epoch)), so the W ranks
    together train on the very batches one process would (:func:`train_batch_count`): the ragged last batch is
    dropped, and a split smaller than one global batch is one batch, dealt in equal slices of `length // world`.
    """

    def __init__(self, length: int, seed: int, global_batch: int, rank: int, world: int,
                 keyed: EpochKeyedAugmentation | None = None) -> None:
        self.order = EpochShuffleSampler(length, seed, keyed)  # keyed: the crops follow the epoch, as on one rank
        self.global_batch = global_batch
        self.rank = rank
        self.world = world
        self.full = train_batch_count(length, global_batch)
        # Equal slices only: DDP averages the ranks' mean gradients, which is the global mean only when they are.
        self.per_rank = global_batch // world if length >= global_batch else length // world

    def set_epoch(self, epoch: int) -> None:
        self.order.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        perm = list(self.order)
        step = min(self.global_batch, len(perm))
        for b in range(self.full):
            start = b * step + self.rank * self.per_rank
            yield from perm[start:start + self.per_rank]

    def __len__(self) -> int:
        return self.full * self.per_rank


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


class RankBatches(Sampler[list[int]]):
    """Batches of the fixed evaluation order dealt to ranks whole (batch b to rank b mod W): every evaluation
    batch is the one a single process forms (a graph over the batch sees the same neighbours), and every test
    image is counted once when the ranks' counts are summed."""

    def __init__(self, order: list[int], batch_size: int, rank: int, world: int) -> None:
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        self.batches = batches[rank::world]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


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
    ds: Dataset, batch_size: int, seed: int, device: torch.device, num_workers: int | None = None,
    *, rank: int = 0, world: int = 1,
) -> DataLoader:
    """`batch_size` is the global batch; with `world` > 1 this rank's loader gives its slices of it. Every epoch
    is :func:`train_batch_count` full batches of the (seed, epoch) order; the ragged last batch is dropped."""
    n = len(ds)  # type: ignore[arg-type]
    workers = loader_workers(device, num_workers)
    keyed = EpochKeyedAugmentation(ds, seed)
    if world > 1:  # each sample gets the crop it gets in one process: the augmentation is keyed by its index
        return DataLoader(keyed, batch_size=batch_size // world,
                          sampler=RankSliceSampler(n, seed, batch_size, rank, world, keyed), num_workers=workers,
                          pin_memory=device.type == "cuda", persistent_workers=False,
                          prefetch_factor=4 if workers else None)
    return DataLoader(
        keyed,
        batch_size=batch_size,
        sampler=EpochShuffleSampler(n, seed, keyed),
        # Full batches only (train_batch_count); a split smaller than one batch is that one batch.
        drop_last=n >= batch_size,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        # Not persistent: workers copy the keyed dataset (and so its epoch) when an epoch's iterator starts;
        # persistent ones would keep the first epoch's crops. Restarting forked workers costs well under a second.
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )


def make_eval_loader(
    ds: Dataset, batch_size: int, order_seed: int, device: torch.device, num_workers: int | None = None,
    *, rank: int = 0, world: int = 1,
) -> DataLoader:
    """With `world` > 1, this rank's whole batches of the one fixed order (:class:`RankBatches`)."""
    workers = loader_workers(device, num_workers)
    if world > 1:
        order = FixedOrderSampler(len(ds), order_seed).order  # type: ignore[arg-type]
        return DataLoader(ds, batch_sampler=RankBatches(order, batch_size, rank, world), num_workers=workers,
                          pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=FixedOrderSampler(len(ds), order_seed),  # type: ignore[arg-type]
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,  # evaluation draws no random numbers: keep its workers between epochs
    )
