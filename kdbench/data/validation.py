"""A validation split held out of the training split, for every dataset: `--set data.val_fraction=F`.

Choosing the "best epoch" on the test set (as the DKD tables do) picks the epoch on the very numbers it then
reports. With `data.val_fraction=F` a stratified fraction F of each class's training samples is held out (fixed by
the dataset's `split_seed`, 0 for datasets without one, so every run of every method holds out the same samples),
never trained on, and evaluated each epoch: the best epoch is chosen on it and the test accuracy at that epoch is
reported.

`val_fraction` is not a field of the datasets' parameter dataclasses: it is taken out of the `data` scope here and
kept in the run's `data_params` only when it is not 0, so the ids of runs without a validation split (and the
teacher zoo keys, which never hold it: teachers train on the full training split) are unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch.utils.data import Dataset

from kdbench.core.errors import UserError
from kdbench.data.augment import SampleKey
from kdbench.data.splits import SUBSET_SEED_KEY, TRAIN_KEY, DataSplits

VAL_KEY = "val_fraction"


def parse_fraction(key: str, value: str | float, allowed: tuple[float, float, str], meaning: str,
                   scope: str = "data") -> float:
    """`SCOPE.KEY` as a finite float inside `allowed` = (low, high, interval as written, e.g. "[0, 1)"), else a
    one-line UserError naming the range and what the fraction means."""
    low, high, interval = allowed
    try:
        fraction = float(value)
    except ValueError:
        raise UserError(f"{scope}.{key}: expected float, got '{value}'") from None
    inside = (low <= fraction if interval[0] == "[" else low < fraction) and \
        (fraction <= high if interval[-1] == "]" else fraction < high)
    if not (math.isfinite(fraction) and inside):
        raise UserError(f"{scope}.{key}={value} is out of range; allowed: {interval} ({meaning})")
    return fraction


def parse_val_fraction(value: str | float) -> float:
    """`data.val_fraction` as a float in [0, 1), else a one-line UserError."""
    return parse_fraction(VAL_KEY, value, (0.0, 1.0, "[0, 1)"),
                          "e.g. 0.1 holds out 10 % of each class's training samples")


def split_data_params(data_params: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """`data` settings as (the dataset's own, the validation fraction; 0 when absent; the student-only
    `train_fraction` and its `subset_seed` left out of both): a run's recorded
    `data_params`, or the `data` scope's `--set` strings."""
    rest = dict(data_params)
    rest.pop(TRAIN_KEY, None)  # the student's training fraction, read by kdbench.data.subset.train_fraction_of
    rest.pop(SUBSET_SEED_KEY, None)  # which draw that fraction is: kdbench.data.subset.subset_seed_of
    return rest, parse_val_fraction(rest.pop(VAL_KEY, 0.0))


def with_val_fraction(data_params: dict[str, Any], fraction: float) -> dict[str, Any]:
    """The dataset's parameters plus the fraction, recorded only when not 0 (old run ids stay valid)."""
    return {**data_params, VAL_KEY: fraction} if fraction > 0 else dict(data_params)


def stratified_holdout(targets: torch.Tensor, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train positions, validation positions) of a split whose `targets` are given: from each class c with n_c
    samples, floor(fraction · n_c + 0.5) drawn at random (at most n_c − 1: every class keeps a training
    sample) go to validation. Both lists are sorted; the draw depends on (seed, class) only."""
    val: list[int] = []
    for c in torch.unique(targets).tolist():
        members = torch.nonzero(targets == c).flatten()
        n_val = min(len(members) - 1, math.floor(fraction * len(members) + 0.5))
        g = torch.Generator().manual_seed(seed * 1_000_003 + int(c))
        val += members[torch.randperm(len(members), generator=g)[:n_val]].tolist()
    val_set = set(val)
    return [i for i in range(len(targets)) if i not in val_set], sorted(val)


class ReindexedSubset(Dataset):
    """The samples of `base` at `positions`, yielding (x, y, i) with i the position in this subset: the index a
    method's memory bank (CRD) addresses must count the samples actually trained on."""

    def __init__(self, base: Dataset, positions: list[int]) -> None:
        self.base = base
        self.positions = positions

    def __len__(self) -> int:
        return len(self.positions)

    def keyed_item(self, index: int, key: SampleKey | None) -> tuple[torch.Tensor, int, int]:
        """The sample with the augmentation of `key`, whose index is this subset's position (the loader's)."""
        base = self.base
        x, y, _ = base.keyed_item(self.positions[index], key) if hasattr(base, "keyed_item") \
            else base[self.positions[index]]
        return x, y, index

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        return self.keyed_item(index, None)


def hold_out_validation(train_view: DataSplits, eval_view: DataSplits, fraction: float, seed: int) -> DataSplits:
    """`train_view` (built with the recipe's augmentation) with a validation split carved out of its training
    split; the validation samples are read from `eval_view`, the same dataset built without augmentation."""
    train_pos, val_pos = stratified_holdout(train_view.train_targets, fraction, seed)
    notes = {**train_view.notes, "validation": (
        f"stratified {fraction:g} of each class's training samples held out (split_seed={seed}): "
        f"{len(train_pos):,} train / {len(val_pos):,} val; best epoch chosen on val")}
    return dataclasses.replace(
        train_view,
        train=ReindexedSubset(train_view.train, train_pos),
        val=ReindexedSubset(eval_view.train, val_pos),
        train_targets=train_view.train_targets[train_pos],
        notes=notes,
    )
