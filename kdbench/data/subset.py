"""The student's training split cut to a stratified fraction, for every dataset: `--set data.train_fraction=F`.

Hinton et al. (2015, §4, "soft targets as regularizers") train the student on a small part of the data the
teacher learned from: a setting where the teacher knows more than the student can learn from its own labels, so
distillation has room to help. With `data.train_fraction=F` the student trains on n_c − floor((1 − F) · n_c + 0.5)
samples of each class c of the training split (at least one), drawn once from the dataset's `split_seed` (0 for datasets
without one), so every run of every method trains on the same samples; the rest is never seen by the student
(there is no unlabelled transfer set: every method's losses read the same labelled samples).

Like `data.val_fraction`, `train_fraction` is not a field of the datasets' parameter dataclasses: it is taken out
of the `data` scope (:func:`kdbench.data.validation.split_data_params`) and kept in the run's `data_params` only
when it is below 1, so the ids of full-data runs are unchanged and the teacher zoo keys never hold it (the
teacher trains on the full training split). With a validation split too, the validation samples are held out
first and the fraction is taken of the samples left.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .registry import DataSplits
from .validation import ReindexedSubset, parse_fraction, stratified_holdout

TRAIN_KEY = "train_fraction"


def parse_train_fraction(value: str | float) -> float:
    """`data.train_fraction` as a float in (0, 1], else a one-line UserError."""
    return parse_fraction(TRAIN_KEY, value, (0.0, 1.0, "(0, 1]"),
                          "e.g. 0.1 trains the student on 10 % of each class's training samples")


def train_fraction_of(data_params: dict[str, Any]) -> float:
    """The fraction a run's `data` settings (recorded params or `--set` strings) hold; 1 when absent."""
    return parse_train_fraction(data_params.get(TRAIN_KEY, 1.0))


def with_train_fraction(data_params: dict[str, Any], fraction: float) -> dict[str, Any]:
    """The data parameters plus the fraction, recorded only when below 1 (full-data run ids stay valid)."""
    return {**data_params, TRAIN_KEY: fraction} if fraction < 1.0 else dict(data_params)


def keep_train_fraction(splits: DataSplits, fraction: float, seed: int) -> DataSplits:
    """`splits` with its training split cut to a stratified `fraction` of each class (fixed by `seed`)."""
    if fraction >= 1.0:
        return splits
    # The held-out side of a (1 − F) hold-out is dropped: the same per-class draw as data.val_fraction makes.
    kept, _ = stratified_holdout(splits.train_targets, 1.0 - fraction, seed)
    notes = {**splits.notes, "train_fraction": (
        f"the student trains on a stratified {fraction:g} of each class's training samples (split_seed={seed}): "
        f"{len(kept):,} of {len(splits.train_targets):,}; the teacher saw all of them")}
    return dataclasses.replace(splits, train=ReindexedSubset(splits.train, kept),
                               train_targets=splits.train_targets[kept], notes=notes)
