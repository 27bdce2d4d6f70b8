"""A run whose epoch cannot fit its time limit, on the real single-node SLURM cluster (issue #39): its attempts save
nothing, and after two of them it stops as `failed` with one line, instead of requeueing forever.

A stop signal saves the step in progress (kdbench.train.checkpoint), so an attempt stalls only when not one step
finishes before the job is killed: each step is held back 80 s (KDBENCH_TEST_SLOW_STEP_S, a sleep: the numbers are
untouched and the node's CPUs stay free) while a 1-minute attempt is killed 5 s (KillWait) after its limit."""

from __future__ import annotations

import re
import subprocess

import pytest
from deadline import deadline
from test_sweep_slurm import kdbench_cli, slurm_conf, status_json  # noqa: F401 - the running cluster fixture

pytestmark = pytest.mark.slurm


def test_a_run_whose_epoch_outlasts_the_limit_stops_failed_after_two_attempts_with_one_line(
        slurm_conf, tmp_path, monkeypatch):  # noqa: F811
    from kdbench.store.liveness import SLOW_STEP_ENV
    from kdbench.store.records import RunStore
    from kdbench.sweep.saved_sweep import load_saved_sweep

    monkeypatch.setenv(SLOW_STEP_ENV, "80")  # the job inherits the submitting environment
    results = tmp_path / "results"
    try:
        with deadline(420):  # two 1-minute attempts and a requeue; forever without the fix
            result = kdbench_cli("sweep", "--methods", "ce", "--students", "test_resnet", "--seeds", "0", "--epochs",
                                 "2", "--batch-size", "256", "--set", "data.image_size=8", "--executor", "slurm",
                                 "--cpus-per-task", "1", "--timeout-min", "1", "--results-dir", results, "--wait")
    finally:  # never leave a requeueing job behind on the shared cluster
        sweep = load_saved_sweep(results)
        subprocess.run(["scancel", *sweep["submissions"][0]["tasks"].values()], check=False)
    assert result.exit_code == 1, result.output  # --wait: a run failed
    ((run_id, task),) = sweep["submissions"][0]["tasks"].items()
    record = RunStore(results).load(run_id)
    assert record["status"] == "failed"
    line = record["error"]
    assert "\n" not in line, line
    assert line.startswith("no progress in 2 attempts in a row under --timeout-min 1 (each ended at epoch 0 step 0")
    pattern = r"start-up took [\d.]+ s and no step finished in the [\d.]+ s after it in the last attempt"
    assert re.search(pattern, line), line
    assert int(re.search(r"--timeout-min (\d+) or more may let it progress$", line).group(1)) >= 2, line
    assert [(a["reason"], a["position_at_start"], a["position"]) for a in record["attempts"]] == \
        [("timeout", {"epoch": 0, "step": 0}, {"epoch": 0, "step": 0}),
         ("failed", {"epoch": 0, "step": 0}, {"epoch": 0, "step": 0})]
    assert {a["job_id"] for a in record["attempts"]} == {task}  # one task, requeued once, not again
    assert line in " ".join(result.output.split())  # --wait shows the whole line under its table

    (run,) = status_json(results)["runs"]
    assert run["state"] == "failed" and run["error"] == line
    assert [a["to"] for a in run["attempts"]] == [{"epoch": 0, "step": 0}] * 2
