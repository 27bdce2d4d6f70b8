"""Two processes asking for the same run train it once: the second waits on the run's lock, then shows the
finished record, or, when the first died mid-run, resumes from its checkpoint."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from typing import Any

from kdbench.core.progress import Reporter
from kdbench.execute.api import run
from kdbench.report.results import load_runs

TINY = {"student": "resnet18", "sets": ["data.image_size=8"], "device": "cpu"}


class Collect(Reporter):
    def __init__(self, started=None, die_at: str | None = None) -> None:
        self.lines: list[str] = []
        self.started = started
        self.die_at = die_at

    def log(self, message: str) -> None:
        self.lines.append(message)

    def phase_start(self, label: str, total: int | None = None) -> None:
        if self.started is not None:
            self.started.set()  # training has begun: this process holds the run's lock
        if label == self.die_at:  # the previous epoch's checkpoint is on disk
            os._exit(3)


def _run(results: str, epochs: int, queue, barrier=None, started=None, wait_for=None, die_at=None) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    if barrier is not None:
        barrier.wait(timeout=120)
    if wait_for is not None:
        wait_for.wait(timeout=300)
    reporter = Collect(started, die_at)
    record = run("ce", results_dir=results, epochs=epochs, reporter=reporter, **TINY)
    queue.put({"cached": record.get("cached", False), "run_id": record["run_id"], "lines": reporter.lines,
               "resumed_from": record["metrics"]["resumed_from_epoch"]})


def _join(procs: list[Any]) -> None:
    for p in procs:
        p.join(timeout=600)


def test_identical_runs_launched_together_train_once(tmp_path):
    ctx = mp.get_context("spawn")
    queue, barrier = ctx.Queue(), ctx.Barrier(2)
    procs = [ctx.Process(target=_run, args=(str(tmp_path), 1, queue, barrier)) for _ in range(2)]
    for p in procs:
        p.start()
    _join(procs)
    assert [p.exitcode for p in procs] == [0, 0]
    results = [queue.get(timeout=5) for _ in procs]
    assert sorted(r["cached"] for r in results) == [False, True]  # one trained; the other waited and read it
    waiter = next(r for r in results if r["cached"])
    assert any("another process is running it; waiting" in line for line in waiter["lines"])
    assert results[0]["run_id"] == results[1]["run_id"]
    assert len(load_runs(tmp_path)) == 1


def test_a_waiter_resumes_the_checkpoint_of_a_holder_that_died(tmp_path):
    ctx = mp.get_context("spawn")
    queue, started = ctx.Queue(), ctx.Event()
    holder = ctx.Process(target=_run, args=(str(tmp_path), 2, queue), kwargs={"started": started,
                                                                              "die_at": "epoch 2/2"})
    waiter = ctx.Process(target=_run, args=(str(tmp_path), 2, queue), kwargs={"wait_for": started})
    holder.start()
    waiter.start()
    _join([holder, waiter])
    assert holder.exitcode == 3 and waiter.exitcode == 0
    result = queue.get(timeout=5)
    assert result["cached"] is False and result["resumed_from"] == 1  # epoch 1 came from the dead holder
    assert any("another process is running it; waiting" in line for line in result["lines"])
    record = json.loads((tmp_path / "runs" / result["run_id"] / "result.json").read_text())
    assert record["status"] == "completed" and record["metrics"]["epochs"] == 2
