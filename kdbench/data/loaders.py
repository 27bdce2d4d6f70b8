"""Training and evaluation loaders. The training order is a pure function of (seed, epoch), so a resumed run sees
the same batches, and the training augmentation a pure function of (seed, epoch, sample index) (a counter-based
hash: kdbench.data.augment), so every method sees the same images.

Two paths, the same batches and the same crops:
- in-memory sets (digits, CIFAR, STL-10: kdbench.data.tensor_dataset.IndexedTensorDataset) are served a whole batch
  at a time — index → gather → augment → normalise as tensor ops, on the GPU when the set is kept there
  (`on_device`) — with no DataLoader, no per-sample `__getitem__` and no collate (:class:`InMemoryBatches`);
- any other set (image files) goes through a DataLoader whose workers call each sample's `keyed_item` with its key
  (:class:`EpochKeyedAugmentation`), the same crop function on a batch of one.

Training batches (both paths): every batch holds exactly `batch_size` (global) samples and a last incomplete one
is dropped; a training split smaller than one batch is one batch of all of it. With W data-parallel ranks each
gets an equal slice of every global batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from kdbench.data.augment import SampleKey
from kdbench.data.tensor_dataset import IndexedTensorDataset
from kdbench.data.validation import ReindexedSubset


class EpochKeyedAugmentation(Dataset):
    """A training set whose random augmentation of sample i in epoch e is a pure function of (seed, e, i): each
    item is the wrapped set's `keyed_item(i, SampleKey(seed, e, i))` (a set without one is served as it is).

    The keys are hashed (kdbench.data.keyed): no RNG is seeded, forked or drawn from, so what a method draws does
    not move a crop — which lets a teacher's outputs be cached per (seed, epoch, index) (kdbench.teachers.output_cache).
    The epoch comes from the sampler's `set_epoch`. DataLoader workers copy this object when an epoch's iterator
    starts, which is why the train loader's workers must not be persistent (they would keep an earlier epoch).
    """

    def __init__(self, base: Dataset, seed: int) -> None:
        self.base = base
        self.seed = seed
        self.epoch = 0
        self._keyed = hasattr(base, "keyed_item")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        if self._keyed:
            return self.base.keyed_item(index, SampleKey(self.seed, self.epoch, int(index)))  # type: ignore[attr-defined]
        return self.base[index]


def global_batch_size(n: int, batch_size: int, world: int = 1) -> int:
    """The samples in every training batch of a split of `n`: `batch_size`, or all `n` when the split is smaller
    (with W ranks: the most of them that split equally — DDP averages the ranks' mean gradients, which is the
    global mean only when their slices are equal)."""
    size = min(batch_size, n)
    return size - size % world


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

    def permutation(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(self.length, generator=g)

    def __iter__(self) -> Iterator[int]:
        return iter(self.permutation().tolist())

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
        self.global_batch = global_batch_size(length, global_batch, world)
        self.rank = rank
        self.world = world
        self.per_rank = self.global_batch // world
        self.full = train_batch_count(length, self.global_batch) if self.global_batch else 0

    @property
    def epoch(self) -> int:
        return self.order.epoch

    def set_epoch(self, epoch: int) -> None:
        self.order.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        perm = list(self.order)
        for b in range(self.full):
            start = b * self.global_batch + self.rank * self.per_rank
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
    """This process's share of the CPUs: SLURM_CPUS_PER_TASK in a job (already one task's), else the CPUs this
    process may use divided among the processes torch's launcher started on this machine (`--nproc N` sets
    LOCAL_WORLD_SIZE): N ranks must not each start a full machine's worth of loader workers."""
    from kdbench.core.environment import allocated_cpus

    cpus, source = allocated_cpus()
    if source == "SLURM_CPUS_PER_TASK":
        return cpus
    local = os.environ.get("LOCAL_WORLD_SIZE", "")
    return max(1, cpus // int(local)) if local.isdigit() and int(local) > 0 else cpus


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


def in_memory_view(ds: Dataset) -> tuple[IndexedTensorDataset, torch.Tensor | None] | None:
    """(the in-memory set under `ds`, the rows of it that `ds`'s positions 0..n-1 are, or None for all of them),
    through any subsets (a validation split or a training fraction); None for a set not held in memory."""
    rows: torch.Tensor | None = None
    while isinstance(ds, ReindexedSubset):
        own = torch.as_tensor(ds.positions, dtype=torch.int64)
        rows = own if rows is None else own[rows]
        ds = ds.base
    return (ds, rows) if isinstance(ds, IndexedTensorDataset) else None


# Sets up to this size are kept on the GPU by default (CIFAR's training images are 150 MB as uint8, STL-10's 140).
ON_DEVICE_MAX_BYTES = 4 * 2**30


def keep_on_device(ds: IndexedTensorDataset, device: torch.device, on_device: bool | None) -> bool:
    """Whether an in-memory set lives on `device` (a GPU) for the run: `on_device` when given, else
    KDBENCH_DATA_ON_DEVICE=0/1, else when its images fit in ON_DEVICE_MAX_BYTES."""
    if device.type == "cpu":
        return False
    if on_device is None:
        env = os.environ.get("KDBENCH_DATA_ON_DEVICE", "").strip()
        if env in ("0", "1"):
            return env == "1"
        return ds.images.numel() * ds.images.element_size() <= ON_DEVICE_MAX_BYTES
    return on_device


class InMemoryBatches:
    """A training loader for an in-memory set: each batch is one gather of the rows, the keyed augmentation of
    the whole batch and its normalisation, as tensor ops on the device the set is kept on.

    Yields (images, labels, index) like a DataLoader, `index` being the training-split positions (the augmentation
    keys; what CRD's memory bank and the teacher cache address). The order is the `sampler`'s (the engine calls
    its `set_epoch`), so the batches and crops are those of the DataLoader path for the same set.
    """

    def __init__(self, ds: IndexedTensorDataset, rows: torch.Tensor | None, sampler: EpochShuffleSampler |
                 RankSliceSampler, batch_size: int, seed: int, device: torch.device, on_device: bool) -> None:
        self.sampler = sampler
        self.batch_size = batch_size
        self.seed = seed
        self.device = device if on_device else torch.device("cpu")
        self._ds = ds
        self._rows = rows
        self._moved: tuple[IndexedTensorDataset, torch.Tensor | None] | None = None
        self.num_workers = 0

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size

    def _on_device(self) -> tuple[IndexedTensorDataset, torch.Tensor | None]:
        if self._moved is None:  # once per loader: the images cross to the GPU a single time
            rows = None if self._rows is None else self._rows.to(self.device)
            self._moved = (self._ds.to(self.device), rows)
        return self._moved

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        ds, rows = self._on_device()
        order = self.sampler.permutation() if isinstance(self.sampler, EpochShuffleSampler) else \
            torch.as_tensor(list(self.sampler), dtype=torch.int64)
        keys = order[: len(self) * self.batch_size]
        keys = keys.to(self.device).view(len(self), self.batch_size)  # one copy per epoch, sliced per step
        at = keys if rows is None else rows[keys]
        # The epoch's crops in one pass (a pure function of (seed, epoch, index)); each batch takes its rows.
        offsets = ds.offsets(self.seed, self.sampler.epoch, keys.flatten())
        per_batch = None if offsets is None else [o.view(len(self), self.batch_size) for o in offsets]
        for b in range(len(self)):
            images, labels = ds.batch(at[b], None if per_batch is None else tuple(o[b] for o in per_batch))
            yield images, labels, keys[b]


class InMemoryEvalBatches:
    """An evaluation loader for an in-memory set: the batches of the fixed order (`batches`, lists of positions),
    gathered and normalised whole; yields (images, labels, index) like a DataLoader."""

    def __init__(self, ds: IndexedTensorDataset, rows: torch.Tensor | None, batches: list[list[int]],
                 device: torch.device, on_device: bool) -> None:
        self.device = device if on_device else torch.device("cpu")
        self._ds, self._rows, self._batches = ds, rows, batches
        self._moved: tuple[IndexedTensorDataset, list[torch.Tensor], list[torch.Tensor]] | None = None
        self.num_workers = 0

    def __len__(self) -> int:
        return len(self._batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        if self._moved is None:
            index = [torch.tensor(b, dtype=torch.int64, device=self.device) for b in self._batches]
            rows = index if self._rows is None else [self._rows.to(self.device)[i] for i in index]
            self._moved = (self._ds.to(self.device), index, rows)
        ds, index, rows = self._moved
        for i, r in zip(index, rows, strict=True):
            images, labels = ds.batch(r)
            yield images, labels, i


def make_train_loader(
    ds: Dataset, batch_size: int, seed: int, device: torch.device, num_workers: int | None = None,
    *, rank: int = 0, world: int = 1, on_device: bool | None = None,
) -> DataLoader | InMemoryBatches:
    """`batch_size` is the global batch; with `world` > 1 this rank's loader gives its slices of it. An in-memory
    set (with no workers asked for) is served as whole batches (:class:`InMemoryBatches`; `on_device`: keep it on
    the GPU, :func:`keep_on_device`), any other through a DataLoader with keyed per-sample augmentation."""
    n = len(ds)  # type: ignore[arg-type]
    workers = loader_workers(device, num_workers)
    view = in_memory_view(ds) if workers == 0 else None
    if view is not None:
        sampler = RankSliceSampler(n, seed, batch_size, rank, world) if world > 1 else EpochShuffleSampler(n, seed)
        return InMemoryBatches(*view, sampler, global_batch_size(n, batch_size, world) // world, seed, device,
                               keep_on_device(view[0], device, on_device))
    keyed = EpochKeyedAugmentation(ds, seed)
    if world > 1:  # each sample gets the crop it gets in one process: the augmentation is keyed by its index
        sampler: Sampler[int] = RankSliceSampler(n, seed, batch_size, rank, world, keyed)
    else:
        sampler = EpochShuffleSampler(n, seed, keyed)
    return DataLoader(
        keyed,
        batch_size=global_batch_size(n, batch_size, world) // world,
        sampler=sampler,
        drop_last=True,  # every batch has batch_size samples (a split smaller than one batch: all of it)
        num_workers=workers,
        pin_memory=device.type == "cuda",
        # Not persistent: workers copy the keyed dataset (and so its epoch) when an epoch's iterator starts;
        # persistent ones would keep the first epoch's crops. Restarting forked workers costs well under a second.
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )


def make_eval_loader(
    ds: Dataset, batch_size: int, order_seed: int, device: torch.device, num_workers: int | None = None,
    *, rank: int = 0, world: int = 1, on_device: bool | None = None,
) -> DataLoader | InMemoryEvalBatches:
    """Batches of one fixed shuffled order (:class:`FixedOrderSampler`); with `world` > 1, this rank's whole
    batches of it (:class:`RankBatches`). In-memory sets are served as whole batches, like training's."""
    workers = loader_workers(device, num_workers)
    view = in_memory_view(ds) if workers == 0 else None
    if view is not None:
        order = FixedOrderSampler(len(ds), order_seed).order  # type: ignore[arg-type]
        batches = RankBatches(order, batch_size, rank, world).batches
        return InMemoryEvalBatches(*view, batches, device, keep_on_device(view[0], device, on_device))
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
