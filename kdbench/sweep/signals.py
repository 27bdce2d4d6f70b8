"""What a run's process does when it is told to stop: a sweep job by the scheduler, `kdbench run` by SIGTERM.

Each stop saves the run where it is: at the end of the optimizer step in progress, a step-level checkpoint
(kdbench.train.stop_request; a resumed run continues at the next step with the same numbers). A signal that
arrives outside an epoch's steps (start-up, evaluation) acts at once, as before: the run resumes from its last
checkpoint.

- SIGTERM in a sweep job (scancel, a preemption, SLURM's own time limit): submitit ignores it, so the process would
  be killed with its record still saying `running`. The handler here marks the record `interrupted` at once,
  naming the cause the scheduler gives (`cancelled`, `timeout`, else `preempted`), asks for a step checkpoint
  and lets the process go on: a preemption's USR2 may follow (submitit requeues), or SIGKILL after KillWait.
- USR2 (submitit's warning before the time limit, or the second signal of a preemption): submitit's handler
  (`RunJob.checkpoint`, requeue, exit) runs after the step in progress is saved (:func:`defer_checkpoint_signal`);
  `RunJob.checkpoint` asks `warning_reason` which it was.
- SIGTERM to `kdbench run` (:func:`stop_on_sigterm`): the record marked `interrupted`, the step saved, and the
  process exits with status 143 (128 + SIGTERM); the same command resumes it.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from kdbench.store import attempts
from kdbench.train import stop_request

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
        stop_request.request()  # the step in progress saved; training goes on until USR2 or SIGKILL

    signal.signal(signal.SIGTERM, on_sigterm)


def defer_checkpoint_signal(signum: int = signal.SIGUSR2, wait_s: float = 30.0) -> None:
    """Run the handler installed for `signum` (submitit's checkpoint signal: checkpoint, requeue, exit) at the end
    of the optimizer step in progress, after its step checkpoint is saved; at once outside an epoch's steps.

    A step that has not ended `wait_s` seconds after the signal is not waited for any longer: the handler runs then
    (the job requeues from the last save), since SLURM kills the job at its limit whatever it is doing, and a job
    killed before submitit's handler ran is never requeued at all."""
    original = signal.getsignal(signum)
    if not callable(original) or getattr(original, "deferred_to_step_end", False):
        return  # no handler of submitit's (a plain process), or deferred already (several runs in one job)
    handler: Callable[[int, FrameType | None], Any] = original

    def deferred(sig: int, frame: FrameType | None) -> None:
        acted: list[bool] = []

        def act() -> None:  # once: at the step's end, or when the step overruns its share of the grace
            if not acted:
                acted.append(True)
                signal.setitimer(signal.ITIMER_REAL, 0)
                handler(sig, frame)

        if not stop_request.request(act):
            handler(sig, frame)
            return
        signal.signal(signal.SIGALRM, lambda *_: act())
        signal.setitimer(signal.ITIMER_REAL, max(wait_s, 0.001))

    deferred.deferred_to_step_end = True  # type: ignore[attr-defined]
    signal.signal(signum, deferred)


class _Stopped(SystemExit):
    """The exit of a run stopped by SIGTERM: status 128 + SIGTERM, as a process killed by it reports."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """`kdbench run`: SIGTERM marks the record `interrupted` (`cancelled`, or the scheduler's cause in a SLURM
    job), saves the step in progress and exits with status 143 (at once outside an epoch's steps). The previous
    handler is back when the block ends."""

    def stop() -> None:
        raise _Stopped()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        attempts.interrupt(scheduler_cause())
        if not stop_request.request(stop):
            stop()

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set a handler (a caller running kdbench in a thread keeps its own)
        return
    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def warning_reason() -> str:
    """Why USR2 came: after a SIGTERM it is a preemption's (submitit's convention: SIGTERM, then USR2), and the
    SIGTERM handler already named the cause; alone, it is the time limit's warning (`--signal`). The clock
    cannot tell: SLURM may send the warning up to a minute early."""
    return attempts.stop_reason_so_far() or "timeout"
