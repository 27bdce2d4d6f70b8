"""`data.train_fraction`: the student trains on a stratified fraction of the training split; the teacher on all."""

from __future__ import annotations

import pytest

from kdbench.core.errors import UserError
from kdbench.data.subset import parse_train_fraction
from kdbench.execute.build import load_data, teacher_key
from kdbench.execute.resolve import RunOptions, resolve_config


@pytest.mark.parametrize("value", ["0", "1.5", "-0.1", "nan", "x"])
def test_train_fraction_outside_zero_one_is_a_one_line_error(value: str) -> None:
    with pytest.raises(UserError, match=r"data.train_fraction"):
        parse_train_fraction(value)
    with pytest.raises(UserError, match=r"data.train_fraction"):
        resolve_config(RunOptions(method="ce", sets=[f"data.train_fraction={value}"]))


def test_full_fraction_keeps_run_ids_and_teachers_ignore_the_fraction() -> None:
    def config(*sets: str):
        return resolve_config(RunOptions(method="kd", teacher="resnet18", sets=["data.image_size=8", *sets]))

    base, full, tenth = config(), config("data.train_fraction=1"), config("data.train_fraction=0.1")
    assert full.run_id == base.run_id and tenth.run_id != base.run_id
    assert tenth.data_params["train_fraction"] == 0.1 and "train_fraction" not in base.data_params
    assert teacher_key(tenth).digest == teacher_key(base).digest  # the teacher trains on the full split


def test_student_sees_the_stratified_fraction_and_the_teacher_the_full_split() -> None:
    config = resolve_config(RunOptions(method="kd", teacher="resnet18",
                                       sets=["data.image_size=8", "data.train_fraction=0.1"]))
    student, teacher = load_data(config, None), load_data(config, None, validation=False)
    assert len(teacher.train) == 1437 and len(student.test) == len(teacher.test) == 360
    for c in range(10):
        n_c = int((teacher.train_targets == c).sum())
        assert int((student.train_targets == c).sum()) == n_c - int(0.9 * n_c + 0.5)
    # Indices count the kept samples (CRD's memory bank), labels match, and the draw is fixed by split_seed.
    items = [student.train[i] for i in range(len(student.train))]
    assert [i for _, _, i in items] == list(range(len(student.train)))
    assert [y for _, y, _ in items] == student.train_targets.tolist()
    assert load_data(config, None).train.positions == student.train.positions
    # With a validation split the fraction is taken of what is left after it.
    both = resolve_config(RunOptions(method="ce", sets=["data.image_size=8", "data.val_fraction=0.5",
                                                        "data.train_fraction=0.5"]))
    data = load_data(both, None)
    assert data.val is not None and len(data.train) + len(data.val) < 1437 and len(data.train) < len(data.val)
