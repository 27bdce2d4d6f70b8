"""A run's lock: one process (or one data-parallel world) trains a run id at a time.

`runs/<id>/run.lock` is a file lock the OS releases when its holder dies, so a waiter then takes over (and the
engine resumes from the checkpoint).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from filelock import FileLock, Timeout

from kdbench.core import distributed
from kdbench.core.progress import NULL_REPORTER, Reporter
from kdbench.store.records import RunStore


@contextmanager
def world_run_lock(store: RunStore, run_id: str, reporter: Reporter = NULL_REPORTER, *,
                   held: bool = False) -> Iterator[None]:
    """The run's lock for every process of the run: rank 0 holds it for the whole world (the others would wait on
    it forever), and the other ranks wait at a barrier until rank 0 has it; without that barrier, a waiting
    world's other ranks went on alone into its collectives and died there once the first run finished (issue
    #29). `held`: the caller (run()'s launcher of a --nproc run) holds it for every process already."""
    if held:
        yield
        return
    with run_lock(store, run_id, reporter) if distributed.is_main() else nullcontext():
        # A world started elsewhere (SLURM tasks): its ranks wait here, within the collectives' timeout
        # (distributed.timeout_s); one process: no barrier.
        distributed.barrier()
        yield


@contextmanager
def run_lock(store: RunStore, run_id: str, reporter: Reporter = NULL_REPORTER) -> Iterator[None]:
    """Hold the run's file lock (`runs/<id>/run.lock`): one process trains a run id at a time. The OS releases
    it when its holder dies, so a waiter then takes over (and the engine resumes from the checkpoint)."""
    store.check_own(run_id)  # the lock file is the first write into the run's folder: never through a link
    path = store.run_dir(run_id) / "run.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        reporter.log(f"run {run_id}: another process is running it; waiting for it to finish")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
