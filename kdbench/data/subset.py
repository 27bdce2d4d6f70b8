"""The student's training split cut to a stratified fraction, for every dataset: `--set data.train_fraction=F`.

Hinton et al. (2015, §4, "soft targets as regularizers") train the student on a small part of the data the
teacher learned from: a setting where the teacher knows more than the student can learn from its own labels, so
distillation has room to help. With `data.train_fraction=F` the student trains on n_c − floor((1 − F) · n_c + 0.5)
samples of each class c of the training split (at least one), drawn once from the dataset's `split_seed` (0 for datasets
without one), so every run of every method trains on the same samples; the rest is never seen by the student
(there is no unlabelled transfer set: every method's losses read the same labelled samples).

Like `data.val_fraction`, `train_fraction` is not a field of the datasets' parameter dataclasses: it is taken out
of the `data` scope (:func:`kdbench.data.validation.split_data_params`) and kept in the run's `data_params` only
when it is below 1, so the ids of full-data runs are unchanged. With a validation split too, the validation samples
are held out first and the fraction is taken of the samples left.

`--set data.subset_seed=K` draws the fraction with seed K in place of `split_seed`: another subset of the same
training split, the test set unchanged (`split_seed` moves both), so a sweep can sample subset draws (issue #38.4:
`--grid data.subset_seed=0,1,2`). It is kept in `data_params` only when it differs from `split_seed` (the same
draw otherwise: the same run, the same id as before the setting existed), and it needs a fraction below 1 (there is
nothing to draw otherwise).

The teacher trains on the full training split whatever the student's fraction. The information-matched control
asks for a teacher that saw no more labels than the student: `--set teacher_data.train_fraction=F` (its own scope,
beside `teacher_recipe`) trains the zoo teacher on the very samples `data.train_fraction=F` gives a student (the
same draw: same fraction, same `split_seed`, the same validation samples held out first). The teacher's training
data is part of its zoo key and card (kdbench.teachers.zoo.TeacherKey.train_data).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kdbench.core.errors import UserError
from kdbench.data.splits import SUBSET_SEED_KEY, TRAIN_KEY, DataSplits
from kdbench.data.validation import ReindexedSubset, parse_fraction, stratified_holdout

# The `--set` scope of the teacher's training data (the control of the limited-data setting); its one key.
TEACHER_SCOPE = "teacher_data"
TEACHER_KEYS = (TRAIN_KEY,)


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


def subset_seed_of(data_params: dict[str, Any], split_seed: int) -> int:
    """The seed of the student's `train_fraction` draw: `data.subset_seed` where a run sets it, else the dataset's
    `split_seed` (what every run drew with before the setting existed)."""
    value = data_params.get(SUBSET_SEED_KEY)
    return split_seed if value is None else parse_subset_seed(value)


def parse_subset_seed(value: str | int) -> int:
    """`data.subset_seed` as an int ≥ 0, else a one-line UserError."""
    try:
        seed = int(str(value).strip())
    except ValueError:
        seed = -1
    if seed < 0:
        raise UserError(f"data.{SUBSET_SEED_KEY}={value}: expected an integer ≥ 0 (the seed of the "
                        "data.train_fraction draw; e.g. data.subset_seed=1)")
    return seed


def with_subset_seed(data_params: dict[str, Any], scoped: dict[str, str], fraction: float) -> dict[str, Any]:
    """The data parameters plus `subset_seed` where the `data` scope's `--set` strings give it away from the
    dataset's `split_seed` (absent otherwise: earlier run ids stay valid, and `subset_seed` equal to `split_seed`,
    the same draw, is the same run). Without a fraction below 1 there is no draw for it to move: refused."""
    if SUBSET_SEED_KEY not in scoped:
        return dict(data_params)
    seed = parse_subset_seed(scoped[SUBSET_SEED_KEY])
    if fraction >= 1.0:
        raise UserError(f"data.{SUBSET_SEED_KEY} chooses which data.{TRAIN_KEY} subset a student trains on: set "
                        f"data.{TRAIN_KEY} below 1 too (e.g. data.{TRAIN_KEY}=0.1), or leave it out")
    if seed == int(data_params.get("split_seed", 0)):
        return dict(data_params)
    return {**data_params, SUBSET_SEED_KEY: seed}


def teacher_data_params(scoped: dict[str, str]) -> dict[str, Any]:
    """The `teacher_data` scope's `--set` strings as a run's `teacher_data` ({"train_fraction": F} when F < 1,
    else {}: a full-data teacher's run id is what it was). An unknown key lists the valid one."""
    unknown = sorted(set(scoped) - set(TEACHER_KEYS))
    if unknown:
        valid = ", ".join(f"{TEACHER_SCOPE}.{k}" for k in TEACHER_KEYS)
        raise UserError(f"unknown option '{TEACHER_SCOPE}.{unknown[0]}'. Valid: {valid}")
    fraction = parse_fraction(TRAIN_KEY, scoped.get(TRAIN_KEY, 1.0), (0.0, 1.0, "(0, 1]"),
                              "e.g. 0.1 trains the teacher on the 10 % of each class that data.train_fraction=0.1 "
                              "gives the student", scope=TEACHER_SCOPE)
    return {TRAIN_KEY: fraction} if fraction < 1.0 else {}


def keep_train_fraction(splits: DataSplits, fraction: float, seed: int) -> DataSplits:
    """`splits` with its training split cut to a stratified `fraction` of each class (fixed by `seed`): the
    student's `data.train_fraction`, or the teacher's `teacher_data.train_fraction` (the same draw)."""
    if fraction >= 1.0:
        return splits
    # The held-out side of a (1 − F) hold-out is dropped: the same per-class draw as data.val_fraction makes.
    kept, _ = stratified_holdout(splits.train_targets, 1.0 - fraction, seed)
    # Whose training split this is, and what the teacher saw, the record states elsewhere (teacher_metrics).
    notes = {**splits.notes, "train_fraction": (
        f"trains on a stratified {fraction:g} of each class's training samples (split_seed={seed}): "
        f"{len(kept):,} of {len(splits.train_targets):,}")}
    return dataclasses.replace(splits, train=ReindexedSubset(splits.train, kept),
                               train_targets=splits.train_targets[kept], notes=notes)
