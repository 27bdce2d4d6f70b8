"""A run's attempts: every process that worked on it (a requeued or resubmitted job is a new attempt).

The record keeps `attempts`, one entry per start: job id, node, start and end, epochs done when it started
and when it ended (and the saved position, `{"epoch", "step"}`, kdbench.store.liveness), the seconds of each
start-up phase (`startup`), the steps it took and one step's seconds, torch threads, and why it ended:

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

from kdbench.core import distributed
from kdbench.store.liveness import (
    StartupClock,
    StepClock,
    process_age_s,
    saved_position,
    stalled_attempts,
)
from kdbench.store.records import RunStore

REASONS = ("completed", "diverged", "timeout", "preempted", "cancelled", "failed", "lost")
INTERRUPTIONS = ("timeout", "preempted", "cancelled")  # the run may resume from its checkpoint


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@dataclass
class _Live:
    record: dict[str, Any]
    store: RunStore
    t0: float
    train_t0: float | None = None
    stop_reason: str | None = None  # set by a signal handler before the exception that unwinds the run
    note: str | None = None  # why the run gives up (no progress), for the record's error
    startup: StartupClock | None = None
    steps: StepClock | None = None


_live: _Live | None = None


def begin(record: dict[str, Any], previous: dict[str, Any] | None, store: RunStore,
          threads: dict[str, Any] | None = None, startup: StartupClock | None = None) -> None:
    """Open a new attempt on `record` (a fresh record of the run), carrying over `previous`'s attempts.
    `startup`: the attempt's start-up clock; its phases (also those timed later) are the entry's `startup`."""
    global _live
    history = [dict(a) for a in (previous or {}).get("attempts") or []]
    for attempt in history:
        if attempt.get("reason") is None:  # that process died without closing it
            attempt["reason"] = "lost"
    run_id = record["run_id"]
    resumed = store.checkpoint_path(run_id).exists()  # else it starts at epoch 0 whatever metrics.jsonl says
    position = saved_position(store, run_id) if resumed else {"epoch": 0, "step": 0}
    attempt: dict[str, Any] = {
        "job_id": job_id(), "node": socket.gethostname(), "started_at": _now(), "ended_at": None,
        "epochs_at_start": position["epoch"], "epochs_done": None, "reason": None,
        "duration_s": None, "train_s": None, "position_at_start": position, "position": None,
    }
    if startup is not None:
        attempt["startup"] = startup.phases
    if threads:
        attempt["torch_threads"] = threads.get("torch_threads")
    record["attempts"] = [*history, attempt]
    record["started_at"] = history[0]["started_at"] if history else attempt["started_at"]
    _live = _Live(record, store, startup.t0 if startup is not None else time.perf_counter(), startup=startup)


def job_id() -> str | None:
    """This SLURM job's id (`123_4` for an array task), None outside SLURM."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def training_started(steps: StepClock | None = None) -> None:
    """Training begins; `steps` times its steps (the entry's `steps`, `step_s`, and start-up's `resume_s`)."""
    if _live is not None:
        _live.train_t0 = time.perf_counter()
        _live.steps = steps


def startup_finished() -> None:
    """The first epoch starts: the attempt's start-up phases and total are written now, so that an attempt killed
    outright still says what its start-up cost."""
    if _live is None or not _live.record.get("attempts"):
        return
    _close_clocks(_live.record["attempts"][-1], _live)
    _live.store.write(_live.record)


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
    position = saved_position(live.store, record["run_id"]) if live else attempt.get("position_at_start")
    attempt.update(ended_at=_now(), reason=reason, position=position,
                   epochs_done=(position or {}).get("epoch", attempt.get("epochs_at_start")))
    if live is not None:
        attempt["duration_s"] = round(now - live.t0, 3)
        attempt["train_s"] = round(now - live.train_t0, 3) if live.train_t0 is not None else 0.0
        _close_clocks(attempt, live)


def _close_clocks(attempt: dict[str, Any], live: _Live) -> None:
    """What the attempt's clocks measured, into its entry: start-up's total and its steps."""
    steps, startup = live.steps, live.startup
    if steps is not None:
        attempt.update(steps.facts())
        if startup is not None and steps.resume_s is not None:
            startup.phases["resume_s"] = round(steps.resume_s, 3)
    if startup is not None:
        began = steps.t_first_epoch if steps is not None else None
        attempt["startup_s"] = round((startup.phases.get("imports_s") or 0.0) + (began - startup.t0), 3) \
            if began is not None else None  # None: the attempt ended before its first step


