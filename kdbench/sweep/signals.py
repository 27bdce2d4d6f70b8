"""What a run job does when the scheduler stops it.

- SIGTERM (scancel, a preemption, SLURM's own time limit): submitit ignores it, so the process would be
  killed with its record still saying `running`. The handler here marks the record `interrupted` at once,
  naming the cause the scheduler gives (`cancelled`, `timeout`, else `preempted`), and lets the process go
  on: a preemption's USR2 may follow (submitit requeues), or SIGKILL after KillWait.
- USR2 (submitit's warning before the time limit, or its preemption signal): `RunJob.checkpoint` asks
  `warning_reason` whether it is the time limit or a preemption.
"""

from __future__ import annotations

import signal
import subprocess
import time
from types import FrameType

from .. import attempts

LOADED_AT = time.time()

# job states (sacct) that say why the job is being stopped
_CAUSES = {"CANCELLED": "cancelled", "TIMEOUT": "timeout", "DEADLINE": "timeout", "PREEMPTED": "preempted"}


def scheduler_cause(timeout_s: float = 3.0) -> str:
    """Why SLURM is stopping this job (a few seconds at most: KillWait may be short).

    Accounting (sacct) has the cause the moment scancel returns (`CANCELLED by 0`), while squeue only says
    COMPLETING until the job is gone.
    """
    job_id = attempts.job_id()
    if not job_id:
        return "cancelled"  # not a SLURM job: someone sent SIGTERM by hand
    try:
        out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "State", "-j", job_id], capture_output=True,
                             text=True, timeout=timeout_s).stdout
    except (OSError, subprocess.SubprocessError):
        return "preempted"
    states = [line.split()[0].rstrip("+") for line in out.splitlines() if line.strip()]
    for state in reversed(states):  # the latest record of a requeued job comes last
        if state in _CAUSES:
            return _CAUSES[state]
    return "preempted"  # still RUNNING: a preemption signal (scancel would have set CANCELLED first)


def install_sigterm_handler() -> None:
    """Mark the running record `interrupted` on SIGTERM (replaces submitit's handler, which only logs)."""

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        attempts.interrupt(scheduler_cause())

    signal.signal(signal.SIGTERM, on_sigterm)


def seconds_left(timeout_s: float = 3.0) -> float | None:
    """Seconds until this SLURM job's time limit (squeue's %L), None when unknown or unlimited."""
    job_id = attempts.job_id()
    if not job_id:
        return None
    try:
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%L"], capture_output=True, text=True,
                             timeout=timeout_s).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    days, _, clock = out.rpartition("-")
    parts = clock.split(":")
    if not all(p.isdigit() for p in parts) or not (days.isdigit() or days == ""):
        return None  # UNLIMITED, INVALID, or no such job
    seconds = 0
    for p in parts:
        seconds = seconds * 60 + int(p)
    return seconds + int(days or 0) * 86400


def job_deadline(timeout_s: float = 10.0) -> float | None:
    """When this attempt's time limit ends (epoch seconds), from the scheduler; asked at the attempt's start,
    where a slow answer costs nothing (in the warning's handler every second counts)."""
    left = seconds_left(timeout_s)
    return None if left is None else time.time() + left


def warning_reason(deadline: float | None, limit_s: float, delay_s: float) -> str:
    """USR2 near the end of the allocation is the time limit's warning; earlier, a preemption.

    The deadline the scheduler gave at the attempt's start decides; without it, the time since the job
    loaded this module (jobs.py imports it when submitit unpickles the job, seconds after the job started).
    """
    if deadline is not None:
        return "timeout" if time.time() >= deadline - 2 * delay_s - 5 else "preempted"
    elapsed = time.time() - LOADED_AT
    return "timeout" if elapsed >= limit_s - 2 * delay_s - 10 else "preempted"
