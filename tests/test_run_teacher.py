"""A finished run's student as the next teacher: `--teacher run:RUN_ID`, or `--teacher-ckpt` of its export (the
card beside it gives the architecture); recorded as such: `run:ID` by the teacher run's id (so a chain of runs is
known before it trains), a file by its sha256."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from kdbench.cli.app import main
from kdbench.core.errors import UserError
from kdbench.core.safe_load import load_plain_checkpoint
from kdbench.core.storage import atomic_write_json
from kdbench.execute.api import run
from kdbench.models import create_model
from kdbench.models.state_dicts import unwrap_state_dict
from kdbench.store.records import RunStore

GNN = {"student": "gnn2", "sets": ["data.image_size=8", "student.hidden=16"], "device": "cpu"}


@pytest.fixture(scope="module")
def first(tmp_path_factory) -> tuple[Path, dict]:
    """A tiny completed kd run (random resnet18 teacher file → gnn2 student), checkpoint kept."""
    tmp = tmp_path_factory.mktemp("first")
    teacher = create_model("resnet18", num_classes=10, in_chans=3, image_size=8)
    path = tmp / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, str(path))
    record = run("kd", teacher="resnet18", teacher_ckpt=str(path), epochs=2, results_dir=tmp / "results",
                 keep_checkpoint=True, **GNN)
    assert record["status"] == "completed"
    return tmp / "results", record


def test_a_finished_kd_runs_student_is_the_teacher_of_the_next_run(first):
    results, record = first
    run_dir = RunStore(results).run_dir(record["run_id"])
    assert (run_dir / "student.safetensors").is_file() and (run_dir / "student_best.safetensors").is_file()
    card = json.loads((run_dir / "student.json").read_text())

    second = run("kd", teacher=f"run:{record['run_id']}", epochs=1, results_dir=results, **GNN)
    assert second["status"] == "completed"
    assert second["teacher"] == "gnn2" and second["config"]["teacher_recipe"] is None
    teacher = second["teacher_metrics"]
    assert teacher["source"] == f"run:{record['run_id']}"
    # the teacher run's id stands for its student in the run id (as a zoo key does), its export's sha256 is recorded
    assert second["config"]["teacher_run"] == record["run_id"] and second["config"]["teacher_ckpt_sha256"] is None
    assert teacher["sha256"] == card["exports"]["last"]["sha256"]
    # the teacher is the first run's student as it ended: it scores what that run measured
    assert teacher["top1"] == pytest.approx(record["metrics"]["top1_last"])

    # the same export named by path: the card gives the architecture; a file teacher is identified by its sha256
    same = run("kd", teacher_ckpt=str(run_dir / "student.safetensors"), epochs=1, results_dir=results, **GNN)
    assert same["teacher"] == "gnn2" and same["config"]["teacher_ckpt_sha256"] == teacher["sha256"]
    assert same["run_id"] != second["run_id"]


def test_a_runs_checkpoint_gives_its_student_as_a_plain_state_dict(first):
    results, record = first
    run_dir = RunStore(results).run_dir(record["run_id"])
    state = unwrap_state_dict(load_plain_checkpoint(run_dir / "checkpoint.pt"), "checkpoint.pt")
    exported = load_file(str(run_dir / "student.safetensors"))
    assert sorted(state) == sorted(exported)  # the distiller's own modules are dropped, "student." stripped
    assert all(torch.equal(state[k], exported[k]) for k in exported)


def test_an_export_under_another_teacher_name_or_changed_is_refused(first, tmp_path):
    results, record = first
    export = RunStore(results).run_dir(record["run_id"]) / "student.safetensors"
    with pytest.raises(UserError, match="holds a gnn2"):
        run("kd", teacher="resnet18", teacher_ckpt=str(export), epochs=1, results_dir=tmp_path, **GNN)
    with pytest.raises(UserError, match="name two teachers"):
        run("kd", teacher=f"run:{record['run_id']}", teacher_ckpt=str(export), epochs=1, results_dir=results, **GNN)
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "student.json").write_text((export.parent / "student.json").read_text())
    weights = load_file(str(export))
    weights = {k: v + 1 if v.is_floating_point() else v for k, v in weights.items()}
    save_file(weights, str(copy / "student.safetensors"))
    with pytest.raises(UserError, match="its sha256 differs"):
        run("kd", teacher_ckpt=str(copy / "student.safetensors"), epochs=1, results_dir=tmp_path, **GNN)


def test_a_missing_or_unfinished_run_as_teacher_is_one_line_exit_2(first, tmp_path, monkeypatch, capsys):
    results, record = first
    store = RunStore(tmp_path / "results")
    failed = {**record, "status": "failed"}
    atomic_write_json(store.result_path(record["run_id"]), failed)
    base = ["kdbench", "run", "--method", "kd", "--student", "gnn2", "--epochs", "1", "--results-dir", str(store.root)]
    for teacher, message in ((f"run:{record['run_id']}", f"run {record['run_id']} is failed, not completed"),
                             ("run:0123456789abcdef", "no run '0123456789abcdef'")):
        # The CLI's entry point in process (`python -m kdbench` is main(); a subprocess spent ~5 s importing).
        monkeypatch.setattr(sys, "argv", [*base, "--teacher", teacher])
        with pytest.raises(SystemExit) as done:
            main()
        stderr = capsys.readouterr().err
        assert done.value.code == 2, stderr
        assert len(stderr.strip().splitlines()) == 1 and message in stderr, stderr
