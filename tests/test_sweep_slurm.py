"""`kdbench sweep` against a real single-node SLURM cluster (slurm/up.sh): a teacher job, a dependent job
array, idempotent resubmission, a preempted task that resumes to the same numbers, a failed task that
`--resume` resubmits alone.

Jobs are tiny (digits at 8 px, batch 256, 1 CPU each) so the module stays under ~3 minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parent.parent
TINY = ["--epochs", "1", "--teacher-epochs", "1", "--batch-size", "256", "--set", "data.image_size=8",
        "--set", "teacher_recipe.batch_size=256"]
SLURM = ["--executor", "slurm", "--cpus-per-task", "1", "--timeout-min", "10"]


def no_cluster(reason: str) -> None:
    """Skip with the reason on a developer laptop; in CI (CI=true) these tests must run, so fail instead."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI must run the SLURM tests, but: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def slurm_conf():
    """A running cluster: reuses one already up (CI starts it before pytest), else starts it."""
    if os.geteuid() != 0:
        no_cluster("SLURM tests need root: slurm/up.sh starts munge, MariaDB and the SLURM daemons")
    try:
        up = subprocess.run(["bash", str(REPO / "slurm" / "up.sh")], capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        no_cluster(f"slurm/up.sh could not run: {e}")
    if up.returncode != 0:
        tail = " | ".join(up.stderr.strip().splitlines()[-3:])
        no_cluster(f"slurm/up.sh failed (exit {up.returncode}): {tail}")
    conf = up.stdout.strip().splitlines()[-1].split("=", 1)[1]
    mp = pytest.MonkeyPatch()
    mp.setenv("SLURM_CONF", conf)
    mp.setenv("KDBENCH_POLL_S", "1")
    yield conf
    mp.undo()


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Shared by the module's tests (the first one must see the teacher job train it).
    return tmp_path_factory.mktemp("zoo")


def kdbench_cli(*args: object):
    from kdbench.cli.app import _register_commands, app

    _register_commands()
    return CliRunner().invoke(app, [str(a) for a in args])


def sacct(job_ids: str) -> dict[str, dict[str, str]]:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State,Start,End", "-j", job_ids],
                         capture_output=True, text=True, check=True).stdout
    rows = [line.split("|") for line in out.strip().splitlines()]
    return {r[0]: {"state": r[1], "start": r[2], "end": r[3]} for r in rows}


