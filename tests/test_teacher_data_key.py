"""What a zoo teacher trains on is in its key and its card (issue #27).

A run with `data.train_fraction` on an empty zoo once trained its teacher on the student's subset and stored it
under the full-data key, where every later run found it. Now the teacher always trains on what its key says: the
full training split, or with `teacher_data.train_fraction=F` (the information-matched control) the very samples a
student's `data.train_fraction=F` draws. Entries written under the old key are never loaded again.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

import kdbench
from kdbench.cli.app import _register_commands, app
from kdbench.core.errors import UserError
from kdbench.execute.build import load_data, load_teacher_data, teacher_key
from kdbench.execute.resolve import RunOptions, resolve_config, resolve_teacher
from kdbench.report.leaderboard import build
from kdbench.spec.config import content_hash
from kdbench.teachers.import_weights import imported_key
from kdbench.teachers.zoo import CARD, TeacherZoo, training_data
from kdbench.train.engine import EngineSettings

TINY = {"teacher": "test_resnet", "student": "test_resnet", "epochs": 1, "teacher_epochs": 1, "device": "cpu",
        "infer_batch_size": 8}
IMAGE = "data.image_size=8"
TENTH = "data.train_fraction=0.1"
CONTROL = "teacher_data.train_fraction=0.1"
N_TRAIN, N_TENTH = 1437, 142  # digits' training split; its stratified 10 %


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Through `kdbench.run`, in this order on an EMPTY zoo: kd on 10 % of the labels (the run that poisoned the
    zoo), the control (teacher on the same 10 %), kd on all labels, and the student alone on 10 %."""
    root = tmp_path_factory.mktemp("teacher-data")
    where = {"results_dir": root / "results", "zoo_dir": root / "zoo"}
    out: dict[str, Any] = {"root": root, **where}
    out["tenth"] = kdbench.run("kd", sets=[IMAGE, TENTH], **TINY, **where)
    out["control"] = kdbench.run("kd", sets=[IMAGE, TENTH, CONTROL], **TINY, **where)
    out["full"] = kdbench.run("kd", sets=[IMAGE], **TINY, **where)
    out["ce"] = kdbench.run("ce", student="test_resnet", epochs=1, device="cpu", infer_batch_size=8,
                            sets=[IMAGE, TENTH], **where)
    return out


def test_a_run_with_a_train_fraction_on_an_empty_zoo_trains_its_teacher_on_the_full_split(runs, tmp_path):
    tenth, full = runs["tenth"], runs["full"]
    assert tenth["data"]["num_train"] == N_TENTH  # the student's 10 %
    assert tenth["teacher_metrics"]["train_data"] == {"train_fraction": 1.0, "num_train": N_TRAIN}
    assert tenth["teacher_metrics"]["cached"] is False
    # The full-data run finds that very teacher, and it is the one a teacher trained alone on all labels is.
    assert full["teacher_metrics"]["cached"] is True
    assert full["teacher_metrics"]["sha256"] == tenth["teacher_metrics"]["sha256"]
    _, alone = kdbench.create_teacher("test_resnet", "digits", epochs=1, sets=[IMAGE], zoo_dir=tmp_path / "zoo",
                                      device="cpu")
    assert alone["cached"] is False and alone["sha256"] == tenth["teacher_metrics"]["sha256"]
    assert alone["train_data"] == {"train_fraction": 1.0, "num_train": N_TRAIN}


def test_the_control_teacher_trains_on_the_samples_the_student_trains_on(runs):
    control, tenth = runs["control"], runs["tenth"]
    assert control["config"]["teacher_data"] == {"train_fraction": 0.1}
    assert "teacher_data" not in tenth["config"]  # a full-data teacher's config is what it was
    assert control["run_id"] != tenth["run_id"]
    assert control["teacher_metrics"]["train_data"] == {"train_fraction": 0.1, "num_train": N_TENTH}
    assert control["teacher_metrics"]["cached"] is False
    assert control["teacher_metrics"]["path"] != tenth["teacher_metrics"]["path"]
    cards = {c["path"]: c for c in TeacherZoo(runs["zoo_dir"]).cards()}
    assert cards[control["teacher_metrics"]["path"]]["train_data"]["num_train"] == N_TENTH
    assert cards[control["teacher_metrics"]["path"]]["key"]["train_data"] == {"train_fraction": 0.1}
    # "Equal labels" literally: the same samples, also when a validation split is held out first.
    for extra in ([], ["data.val_fraction=0.2"]):
        config = resolve_config(RunOptions("kd", teacher="test_resnet", sets=[IMAGE, TENTH, CONTROL, *extra]))
        student, teacher = load_data(config, None), training_data(teacher_key(config))
        assert teacher.train.positions == student.train.positions and teacher.val is None
        assert teacher.train_targets.tolist() == student.train_targets.tolist()
        assert load_teacher_data(config, None).train.positions == student.train.positions
    # The sweep's teacher job and `kdbench teachers train` reach the same key.
    assert resolve_teacher("test_resnet", "digits", epochs=1, sets=[IMAGE, TENTH, CONTROL]).digest == \
        teacher_key(resolve_config(RunOptions("kd", teacher="test_resnet", teacher_epochs=1,
                                              sets=[IMAGE, TENTH, CONTROL]))).digest


