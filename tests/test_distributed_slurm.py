"""One run trained data-parallel as ONE job of two tasks on the real single-node SLURM cluster (2 CPUs: one task
per CPU): each task joins the process group from submitit's JobEnvironment, and the record says world size 2.
With the default CPUs per task: a node's 2 CPUs shared by the job's 2 tasks (it asked 2 each and pended forever)."""

from __future__ import annotations

import pytest
from deadline import deadline
from test_sweep_slurm import kdbench_cli, slurm_conf  # noqa: F401 - the running cluster fixture

pytestmark = pytest.mark.slurm


def test_a_two_task_job_trains_one_run_with_world_size_two(slurm_conf, tmp_path):  # noqa: F811
    from kdbench.store.records import RunStore
    from kdbench.sweep.saved_sweep import load_saved_sweep

    results = tmp_path / "results"
    with deadline(300):  # no --cpus-per-task: the default must fit 2 tasks on the 2-CPU node
        result = kdbench_cli("sweep", "--methods", "ce", "--students", "test_resnet", "--seeds", "0", "--epochs",
                             "1", "--set", "data.image_size=8", "--executor", "slurm", "--tasks-per-node", "2",
                             "--timeout-min", "10", "--results-dir", results, "--wait")
    assert result.exit_code == 0, result.output
    (sub,) = load_saved_sweep(results)["submissions"]
    assert sub["cpus_per_task"] == 1
    ((run_id, _),) = sub["tasks"].items()
    record = RunStore(results).load(run_id)
    assert record["status"] == "completed"
    assert record["config"]["world_size"] == 2 and record["distributed"]["world_size"] == 2
    assert record["distributed"]["backend"] == "gloo" and record["distributed"]["per_rank_batch"] == 32
