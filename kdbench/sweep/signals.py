"""What a run job does when the scheduler stops it.

- SIGTERM (scancel, a preemption, SLURM's own time limit): submitit ignores it, so the process would be
  killed with its record still saying `running`. The handler here marks the record `interrupted` at once,
  naming the cause the scheduler gives (`cancelled`, `timeout`, else `preempted`), and lets the process go
  on: a preemption's USR2 may follow (submitit requeues), or SIGKILL after KillWait.
- USR2 (submitit's warning before the time limit, or the second signal of a preemption): `RunJob.checkpoint`
  asks `warning_reason` which.
"""

from __future__ import annotations

import signal
import subprocess
from types import FrameType

from kdbench.store import attempts

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


def warning_reason() -> str:
    """Why USR2 came: after a SIGTERM it is a preemption's (submitit's convention: SIGTERM, then USR2), and the
    SIGTERM handler already named the cause; alone, it is the time limit's warning (`--signal`). The clock
    cannot tell: SLURM may send the warning up to a minute early."""
    return attempts.stop_reason_so_far() or "timeout"
