"""Two identical `--nproc 2` runs started together train once: the second waits for the first as a whole (its
launcher holds the run's lock before any worker starts), then shows the finished record. Before issue #29 the
waiting run's rank 1 skipped the lock, went on alone into the collectives and died there with a gloo error."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

from kdbench.core.progress import Reporter
from kdbench.execute.api import run
from kdbench.report.results import load_runs

# timm's test_resnet: the launcher holds the run's lock before its workers start (seconds of spawning and
# imports), so the second run finds it held whatever the model; resnet18 only made the training longer.
TINY = {"student": "test_resnet", "sets": ["data.image_size=8"], "device": "cpu", "epochs": 1}


class Collect(Reporter):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


def _run_two_ranks(results: str, queue, barrier) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    barrier.wait(timeout=120)
    reporter = Collect()
    try:
        record = run("ce", results_dir=results, reporter=reporter, nproc=2, **TINY)
    except Exception as e:  # the test reports what failed rather than a bare exit code
        queue.put({"error": f"{type(e).__name__}: {e}", "lines": reporter.lines})
        raise
    queue.put({"cached": record.get("cached", False), "run_id": record["run_id"], "lines": reporter.lines,
               "world": record["config"]["world_size"]})


def test_identical_two_process_runs_started_together_train_once(tmp_path):
    ctx = mp.get_context("spawn")
    queue, barrier = ctx.Queue(), ctx.Barrier(2)
    procs = [ctx.Process(target=_run_two_ranks, args=(str(tmp_path), queue, barrier)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
    results = [queue.get(timeout=5) for _ in procs]
    assert [p.exitcode for p in procs] == [0, 0], results
    assert sorted(r["cached"] for r in results) == [False, True]  # one trained; the other waited and read it
    waiter = next(r for r in results if r["cached"])
    assert any("another process is running it; waiting" in line for line in waiter["lines"])
    assert {r["run_id"] for r in results} == {results[0]["run_id"]} and {r["world"] for r in results} == {2}
    runs = load_runs(tmp_path)
    assert len(runs) == 1 and runs.iloc[0]["status"] == "completed"


def _enter_world_lock(results: str, run_id: str, *, device: str) -> list[float]:
    """A rank of a world started without a launcher holding the lock (as SLURM tasks are): when it got past the
    run's lock, every rank's time gathered on rank 0."""
    import time

    import torch

    from kdbench.core import distributed
    from kdbench.execute.locks import world_run_lock
    from kdbench.store.records import RunStore

    (Path(results) / f"rank{distributed.rank()}.started").touch()
    with world_run_lock(RunStore(results), run_id):
        passed = time.time()
    return distributed.all_gather_cat(torch.tensor([passed], dtype=torch.float64)).tolist()


def test_every_rank_of_a_world_started_elsewhere_waits_until_rank_0_holds_the_run_lock(tmp_path):
    import threading
    import time

    from kdbench.core import distributed
    from kdbench.execute.locks import run_lock
    from kdbench.store.records import RunStore

    got: dict[str, list[float]] = {}
    with run_lock(RunStore(tmp_path), "0123456789abcdef"):  # another process runs it
        world = threading.Thread(target=lambda: got.update(times=distributed.launch_local(
            2, _enter_world_lock, (str(tmp_path), "0123456789abcdef"), "cpu")))
        world.start()
        deadline = time.time() + 300
        while len(list(tmp_path.glob("rank*.started"))) < 2 and time.time() < deadline:
            time.sleep(0.2)  # the workers start (spawn, imports) and reach the lock
        time.sleep(2)
        released = time.time()
    world.join(timeout=300)
    assert len(got["times"]) == 2 and min(got["times"]) >= released, (got, released)
