"""`data.val_fraction`: a stratified validation split held out of the training split, chosen-on for the best epoch."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from kdbench.core.errors import UserError
from kdbench.data.registry import build_dataset
from kdbench.data.validation import parse_val_fraction, stratified_holdout
from kdbench.execute.api import run
from kdbench.execute.build import teacher_key
from kdbench.execute.resolve import RunOptions, resolve_config
from kdbench.store.record_builder import fit_metrics
from kdbench.train.engine import EpochRecord, FitResult


def test_holdout_takes_the_rounded_fraction_of_every_class_and_partitions_the_split():
    shuffle = torch.randperm(36, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0] * 10 + [1] * 20 + [2] * 5 + [3] * 1)[shuffle]
    train, val = stratified_holdout(targets, 0.3, seed=0)
    per_class = {c: int((targets[val] == c).sum()) for c in range(4)}
    assert per_class == {0: 3, 1: 6, 2: 2, 3: 0}  # floor(0.3·n + 0.5); a one-sample class keeps its sample
    assert set(train).isdisjoint(val) and sorted(train + val) == list(range(36))
    assert stratified_holdout(targets, 0.3, seed=0) == (train, val)  # fixed by the seed
    assert stratified_holdout(targets, 0.3, seed=1)[1] != val
    assert stratified_holdout(targets, 0.0, seed=0) == (list(range(36)), [])


@pytest.mark.parametrize("value", ["1", "1.0", "-0.1", "nan", "x"])
def test_val_fraction_outside_zero_one_is_a_one_line_error(value: str):
    with pytest.raises(UserError, match=r"data.val_fraction"):
        parse_val_fraction(value)
    with pytest.raises(UserError, match=r"data.val_fraction"):
        resolve_config(RunOptions(method="ce", sets=[f"data.val_fraction={value}"]))


def test_digits_train_split_loses_exactly_the_validation_samples_and_reindexes():
    full = build_dataset("digits", augment="crop-pad2")
    held = build_dataset("digits", augment="crop-pad2", val_fraction=0.1)
    assert held.val is not None and full.val is None
    assert len(held.train) + len(held.val) == len(full.train) == 1437
    for c in range(10):  # stratified: each class loses round(10 %) of its samples
        n_c = int((full.train_targets == c).sum())
        assert int((held.train_targets == c).sum()) == n_c - int(0.1 * n_c + 0.5)
    # The index a batch carries is the position in the training split actually used (CRD's memory bank).
    items = [held.train[i] for i in range(len(held.train))]
    assert [i for _, _, i in items] == list(range(len(held.train)))
    assert [y for _, y, _ in items] == held.train_targets.tolist()
    # Validation samples are training images, unaugmented, and never in the reduced training split.
    plain = build_dataset("digits", augment="none")
    train_pos, val_pos = held.train.positions, held.val.positions
    assert set(train_pos).isdisjoint(val_pos)
    x, y, _ = held.val[3]
    assert torch.equal(x, plain.train[val_pos[3]][0]) and y == int(full.train_targets[val_pos[3]])


def test_zero_fraction_keeps_run_ids_and_teachers_ignore_the_fraction():
    base = resolve_config(RunOptions(method="kd", teacher="resnet18", sets=["data.image_size=8"]))
    zero = resolve_config(RunOptions(method="kd", teacher="resnet18", sets=["data.image_size=8",
                                                                             "data.val_fraction=0"]))
    val = resolve_config(RunOptions(method="kd", teacher="resnet18", sets=["data.image_size=8",
                                                                            "data.val_fraction=0.1"]))
    assert zero.run_id == base.run_id and val.run_id != base.run_id
    assert val.data_params["val_fraction"] == 0.1
    # One teacher (trained on the full training split) serves runs with and without a validation split.
    assert teacher_key(val).digest == teacher_key(base).digest


def _epoch(epoch: int, top1: float, val: float | None) -> EpochRecord:
    return EpochRecord(epoch=epoch, lr=0.1, lr_last=0.1, losses={}, train_top1=0.0, top1=top1, top5=top1 + 1,
                       eval_loss=1.0, epoch_s=1.0, eval_s=1.0, val_top1=val, val_top5=None if val is None else val + 1)


def test_best_epoch_is_chosen_on_validation_and_reports_the_test_numbers_there():
    fit = FitResult([_epoch(1, 80.0, 60.0), _epoch(2, 70.0, 75.0), _epoch(3, 90.0, 75.0), _epoch(4, 85.0, 70.0)])
    summary = fit_metrics(fit)
    assert summary["best_epoch"] == 2  # highest val top-1, earliest of the tie; not the test's best (epoch 3)
    assert summary["top1_best"] == 70.0 and summary["top5_best"] == 71.0
    assert summary["best_selected_on"] == "val" and summary["val_top1_best"] == 75.0
    on_test = fit_metrics(FitResult([_epoch(1, 80.0, None), _epoch(2, 90.0, None)]))
    assert on_test["best_epoch"] == 2 and on_test["best_selected_on"] == "test" and "val_top1_best" not in on_test


def test_histories_without_validation_fields_still_load():
    # a history written before the validation split (per-step lr already: `lr_last` is there)
    old = {"epoch": 1, "lr": 0.1, "lr_last": 0.1, "losses": {"ce": 1.0}, "train_top1": 10.0, "top1": 20.0, "top5": 30.0,
           "eval_loss": 2.0, "epoch_s": 1.0, "eval_s": 0.5}
    record = EpochRecord(**old)
    assert record.val_top1 is None and fit_metrics(FitResult([record]))["best_selected_on"] == "test"


def test_a_run_with_a_validation_split_selects_its_best_epoch_on_it(dirs: dict[str, Path]):
    record = run("ce", student="test_resnet", epochs=3, sets=["data.image_size=8", "data.val_fraction=0.1"],
                 results_dir=dirs["results"], zoo_dir=dirs["zoo"])
    metrics = record["metrics"]
    assert metrics["best_selected_on"] == "val"
    assert record["data"]["num_train"] == 1292 and record["data"]["num_val"] == 145
    assert record["transductive"] is False
    lines = (dirs["results"] / "runs" / record["run_id"] / "metrics.jsonl").read_text().splitlines()
    epochs = [json.loads(line) for line in lines]
    chosen = max(epochs, key=lambda e: (e["val_top1"], -e["epoch"]))
    assert metrics["best_epoch"] == chosen["epoch"]
    assert metrics["top1_best"] == chosen["top1"] and metrics["val_top1_best"] == chosen["val_top1"]
    assert dataclasses.asdict(EpochRecord(**epochs[0]))["val_top1"] == epochs[0]["val_top1"]
