"""`kdbench sweep` without SLURM: the local executor (subprocesses) and the debug executor (this process)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from kdbench.store.records import RunStore
from kdbench.sweep.saved_sweep import load_saved_sweep
from kdbench.teachers.zoo import TeacherZoo

TINY = ["--epochs", "1", "--teacher-epochs", "1", "--batch-size", "256", "--set", "data.image_size=8",
        "--set", "teacher_recipe.batch_size=256", "--cpus-per-task", "1"]


def kdbench_cli(*args: object):
    from kdbench.cli.app import _register_commands, app

    _register_commands()
    return CliRunner().invoke(app, [str(a) for a in args])


def test_local_executor_runs_the_small_sweep_and_resubmits_nothing(dirs, monkeypatch):
    # The SLURM test's sweep: a teacher job, then 4 runs shared by one local worker per CPU (2 here).
    monkeypatch.setenv("KDBENCH_POLL_S", "1")
    args = ["sweep", "--methods", "ce,kd", "--teachers", "cifar_resnet8", "--students", "cifar_resnet8",
            "--seeds", "0,1",
            *TINY, "--executor", "local", "--results-dir", dirs["results"], "--zoo-dir", dirs["zoo"]]
    result = kdbench_cli(*args, "--wait")
    assert result.exit_code == 0, result.output
    assert "executor local" in result.output

    sweep = load_saved_sweep(dirs["results"])
    (sub,) = sweep["submissions"]
    assert len(sub["teacher_jobs"]) == 1 and len(sub["tasks"]) == 4
    assert sub["dependency"] is None  # local jobs order themselves through the zoo's lock
    assert 1 <= len(sub["workers"]) <= 2 and set(sub["tasks"].values()) == set(sub["workers"])
    store = RunStore(dirs["results"])
    assert [store.status(rid) for rid in sub["tasks"]] == ["completed"] * 4
    assert len(TeacherZoo(dirs["zoo"]).cards()) == 1  # trained once, by whichever process got the lock

    status = kdbench_cli("status", "--results-dir", dirs["results"], "--json")
    assert status.exit_code == 0, status.output
    state = json.loads(status.stdout)
    assert state["executor"] == "local" and state["counts"]["completed"] == 4
    assert {r["job_state"] for r in state["runs"]} == {"COMPLETED"}  # from submitit's result files

    again = kdbench_cli(*args)
    assert again.exit_code == 0 and "nothing to submit" in again.output


def test_debug_executor_runs_in_process_and_status_reads_the_records(dirs):
    result = kdbench_cli("sweep", "--methods", "ce", "--students", "cifar_resnet8", "--seeds", "3", *TINY,
                         "--executor", "debug", "--results-dir", dirs["results"], "--zoo-dir", dirs["zoo"])
    assert result.exit_code == 0, result.output
    sweep = load_saved_sweep(dirs["results"])
    (rid,) = sweep["submissions"][0]["tasks"]
    assert RunStore(dirs["results"]).status(rid) == "completed"
    status = kdbench_cli("status", sweep["sweep_id"], "--results-dir", dirs["results"])
    assert status.exit_code == 0 and "1 runs: 0 pending, 0 running, 1 completed" in status.output


def test_status_names_a_run_folder_linked_out_of_the_results_and_goes_on(dirs, tmp_path):
    # Issue #34: a colleague's results folder may hold a run folder that is a symlink to anywhere. `kdbench
    # status` says so for that run, shows the rest, and reads nothing through the link.
    result = kdbench_cli("sweep", "--methods", "ce", "--students", "cifar_resnet8", "--seeds", "3,4", *TINY,
                         "--executor", "debug", "--results-dir", dirs["results"], "--zoo-dir", dirs["zoo"])
    assert result.exit_code == 0, result.output
    linked, kept = load_saved_sweep(dirs["results"])["submissions"][0]["tasks"]
    run_dir = RunStore(dirs["results"]).run_dir(linked)
    elsewhere = tmp_path / "elsewhere"
    run_dir.rename(elsewhere)
    run_dir.symlink_to(elsewhere)

    status = kdbench_cli("status", "--results-dir", dirs["results"], "--json")
    assert status.exit_code == 0, status.output
    runs = {r["run_id"]: r for r in json.loads(status.stdout)["runs"]}
    assert "symlink out of the results folder" in runs[linked]["error"]
    assert runs[kept]["state"] == "completed" and runs[linked]["state"] != "completed"
