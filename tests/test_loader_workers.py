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