def status_json(results: Path, sweep_id: str = "") -> dict:
    result = kdbench_cli("status", *([sweep_id] if sweep_id else []), "--results-dir", results, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_sweep_trains_teacher_first_then_runs_one_dependent_array(slurm_conf, zoo, tmp_path):
    from kdbench.records import RunStore
    from kdbench.sweep.submit import load_sweep

    results = tmp_path / "results"
    args = ["sweep", "--methods", "ce,kd", "--teachers", "resnet18", "--students", "resnet18", "--seeds", "0,1",
            *TINY, *SLURM, "--results-dir", results, "--zoo-dir", zoo]
    result = kdbench_cli(*args, "--wait")
    assert result.exit_code == 0, result.output
    assert "executor slurm" in result.output

    sweep = load_sweep(results)
    (sub,) = sweep["submissions"]
    ((teacher_id,),) = [[t["job_id"] for t in sub["teacher_jobs"].values()]]
    assert len(sub["tasks"]) == 4 and sub["dependency"] == f"afterok:{teacher_id}"
    array = sub["array_job"]
    assert sorted(sub["tasks"].values()) == [f"{array}_{i}" for i in range(4)]  # ONE array of 4
    script = (Path(sweep["folder"]) / f"{array}_submission.sh").read_text()
    assert f"--dependency=afterok:{teacher_id}" in script and "--array=0-3" in script

    acct = sacct(f"{teacher_id},{array}")
    assert acct[teacher_id]["state"] == "COMPLETED"
    for task in sub["tasks"].values():
        assert acct[task]["state"] == "COMPLETED"
        assert acct[task]["start"] >= acct[teacher_id]["end"]  # ISO times: the array waited for the teacher

    store = RunStore(results)
    assert [store.status(rid) for rid in sub["tasks"]] == ["completed"] * 4
    assert status_json(results)["counts"]["completed"] == 4

    again = kdbench_cli(*args)
    assert again.exit_code == 0, again.output
    assert "nothing to submit" in again.output
    assert len(list((results / "sweeps").glob("*.json"))) == 1


def _wait_until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_preempted_task_resumes_to_an_uninterrupted_runs_numbers_and_failed_task_resumes_alone(
        slurm_conf, zoo, tmp_path, monkeypatch):
    """One array: a 4-epoch run we preempt after its first epoch, and a ViT whose 224 px input check fails
    at run time on 8 px images (the options resolve fine; only the job finds out)."""
    import submitit
    import torch

    from kdbench.config import RunConfig
    from kdbench.records import RunStore
    from kdbench.runner import Paths, execute
    from kdbench.sweep.status import sweep_state, wait_for_sweep
    from kdbench.sweep.submit import load_sweep

    results = tmp_path / "results"
    result = kdbench_cli("sweep", "--methods", "ce", "--students", "resnet18,vit_tiny_patch16_224", "--seeds", "0",
                         "--epochs", "4", "--batch-size", "256", "--set", "data.image_size=8", *SLURM,
                         "--results-dir", results, "--zoo-dir", zoo)
    assert result.exit_code == 0, result.output
    sweep = load_sweep(results)
    entries = {e["student"]: e for e in sweep["runs"]}
    cnn, vit = entries["resnet18"]["run_id"], entries["vit_tiny_patch16_224"]["run_id"]
    tasks = sweep["submissions"][0]["tasks"]
    assert sweep["submissions"][0]["teacher_jobs"] == {} and sweep["submissions"][0]["dependency"] is None

    store = RunStore(results)
    metrics = store.metrics_path(cnn)
    _wait_until(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 1, 150, "epoch 1")
    assert store.status(cnn) == "running"
    submitit.SlurmJob(folder=sweep["folder"], job_id=tasks[cnn])._interrupt()  # SIGTERM + USR2: preemption

    # The same config run in this process, uninterrupted, while the cluster requeues the task.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the 1-CPU job
    try:
        reference = execute(RunConfig.from_dict(entries["resnet18"]["config"]), Paths(tmp_path / "ref", zoo))
    finally:
        torch.set_num_threads(threads)

    final = wait_for_sweep(sweep, poll_s=1, timeout_s=240)
    states = {r.run_id: r.state for r in final.runs}
    assert states == {cnn: "completed", vit: "failed"}
    record = store.load(cnn)
    assert record["metrics"]["resumed_from_epoch"] >= 1  # it really resumed from a checkpoint
    log = Path(sweep["folder"], f"{tasks[cnn]}_0_log.err").read_text()
    assert "(restart 1)" in log  # SLURM requeued the same task
    for key in ("top1_last", "top1_best", "top5_last", "best_epoch"):
        assert record["metrics"][key] == reference["metrics"][key], key
    ours = [json.loads(line) for line in metrics.read_text().splitlines()]
    theirs = [json.loads(line) for line in RunStore(tmp_path / "ref").metrics_path(cnn).read_text().splitlines()]
    assert len(ours) == len(theirs) == 4
    for a, b in zip(ours, theirs, strict=True):
        assert a["losses"] == pytest.approx(b["losses"], rel=1e-6) and a["top1"] == b["top1"]

    status = status_json(results, sweep["sweep_id"])
    assert status["counts"]["failed"] == 1 and status["counts"]["completed"] == 1
    assert "AssertionError" in next(r["error"] for r in status["runs"] if r["run_id"] == vit)

    resumed = kdbench_cli("sweep", "--resume", sweep["sweep_id"], "--results-dir", results)
    assert resumed.exit_code == 0, resumed.output
    last = load_sweep(results, sweep["sweep_id"])["submissions"][-1]
    assert list(last["tasks"]) == [vit]  # only the failed run went back to the queue
    assert last["skipped"] == {cnn: "completed"}
    subprocess.run(["scancel", last["tasks"][vit]], check=True)  # it would only fail again
    _wait_until(lambda: not sweep_state(load_sweep(results, sweep["sweep_id"])).active, 60, "the cancel")
