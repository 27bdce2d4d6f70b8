"""DOT from the command line: `kdbench run --method kd --set recipe.dot_delta=0.075` trains with it, its record and
run id say so, a run stopped inside an epoch resumes to the same bits (both momentum buffers are in the checkpoint),
and every run DOT cannot train is refused in one line before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_resume_mid_epoch import KillAt, _position, assert_same_bits

from kdbench.execute.api import run

TEACHER = "cifar_resnet8"
SETS = ["data.image_size=8", "data.test_fraction=0.5"]
DOT = "recipe.dot_delta=0.075"


@pytest.fixture(scope="module")
def shared_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("zoo")  # the teacher trains once for the module


def _run_args(results: Path, zoo: Path, *sets: str, method: str = "kd") -> list[str]:
    return ["run", "--method", method, "--teacher", TEACHER, "--student", "test_resnet", "--dataset", "digits",
            "--epochs", "1", "--teacher-epochs", "1", "--device", "cpu", "--results-dir", str(results),
            "--zoo-dir", str(zoo), *[x for s in [*SETS, *sets] for x in ("--set", s)], "--json"]


def _epoch_line(results: Path, run_id: str) -> dict:
    line = (results / "runs" / run_id / "metrics.jsonl").read_text().splitlines()[0]
    return {k: v for k, v in json.loads(line).items() if not k.endswith("_s")}


def test_kd_with_dot_delta_trains_with_dot_and_the_record_says_so(tmp_path, shared_zoo, in_process):
    results = tmp_path / "results"
    plain = in_process(*_run_args(results, shared_zoo))
    dot = in_process(*_run_args(results, shared_zoo, DOT))
    assert plain.returncode == 0 and dot.returncode == 0, plain.stderr + dot.stderr
    plain_record, dot_record = json.loads(plain.stdout), json.loads(dot.stdout)
    assert dot_record["config"]["recipe"]["dot_delta"] == 0.075
    assert "dot_delta" not in plain_record["config"]["recipe"]  # off: left out, so older run ids stay
    assert dot_record["run_id"] != plain_record["run_id"]
    # The same first batch and teacher, another optimizer: the epoch's losses and accuracies move apart.
    dot_epoch, plain_epoch = _epoch_line(results, dot_record["run_id"]), _epoch_line(results, plain_record["run_id"])
    assert {"ce", "kd"} <= dot_epoch["losses"].keys()
    assert dot_epoch != plain_epoch


def test_two_stage_fitnet_trains_with_dot_through_its_hint_only_pre_stage(tmp_path, shared_zoo, in_process):
    """Epoch 1 is FitNet's hint stage (`hint` alone, no `ce`: the distillation buffer alone), epoch 2 its kd stage."""
    done = in_process(*_run_args(tmp_path / "results", shared_zoo, DOT, "fitnet.stages=2", method="fitnet"),
                      "--epochs", "2")
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "results" / "runs" / json.loads(done.stdout)["run_id"] / "metrics.jsonl").read_text()
    first, second = (json.loads(line)["losses"] for line in lines.splitlines())
    assert "ce" not in first and "hint" in first and {"ce", "kd"} <= second.keys()


def test_a_dot_run_killed_inside_an_epoch_resumes_to_the_bits_of_an_uninterrupted_one(tmp_path, shared_zoo):
    opts = {"teacher": TEACHER, "student": "test_resnet", "epochs": 2, "teacher_epochs": 1, "device": "cpu",
            "sets": [*SETS, DOT], "zoo_dir": shared_zoo}
    whole = run("kd", results_dir=tmp_path / "whole", **opts)
    steps = whole["schedule"]["steps_per_epoch"]
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):  # killed in step 11 of epoch 2: resumed from its step-8 checkpoint
        run("kd", results_dir=cut, reporter=KillAt(steps + 11), checkpoint_every_steps=4, **opts)
    assert _position(cut, whole["run_id"]) == (2, 8)
    resumed = run("kd", results_dir=cut, **opts)
    assert_same_bits(resumed, whole, cut, tmp_path / "whole")


@pytest.mark.parametrize(("extra", "sets", "message"), [
    ([], ["recipe.dot_delta=0.2"], "dot_delta=0.2 is out of range; allowed: [0, 0.1]"),
    ([], ["recipe.dot_delta=-0.1"], "dot_delta=-0.1 is out of range; allowed: [0, 1]"),
    ([], ["recipe.dot_delta=nan"], "dot_delta=nan is not a finite number"),
    ([], [DOT, "recipe.optimizer=adamw"], "DOT splits SGD's momentum; this recipe trains with optimizer=adamw"),
    ([], [DOT, "recipe.momentum=0"], "use optimizer=sgd with momentum > 0"),
    (["--amp"], [DOT], "not implemented with --amp"),
    (["--nproc", "2"], [DOT], "not implemented for data-parallel runs (--nproc 2)"),
    ([], ["teacher_recipe.dot_delta=0.075"], "distillation losses and a zoo teacher (CE alone) has none"),
])
def test_a_run_dot_cannot_train_is_refused_in_one_line(tmp_path, in_process, extra, sets, message):
    done = in_process(*_run_args(tmp_path / "results", tmp_path / "zoo", *sets), *extra)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not list(tmp_path.rglob("result.json"))  # refused before anything ran


def test_dot_without_a_teacher_is_refused_in_one_line(tmp_path, in_process):
    done = in_process("run", "--method", "ce", "--student", "test_resnet", "--results-dir", str(tmp_path),
                      "--set", DOT)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "method 'ce' (no teacher) has none; use it with a distillation method, e.g. kd" in done.stderr