def test_the_zoo_refuses_to_train_a_teacher_on_a_students_split(tmp_path):
    config = resolve_config(RunOptions("kd", teacher="test_resnet", teacher_epochs=1, sets=[IMAGE, TENTH]))
    zoo = TeacherZoo(tmp_path / "zoo")
    with pytest.raises(RuntimeError, match="not the teacher's"):
        zoo.get_or_train(teacher_key(config), load_data(config, None), EngineSettings(torch.device("cpu")))
    assert zoo.cards() == []  # nothing stored under the full-data key


def test_the_leaderboard_shows_the_control_in_a_column_of_its_own(runs):
    # The 10 %-label runs: the normal one, the control and the student alone.
    board = build(runs["results_dir"], "methods", where=f"run_id!={runs['full']['run_id']}")
    columns = [str(c) for c in board.table.columns]
    control = [c for c in columns if "teacher_data.train_fraction=0.1" in c]
    normal = [c for c in columns if "teacher_data.train_fraction=1" in c]
    assert len(columns) == 2 and len(control) == 1 and len(normal) == 1, columns
    # The student alone on the same 10 % is the baseline of both columns.
    ce = board.table.loc[[i for i in board.table.index if str(i).startswith("ce")][0]]
    assert ce[control[0]] == ce[normal[0]] != ""
    # Alone in a table, the control column still says whose teacher it is.
    alone = build(runs["results_dir"], "methods", where=f"run_id={runs['control']['run_id']}|{runs['ce']['run_id']}")
    assert [str(c) for c in alone.table.columns] == [control[0].split(" [")[0] + " [teacher_data.train_fraction=0.1]"]


def test_zoo_entries_written_before_the_data_was_in_the_key_are_never_loaded(tmp_path):
    zoo_dir = tmp_path / "zoo"
    _, first = kdbench.create_teacher("test_resnet", "digits", epochs=1, sets=[IMAGE], zoo_dir=zoo_dir,
                                      device="cpu")
    # Make it an entry of the old zoo: the key without its training data, the card without train_data.
    key = resolve_teacher("test_resnet", "digits", epochs=1, sets=[IMAGE])
    old_dict = {k: v for k, v in key.to_dict().items() if k != "train_data"}
    old_dir = zoo_dir / key.relpath.parent / f"{key.recipe.name}-s{key.seed}-{content_hash(old_dict, length=10)}"
    shutil.move(first["path"], old_dir)
    card = json.loads((old_dir / CARD).read_text())
    card.pop("train_data")
    card["key"] = old_dict
    card["path"] = str(old_dir)
    (old_dir / CARD).write_text(json.dumps(card))

    _, again = kdbench.create_teacher("test_resnet", "digits", epochs=1, sets=[IMAGE], zoo_dir=zoo_dir,
                                      device="cpu")
    assert again["cached"] is False and again["path"] != str(old_dir)  # trained anew, not the old entry
    _register_commands()
    listed = CliRunner().invoke(app, ["teachers", "list", "--zoo-dir", str(zoo_dir)], terminal_width=200)
    assert listed.exit_code == 0, listed.output
    assert "all 1,437" in listed.output and "unknown (old key: unused)" in listed.output
    assert "1 of them were written before" in listed.output


def test_imported_teachers_keep_their_key_and_take_no_training_data():
    key = imported_key("test_resnet", "digits", sets=[IMAGE])
    assert "train_data" not in key.to_dict() and key.train_data is None  # entries imported before stay found
    with pytest.raises(UserError, match="imported teacher was trained elsewhere"):
        resolve_config(RunOptions("kd", teacher="test_resnet", sets=[CONTROL, "teacher_recipe.name=imported"]))


@pytest.mark.parametrize(("sets", "message"), [
    (["teacher_data.train_fraction=0"], r"teacher_data.train_fraction=0 is out of range; allowed: \(0, 1\]"),
    (["teacher_data.train_fraction=1.5"], r"teacher_data.train_fraction=1.5 is out of range"),
    (["teacher_data.fraction=0.1"], r"unknown option 'teacher_data.fraction'. Valid: teacher_data.train_fraction"),
])
def test_teacher_data_mistakes_are_one_line_errors(sets: list[str], message: str):
    with pytest.raises(UserError, match=message):
        resolve_config(RunOptions("kd", teacher="test_resnet", sets=sets))


def test_teacher_data_is_refused_for_a_teacher_trained_already(tmp_path):
    weights = tmp_path / "t.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(weights))
    with pytest.raises(UserError, match="teacher_data.train_fraction chooses what a zoo teacher trains on"):
        resolve_config(RunOptions("kd", teacher="test_resnet", teacher_ckpt=weights, sets=[CONTROL]))
    # A method without a teacher ignores it (as it ignores teacher_recipe): the control's `ce` is the plain one.
    assert resolve_config(RunOptions("ce", sets=[TENTH, CONTROL])).run_id == \
        resolve_config(RunOptions("ce", sets=[TENTH])).run_id
    _register_commands()
    res = CliRunner().invoke(app, ["run", "--method", "kd", "--teacher", "test_resnet", "--set",
                                   "teacher_data.train_fraction=2", "--dry-run"])
    assert isinstance(res.exception, UserError) and "allowed: (0, 1]" in str(res.exception)


def test_a_run_config_round_trips_its_teacher_data():
    config = resolve_config(RunOptions("kd", teacher="test_resnet", sets=[TENTH, CONTROL]))
    again = type(config).from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.run_id == config.run_id
    assert dataclasses.replace(config, teacher_data={}).run_id == \
        resolve_config(RunOptions("kd", teacher="test_resnet", sets=[TENTH])).run_id