def stalled_so_far(store: RunStore, run_id: str, reason: str) -> tuple[int, dict[str, Any]]:
    """From a signal handler: how many attempts in a row, this one (ending on `reason`) included, ended on the time
    limit where the one before left the run (kdbench.store.liveness.stalled_attempts), and what this one spent
    (:func:`spent`)."""
    if _live is not None and _live.record.get("run_id") == run_id and _live.record.get("attempts"):
        history = [dict(a) for a in _live.record["attempts"]]
        history[-1].update(position=saved_position(store, run_id), reason=reason)
    else:  # the signal came before this attempt opened the record: it saved nothing
        previous = store.load(run_id) or {}
        position = saved_position(store, run_id)
        history = [*(previous.get("attempts") or []),
                   {"position_at_start": position, "position": position, "reason": reason}]
    return stalled_attempts(history), spent(history[-1].get("position") or {})


def spent(position: dict[str, Any]) -> dict[str, Any]:
    """What this attempt spent so far: `startup_s` (None while still starting; then `starting_s`, the seconds
    since the process started), `step_s`, `steps`, `steps_per_epoch`, `training_s` (seconds since start-up ended),
    and the saved `position`."""
    live = _live
    steps = live.steps if live is not None else None
    startup = live.startup if live is not None else None
    out: dict[str, Any] = {"position": position, "startup_s": None, "step_s": None, "steps": 0,
                           "steps_per_epoch": None,
                           # one process saves the step in progress on a stop signal; data-parallel ranks do not
                           "saves_steps": distributed.world_size() == 1}
    if steps is not None and startup is not None and steps.t_first_epoch is not None:
        out["startup_s"] = (startup.phases.get("imports_s") or 0.0) + steps.t_first_epoch - startup.t0
        out.update(steps=steps.steps, step_s=steps.step_s, steps_per_epoch=steps.steps_per_epoch,
                   training_s=time.perf_counter() - steps.t_first_epoch)  # a step in progress took this long, or more
        return out
    age = process_age_s()
    if startup is not None:
        age = (startup.phases.get("imports_s") or 0.0) + time.perf_counter() - startup.t0
    out["starting_s"] = age
    return out


def totals(record: dict[str, Any], timing: dict[str, Any]) -> dict[str, Any]:
    """`timing` of the last attempt → totals across attempts (`total_s`, `train_s`), with the last one kept."""
    attempts = record.get("attempts") or []
    last = attempts[-1] if attempts else {}
    # Start-up: the last attempt's phases (kdbench.store.liveness.StartupClock) and its seconds, summed below.
    timing = {**timing, "startup": last.get("startup"), "startup_s": last.get("startup_s")}
    if len(attempts) <= 1:
        return {**timing, "attempts": len(attempts) or 1}
    earlier = attempts[:-1]
    return {
        **timing,
        "total_s": timing["total_s"] + sum(a.get("duration_s") or 0.0 for a in earlier),
        "train_s": timing["train_s"] + sum(a.get("train_s") or 0.0 for a in earlier),
        "startup_s": round(sum(a.get("startup_s") or 0.0 for a in attempts), 3),
        "last_attempt": {"total_s": timing["total_s"], "train_s": timing["train_s"],
                         "startup_s": last.get("startup_s")},
        "attempts": len(attempts),
    }


def give_up(why: str, store: RunStore | None = None, run_id: str | None = None) -> None:
    """From a signal handler: the run will not be requeued; the exception that follows fails it with `why`.

    Before the attempt opened the record (the signal came during start-up) nothing would write it: the stored
    record of `run_id` is marked `failed` with `why` here, with an entry for this attempt."""
    if _live is not None:
        _live.stop_reason = "failed"
        _live.note = why
        return
    record = store.load(run_id) if store is not None and run_id is not None else None
    if record is None or store is None:
        return
    position = saved_position(store, record["run_id"])
    record["attempts"] = [*(record.get("attempts") or []), {
        "job_id": job_id(), "node": socket.gethostname(), "started_at": None, "ended_at": _now(),
        "epochs_at_start": position["epoch"], "epochs_done": position["epoch"], "reason": "failed",
        "position_at_start": position, "position": position, "startup_s": None}]
    record.update(status="failed", error=why, finished_at=_now())
    store.write(record)


def error_text(error: BaseException) -> str:
    """The record's `error`: why the run gave up when it did (one line), else the exception."""
    return _live.note if _live is not None and _live.note else f"{type(error).__name__}: {error}"


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
