"""How many worker processes a loader gets, and the loader settings that follow from the device and workers
(the training order itself: tests/test_sampler.py)."""

from __future__ import annotations

import os

import pytest
import torch
from torch.utils.data import TensorDataset

from kdbench.data import loaders
from kdbench.data.loaders import AUTO_WORKERS, EpochShuffleSampler, loader_workers, make_eval_loader, make_train_loader

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture
def cpus(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("KDBENCH_WORKERS", raising=False)

    def set_cpus(n: int) -> None:
        monkeypatch.setattr(loaders, "_available_cpus", lambda: n)

    return set_cpus


def test_in_memory_sets_get_no_workers_and_explicit_counts_are_kept(cpus):
    cpus(16)
    assert loader_workers(CPU) == 0 and loader_workers(CPU, 0) == 0 and loader_workers(CUDA, None) == 0
    assert loader_workers(CPU, 1) == 1 and loader_workers(CUDA, 3) == 3


@pytest.mark.parametrize("n,on_gpu,on_cpu", [(1, 0, 0), (2, 1, 0), (7, 6, 1), (16, 8, 4), (64, 8, 4)])
def test_automatic_workers_follow_the_cpus_and_the_device(cpus, n, on_gpu, on_cpu):
    cpus(n)
    assert loader_workers(CUDA, AUTO_WORKERS) == on_gpu  # up to 8, one CPU left to the training loop
    assert loader_workers(CPU, AUTO_WORKERS) == on_cpu  # a quarter of the CPUs, at most 4


def test_the_environment_overrides_the_automatic_choice(cpus, monkeypatch):
    cpus(16)
    monkeypatch.setenv("KDBENCH_WORKERS", "3")
    assert loader_workers(CPU, AUTO_WORKERS) == 3 and loader_workers(CPU, 2) == 2
    monkeypatch.setenv("KDBENCH_WORKERS", "many")
    assert loader_workers(CPU, AUTO_WORKERS) == 4


def test_available_cpus_counts_this_process_cpus():
    assert loaders._available_cpus() == len(os.sched_getaffinity(0))


def test_loader_settings_on_cpu_with_and_without_workers():
    ds = TensorDataset(torch.zeros(10, 1), torch.zeros(10, dtype=torch.long), torch.arange(10))
    train = make_train_loader(ds, 4, seed=0, device=CPU)
    assert (train.num_workers, train.pin_memory, train.persistent_workers, train.prefetch_factor) == (0, False, False,
                                                                                                      None)
    train = make_train_loader(ds, 4, seed=0, device=CPU, num_workers=2)
    assert (train.num_workers, train.persistent_workers, train.prefetch_factor) == (2, False, 4)
    ev = make_eval_loader(ds, 4, order_seed=0, device=CPU, num_workers=1)  # even one worker is kept
    assert (ev.num_workers, ev.pin_memory, ev.persistent_workers) == (1, False, True)
    assert make_eval_loader(ds, 4, order_seed=0, device=CPU).persistent_workers is False
    # On a GPU batches are pinned for asynchronous copies (built here, never iterated: no GPU needed).
    assert make_train_loader(ds, 4, seed=0, device=CUDA).pin_memory is True
    assert make_eval_loader(ds, 4, order_seed=0, device=CUDA).pin_memory is True


def test_a_sampler_never_told_its_epoch_draws_epoch_zeros_order():
    fresh, told = EpochShuffleSampler(20, 4), EpochShuffleSampler(20, 4)
    told.set_epoch(0)
    assert list(fresh) == list(told)
    told.set_epoch(1)
    assert list(fresh) != list(told)


def _digits_subset():
    """An augmented in-memory set under a subset (a training fraction): keys are the subset's positions."""
    from kdbench.data import build_dataset
    from kdbench.data.validation import ReindexedSubset

    data = build_dataset("digits", augment="crop-pad2")
    return ReindexedSubset(data.train, list(range(3, 500, 3)))


def _by_index(loader, epoch: int) -> dict[int, torch.Tensor]:
    loader.sampler.set_epoch(epoch)
    return {int(i): x for images, _, index in loader for x, i in zip(images, index, strict=True)}


def test_batch_served_and_worker_served_crops_are_the_same():
    # The in-memory path (whole batches) and the DataLoader path (a worker calls the same crop function on one
    # sample) give every sample the same image, for any batch size.
    ds = _digits_subset()
    batched = make_train_loader(ds, 16, seed=4, device=CPU)
    workers = make_train_loader(ds, 10, seed=4, device=CPU, num_workers=1)
    assert isinstance(batched, loaders.InMemoryBatches) and isinstance(workers, torch.utils.data.DataLoader)
    a, b = _by_index(batched, 2), _by_index(workers, 2)
    common = set(a) & set(b)
    assert len(common) > 100 and all(torch.equal(a[i], b[i]) for i in common)
    plain = {i: ds[i][0] for i in common}
    assert sum(not torch.equal(a[i], plain[i]) for i in common) > len(common) // 2  # it does augment


def test_ranks_together_serve_one_process_batches_and_crops():
    ds = _digits_subset()
    one = make_train_loader(ds, 16, seed=4, device=CPU)
    ranks = [make_train_loader(ds, 16, seed=4, device=CPU, rank=r, world=2) for r in range(2)]
    for loader in (one, *ranks):
        loader.sampler.set_epoch(3)
    batches = list(one)
    per_rank = [list(r) for r in ranks]
    assert len(batches) == len(per_rank[0]) == len(per_rank[1]) == len(ds) // 16
    for b, whole in enumerate(batches):
        images = torch.cat([per_rank[0][b][0], per_rank[1][b][0]])
        index = torch.cat([per_rank[0][b][2], per_rank[1][b][2]])
        assert torch.equal(index, whole[2]) and torch.equal(images, whole[0])


def test_a_fresh_loader_gives_a_later_epoch_the_crops_of_a_running_one():
    # What a resumed run relies on: epoch e's batches need nothing from epochs before it.
    ds = _digits_subset()
    running = make_train_loader(ds, 16, seed=4, device=CPU)
    for epoch in (1, 2):
        _by_index(running, epoch)
    later, fresh = _by_index(running, 3), _by_index(make_train_loader(ds, 16, seed=4, device=CPU), 3)
    assert later.keys() == fresh.keys() and all(torch.equal(later[i], fresh[i]) for i in later)


def test_in_memory_sets_go_to_the_gpu_unless_too_big_or_told(monkeypatch):
    from kdbench.data.tensor_dataset import IndexedTensorDataset

    small = IndexedTensorDataset(torch.zeros(4, 3, 2, 2, dtype=torch.uint8), torch.zeros(4, dtype=torch.long))
    monkeypatch.delenv("KDBENCH_DATA_ON_DEVICE", raising=False)
    assert loaders.keep_on_device(small, CUDA, None) and not loaders.keep_on_device(small, CPU, None)
    assert not loaders.keep_on_device(small, CUDA, False)
    monkeypatch.setattr(loaders, "ON_DEVICE_MAX_BYTES", 47)  # the set is 48 bytes
    assert not loaders.keep_on_device(small, CUDA, None) and loaders.keep_on_device(small, CUDA, True)
    monkeypatch.setenv("KDBENCH_DATA_ON_DEVICE", "1")
    assert loaders.keep_on_device(small, CUDA, None)
