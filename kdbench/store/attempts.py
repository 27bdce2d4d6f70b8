"""A run's attempts: every process that worked on it (a requeued or resubmitted job is a new attempt).

The record keeps `attempts`, one entry per start: job id, node, start and end, epochs done when it started
and when it ended, torch threads, and why it ended:

- `completed` / `diverged`: the run finished in this attempt;
- `timeout`: the time limit's warning signal; the job requeued itself;
- `preempted`: the scheduler took the node back (or `submitit`'s preemption signal);
- `cancelled`: scancel (SIGTERM with the job's state CANCELLED);
- `failed`: an exception;
- `lost`: the process vanished without a word (SIGKILL, node failure), seen by the next attempt.

`timing` then totals across attempts (`total_s`, `train_s`), and `started_at` is the first attempt's.

A signal handler has no handle on the run's record, so this module keeps the one run this process is
executing (`begin` ... `end`); `interrupt` marks that record `interrupted` from a handler, before the
process is killed.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from kdbench.store.records import RunStore

REASONS = ("completed", "diverged", "timeout", "preempted", "cancelled", "failed", "lost")
INTERRUPTIONS = ("timeout", "preempted", "cancelled")  # the run may resume from its checkpoint


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def epochs_done(store: RunStore, run_id: str) -> int:
    """Epochs with a line in metrics.jsonl (the engine rewrites it after every epoch)."""
    path = store.metrics_path(run_id)
    try:
        return sum(1 for line in path.read_text().splitlines() if line.strip())
    except OSError:
        return 0


@dataclass
class _Live:
    record: dict[str, Any]
    store: RunStore
    t0: float
    train_t0: float | None = None
    stop_reason: str | None = None  # set by a signal handler before the exception that unwinds the run
    note: str | None = None  # why the run gives up (no progress), for the record's error


_live: _Live | None = None


def begin(record: dict[str, Any], previous: dict[str, Any] | None, store: RunStore,
          threads: dict[str, Any] | None = None) -> None:
    """Open a new attempt on `record` (a fresh record of the run), carrying over `previous`'s attempts."""
    global _live
    history = [dict(a) for a in (previous or {}).get("attempts") or []]
    for attempt in history:
        if attempt.get("reason") is None:  # that process died without closing it
            attempt["reason"] = "lost"
    run_id = record["run_id"]
    resumed = store.checkpoint_path(run_id).exists()  # else it starts at epoch 0 whatever metrics.jsonl says
    attempt: dict[str, Any] = {
        "job_id": job_id(), "node": socket.gethostname(), "started_at": _now(), "ended_at": None,
        "epochs_at_start": epochs_done(store, run_id) if resumed else 0, "epochs_done": None, "reason": None,
        "duration_s": None, "train_s": None,
    }
    if threads:
        attempt["torch_threads"] = threads.get("torch_threads")
    record["attempts"] = [*history, attempt]
    record["started_at"] = history[0]["started_at"] if history else attempt["started_at"]
    _live = _Live(record, store, time.perf_counter())


def job_id() -> str | None:
    """This SLURM job's id (`123_4` for an array task), None outside SLURM."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def training_started() -> None:
    if _live is not None:
        _live.train_t0 = time.perf_counter()


def end(record: dict[str, Any], reason: str) -> None:
    """Close the current attempt of `record` with `reason`.

    The first interruption's reason stays (a SIGTERM's `cancelled`, then the exit it causes); a run that
    finishes anyway says so.
    """
    attempts = record.get("attempts") or []
    if not attempts or (attempts[-1].get("reason") is not None and reason not in ("completed", "diverged")):
        return
    attempt = attempts[-1]
    now = time.perf_counter()
    live = _live if _live is not None and _live.record is record else None
    attempt.update(ended_at=_now(), reason=reason, epochs_done=epochs_done(live.store, record["run_id"])
                   if live else attempt.get("epochs_at_start"))
    if live is not None:
        attempt["duration_s"] = round(now - live.t0, 3)
        attempt["train_s"] = round(now - live.train_t0, 3) if live.train_t0 is not None else 0.0


def totals(record: dict[str, Any], timing: dict[str, Any]) -> dict[str, Any]:
    """`timing` of the last attempt → totals across attempts (`total_s`, `train_s`), with the last one kept."""
    attempts = record.get("attempts") or []
    if len(attempts) <= 1:
        return {**timing, "attempts": len(attempts) or 1}
    earlier = attempts[:-1]
    return {
        **timing,
        "total_s": timing["total_s"] + sum(a.get("duration_s") or 0.0 for a in earlier),
        "train_s": timing["train_s"] + sum(a.get("train_s") or 0.0 for a in earlier),
        "last_attempt": {"total_s": timing["total_s"], "train_s": timing["train_s"]},
        "attempts": len(attempts),
    }


def give_up(why: str) -> None:
    """From a signal handler: the run will not be requeued; the exception that follows fails it with `why`."""
    if _live is not None:
        _live.stop_reason = "failed"
        _live.note = why


def error_text(error: BaseException) -> str:
    """The record's `error`: why the run gave up when it did, else the exception."""
    text = f"{type(error).__name__}: {error}"
    return f"{_live.note} ({text})" if _live is not None and _live.note else text


def stop_reason_so_far() -> str | None:
    """The reason a signal handler gave in this attempt (None if none came)."""
    return _live.stop_reason if _live is not None else None


def stop_reason(error: BaseException) -> str:
    """Why the run's process is unwinding: the reason a signal handler set, else `failed`."""
    if _live is not None and _live.stop_reason is not None:
        return _live.stop_reason
    return "failed"


def interrupt(reason: str) -> None:
    """From a signal handler: mark the running record `interrupted` now (the process may be killed soon).

    The run goes on until the process is stopped; should it still finish, its record ends `completed`.
    """
    if _live is None:
        return
    _live.stop_reason = reason
    record = _live.record
    if record.get("status") != "running":
        return
    end(record, reason)
    record.update(status="interrupted", finished_at=_now())
    _live.store.write(record)


def finish() -> None:
    """The run this process executed is over (its record is written)."""
    global _live
    _live = None
