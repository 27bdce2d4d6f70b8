"""The training order: a fresh permutation per epoch from (seed, epoch) alone, so a resumed run sees the batches
(and the global-RNG draws, e.g. dropout) of an uninterrupted one; full training batches only, on both loader
paths (in-memory batches and DataLoader)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from kdbench.data.loaders import (
    EpochShuffleSampler,
    FixedOrderSampler,
    InMemoryBatches,
    make_eval_loader,
    make_train_loader,
    train_batch_count,
)
from kdbench.data.tensor_dataset import IndexedTensorDataset
from kdbench.spec.recipe import Recipe
from kdbench.train.engine import Engine, EngineSettings, FitCallbacks, epoch_seed
from kdbench.train.method import Batch, Distiller, MethodContext

CPU = torch.device("cpu")


def _order(seed: int, epoch: int, n: int = 50) -> list[int]:
    sampler = EpochShuffleSampler(n, seed)
    sampler.set_epoch(epoch)
    return list(sampler)


def test_each_epoch_is_a_permutation_and_epochs_differ():
    orders = [_order(0, e) for e in range(1, 6)]
    assert all(sorted(o) == list(range(50)) for o in orders)
    assert len({tuple(o) for o in orders}) == 5
    assert len(EpochShuffleSampler(50, 0)) == 50


def test_the_same_seed_and_epoch_give_the_same_order_in_a_new_sampler():
    sampler = EpochShuffleSampler(50, 3)
    for epoch in (1, 2, 7):
        sampler.set_epoch(epoch)
        assert list(sampler) == _order(3, epoch)
        assert list(sampler) == _order(3, epoch)  # iterating twice does not advance anything


def test_the_orders_are_pinned():
    # Regression pin: the order of (seed, epoch) is part of every published number. A change of the seeding
    # formula — or of torch's randperm — fails here first, instead of silently moving the results.
    assert _order(3, 2, 10) == [0, 7, 1, 6, 3, 8, 9, 4, 2, 5]
    assert list(FixedOrderSampler(10, 3)) == [6, 0, 3, 7, 8, 5, 1, 9, 2, 4]


def test_different_seeds_give_different_orders():
    assert len({tuple(_order(seed, 1)) for seed in range(4)}) == 4


def test_the_evaluation_order_is_fixed_by_its_seed():
    a, b = FixedOrderSampler(30, 0), FixedOrderSampler(30, 0)
    assert list(a) == list(a) == list(b) and sorted(a) == list(range(30)) and len(a) == 30
    assert list(FixedOrderSampler(30, 1)) != list(a)


def test_train_batches_are_full_batches_of_the_samplers_order_and_the_ragged_last_one_is_dropped():
    n = 23
    ds = TensorDataset(torch.zeros(n, 1), torch.zeros(n, dtype=torch.long), torch.arange(n))
    loader = make_train_loader(ds, batch_size=5, seed=2, device=CPU)
    assert len(loader) == train_batch_count(n, 5) == 4
    for epoch in (4, 5):
        loader.sampler.set_epoch(epoch)
        batches = [index.tolist() for _, _, index in loader]
        order = _order(2, epoch, n)
        assert batches == [order[i : i + 5] for i in range(0, 20, 5)]  # 23 = 4·5 + 3: the last 3 are dropped
    assert len(make_train_loader(TensorDataset(torch.arange(21)), batch_size=5, seed=2, device=CPU)) == 4
    assert [len(b[0]) for b in make_train_loader(TensorDataset(torch.arange(20)), batch_size=5, seed=2,
                                                 device=CPU)] == [5, 5, 5, 5]
    ev = make_eval_loader(ds, batch_size=8, order_seed=5, device=CPU)  # evaluation keeps every sample
    assert [i for _, _, index in ev for i in index.tolist()] == list(FixedOrderSampler(n, 5))


def _in_memory(n: int) -> IndexedTensorDataset:
    return IndexedTensorDataset(torch.zeros(n, 1, 2, 2), torch.zeros(n, dtype=torch.long))


@pytest.mark.parametrize("in_memory", [False, True])
def test_training_batches_are_full_and_a_last_incomplete_one_is_dropped(in_memory: bool):
    def loader(n: int, batch_size: int):
        ds = _in_memory(n) if in_memory else TensorDataset(torch.zeros(n, 1), torch.zeros(n, dtype=torch.long),
                                                           torch.arange(n))
        return make_train_loader(ds, batch_size=batch_size, seed=2, device=CPU)

    train = loader(23, 5)
    assert isinstance(train, InMemoryBatches) == in_memory
    train.sampler.set_epoch(4)
    batches = [index.tolist() for _, _, index in train]
    order = _order(2, 4, 23)
    assert batches == [order[i : i + 5] for i in range(0, 20, 5)] and len(train) == 4  # 23 = 4·5 + 3: 3 dropped
    small = loader(3, 5)  # a split smaller than one batch: one batch of all of it
    assert [sorted(index.tolist()) for _, _, index in small] == [[0, 1, 2]] and len(small) == 1


def test_evaluation_batches_keep_every_sample_in_the_fixed_order():
    n = 21
    for ds in (TensorDataset(torch.zeros(n, 1), torch.zeros(n, dtype=torch.long), torch.arange(n)), _in_memory(n)):
        ev = make_eval_loader(ds, batch_size=8, order_seed=5, device=CPU)
        assert [len(index) for _, _, index in ev] == [8, 8, 5] and len(ev) == 3
        assert [i for _, _, index in ev for i in index.tolist()] == list(FixedOrderSampler(n, 5))


def test_a_split_smaller_than_one_batch_is_one_batch_of_all_of_it():
    small = make_train_loader(TensorDataset(torch.arange(7)), batch_size=8, seed=2, device=CPU)
    assert [sorted(b[0].tolist()) for b in small] == [list(range(7))] and train_batch_count(7, 8) == 1


def test_epoch_seeds_differ_between_epochs_and_seeds():
    seeds = {epoch_seed(s, e) for s in range(3) for e in range(1, 4)}
    assert len(seeds) == 9 and all(0 <= x < 2**31 for x in seeds)


class RecordBatches(Distiller):
    """A real (if tiny) method: a linear student trained with CE, which records each batch's sample indices and
    one draw from the global RNG per batch (what random augmentation would draw)."""

    needs_teacher = False

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(nn.Linear(4, 3), None, None, ctx)
        self.seen: list[tuple[int, list[int], float]] = []
        self.epoch = 0

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch

    def forward_train(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self.seen.append((self.epoch, batch.index.tolist(), torch.rand(()).item()))
        logits = self.student(batch.images)
        return logits, {"ce": F.cross_entropy(logits, batch.labels)}


class StopAfter(Exception):
    pass


def _fit(tmp: Path, stop_after: int | None = None) -> RecordBatches:
    tmp.mkdir(exist_ok=True)
    n = 26
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.randn(n, 4, generator=g), torch.arange(n) % 3, torch.arange(n))
    ctx = MethodContext(num_classes=3, in_chans=1, image_size=2, num_train=n, train_targets=torch.arange(n) % 3,
                        epochs=4, seed=7)
    model = RecordBatches(ctx)
    recipe = Recipe(name="t", epochs=4, batch_size=8, lr=0.1)

    def stop(result) -> None:
        if stop_after is not None and len(result.history) == stop_after:
            raise StopAfter

    train = make_train_loader(ds, batch_size=8, seed=7, device=CPU)
    evaluation = make_eval_loader(ds, batch_size=8, order_seed=0, device=CPU)
    with contextlib.suppress(StopAfter):  # the interruption: the checkpoint of the last finished epoch stays
        Engine(EngineSettings(CPU)).fit(model, train, evaluation, recipe, seed=7, checkpoint_path=tmp / "ckpt.pt",
                                        callbacks=FitCallbacks(on_epoch_end=stop))
    return model


def test_a_resumed_run_sees_the_batches_and_draws_of_the_uninterrupted_run(tmp_path: Path):
    whole = _fit(tmp_path / "whole")
    by_epoch = {e: [(i, r) for ep, i, r in whole.seen if ep == e] for e in range(1, 5)}
    assert [len(b) for b in by_epoch.values()] == [3, 3, 3, 3]  # 26 = 3·8 + 2: the ragged 2 are dropped
    assert len({tuple(tuple(i) for i, _ in b) for b in by_epoch.values()}) == 4  # a new order every epoch
    assert len({tuple(r for _, r in b) for b in by_epoch.values()}) == 4  # and new random draws
    # Same seed, fresh objects: epoch e's batches are the sampler's (seed, e) order.
    assert [i for i, _ in by_epoch[3]] == [o[j : j + 8] for o in [_order(7, 3, 26)] for j in range(0, 24, 8)]

    first = _fit(tmp_path / "cut", stop_after=2)
    resumed = _fit(tmp_path / "cut")
    assert [ep for ep, _, _ in first.seen] == [1] * 3 + [2] * 3
    assert [ep for ep, _, _ in resumed.seen] == [3] * 3 + [4] * 3
    assert first.seen + resumed.seen == whole.seen
