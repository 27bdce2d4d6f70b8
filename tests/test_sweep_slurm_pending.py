"""A SLURM sweep that can never be scheduled stops instead of waiting forever (real single-node cluster, 2 CPUs):
an explicit --cpus-per-task no node can hold is refused before submission, and a job SLURM queues but can never
start (more nodes than the partition has: pending reason PartitionConfig or PartitionNodeLimit) ends `--wait`
with one line, is cancelled, and `kdbench status` shows its reason and the option to change. No job here ever
runs."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from deadline import deadline
from test_sweep_slurm import kdbench_cli, slurm_conf  # noqa: F401 - the running cluster fixture

pytestmark = pytest.mark.slurm

TINY = ["--methods", "ce", "--students", "test_resnet", "--epochs", "1", "--set", "data.image_size=8",
        "--executor", "slurm", "--timeout-min", "10"]


NEVER = ("PartitionConfig", "PartitionNodeLimit")  # what SLURM says of a job asking more nodes than there are


def squeue_ids() -> set[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%A"], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_cpus_per_task_that_no_node_can_hold_is_refused_before_submission(slurm_conf, tmp_path):  # noqa: F811
    from kdbench.core.errors import UserError

    results = tmp_path / "results"
    before = squeue_ids()
    result = kdbench_cli("sweep", *TINY, "--seeds", "0", "--cpus-per-task", "3", "--results-dir", results)
    submitted = squeue_ids() - before
    if submitted:  # a regression: do not leave a job that never starts in the queue
        subprocess.run(["scancel", *submitted], check=False)
    assert isinstance(result.exception, UserError), result.output
    message = str(result.exception)
    assert message.startswith("--cpus-per-task 3 × --tasks-per-node 1 asks 3 CPUs of one node") and "\n" not in message
    assert "--cpus-per-task 2 at most" in message
    assert not submitted
    assert not (results / "sweeps").exists() and not (results / "submitit").exists()


def test_wait_stops_on_a_job_that_can_never_start_and_status_names_the_option(slurm_conf, tmp_path):  # noqa: F811
    from kdbench.core.errors import UserError
    from kdbench.sweep.saved_sweep import load_saved_sweep

    results = tmp_path / "results"
    # Without --wait: the job stays queued, and `status` says it will never start.
    queued = kdbench_cli("sweep", *TINY, "--seeds", "0", "--nodes", "2", "--results-dir", results)
    assert queued.exit_code == 0, queued.output
    (job,) = load_saved_sweep(results)["submissions"][0]["tasks"].values()
    try:
        give_up_at = time.monotonic() + 30
        while True:  # the scheduler gives the reason on its first pass over the queue
            status = kdbench_cli("status", "--results-dir", results, "--json")
            if '"reason": "Partition' in status.output or time.monotonic() > give_up_at:
                break
            time.sleep(1)
        assert status.exit_code == 0, status.output
        (run,) = json.loads(status.stdout)["runs"]
        # SLURM says PartitionConfig or PartitionNodeLimit, depending on its pass over the queue
        assert (run["job_id"], run["state"], run["reason"] in NEVER) == (job, "pending", True)
        (warning,) = [line for line in status.stderr.splitlines() if "can never start" in line]
        assert f"job {job} can never start (SLURM pending reason {run['reason']})" in warning
        assert "--nodes 2 asks more nodes than partition debug has (1)" in warning
    finally:
        subprocess.run(["scancel", job.split("_")[0]], check=False)

    # With --wait: one line, exit 2, and the job is cancelled (left queued, it would hold its run `in flight`).
    t0 = time.monotonic()
    before = squeue_ids()
    try:
        with deadline(60):
            waited = kdbench_cli("sweep", *TINY, "--seeds", "1", "--nodes", "2", "--results-dir", results, "--wait")
    finally:
        left = squeue_ids() - before
        if left:  # a regression: do not leave a job that never starts in the queue
            subprocess.run(["scancel", *left], check=False)
    assert not left
    assert isinstance(waited.exception, UserError), waited.output
    message = str(waited.exception)
    assert "\n" not in message and any(f"can never start (SLURM pending reason {r})" in message for r in NEVER)
    assert "--nodes 2 asks more nodes than partition debug has (1): lower --nodes" in message
    assert "cancelled it: change the option" in message
    assert time.monotonic() - t0 < 60
    sweep = max((load_saved_sweep(results, p.stem) for p in (results / "sweeps").glob("*.json")),
                key=lambda s: s["created_ts"])
    (stuck,) = sweep["submissions"][0]["tasks"].values()
    assert stuck in message
