"""Whether a run's attempts make progress, and what one attempt spends before and within its first steps.

A run under a time limit advances only by what it saves: an attempt that ends where the one before it left the run
gained nothing, and a run whose start-up plus the work up to its next save no longer fits the limit would requeue
forever. Each attempt's entry (kdbench.store.attempts) holds the run's saved position when it started and when it
ended, `{"epoch": E, "step": S}`: E epochs completed and S steps of epoch E+1 saved in a step-level checkpoint
(kdbench.train.checkpoint: on a stop signal after the step in progress, or every --checkpoint-every-steps N).

It also holds what the attempt measured: the seconds of each start-up phase (:class:`StartupClock`) and, from the
engine's per-step reports (:class:`StepClock`), how many steps it took and how long one took. From these the line
that stops a stalled run says what the attempt spent and what limit would let it progress.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kdbench.core.progress import Reporter
from kdbench.core.storage import inside
from kdbench.store.records import RunStore, UnreadableHistory
from kdbench.train.checkpoint import saved_step

# Test-only: seconds each training step is held back, so that a tiny run's epoch outlasts a short time limit (the
# SLURM test of a stalled run); a sleep changes no number and leaves the shared CPUs to the other jobs.
SLOW_STEP_ENV = "KDBENCH_TEST_SLOW_STEP_S"

# Attempts in a row that end without advancing the saved position before the run stops as failed (issue #39).
STALLED_ATTEMPTS_TO_FAIL = 2


def epochs_done(store: RunStore, run_id: str) -> int:
    """Epochs with a line in metrics.jsonl (the engine rewrites it after every epoch); read bounded and never
    through a link out of the results folder (RunStore.read_history), 0 when it cannot be read."""
    try:
        return len(store.read_history(run_id))
    except UnreadableHistory:
        return 0


def saved_position(store: RunStore, run_id: str) -> dict[str, int]:
    """Where a resumed attempt would start: epochs completed (each with its checkpoint) and the steps of the next
    epoch saved in a step-level checkpoint (kdbench.train.checkpoint; 0 when the checkpoint is an epoch's)."""
    done = epochs_done(store, run_id)
    path = store.checkpoint_path(run_id)
    step = saved_step(path) if path.is_file() and inside(store.root / "runs", path) else None
    return {"epoch": done, "step": step[1] if step is not None and step[0] == done + 1 else 0}


def _key(position: dict[str, Any] | None) -> tuple[int, int] | None:
    return None if not position else (int(position.get("epoch") or 0), int(position.get("step") or 0))


def start_position(attempt: dict[str, Any]) -> tuple[int, int]:
    """The saved position an attempt started from (older records: their `epochs_at_start`)."""
    return _key(attempt.get("position_at_start")) or (int(attempt.get("epochs_at_start") or 0), 0)


def end_position(attempt: dict[str, Any]) -> tuple[int, int] | None:
    """The saved position an attempt left (older records: their `epochs_done`); None when it never said (lost)."""
    if attempt.get("position"):
        return _key(attempt["position"])
    done = attempt.get("epochs_done")
    return None if done is None else (int(done), 0)


# Attempts that saved nothing without saying anything of the time limit: a preemption or scancel can come at any
# moment (twice in one epoch on a busy preemptible partition), so it neither counts nor breaks a count.
NEUTRAL = ("preempted", "cancelled")


def stalled_attempts(attempts: list[dict[str, Any]]) -> int:
    """How many of the last attempts ended on the time limit (`timeout`, or `lost`: killed outright, likeliest at the
    limit) without advancing the run's saved position, back to the last one that advanced it.

    An attempt that never recorded its end is judged by where the next one started; the last attempt without an
    end counts as stalled (it vanished). A preempted or cancelled attempt that saved nothing is skipped (NEUTRAL).
    A forced run that started over at epoch 0 made no progress either unless it saved something.
    """
    stalled = 0
    for i in range(len(attempts) - 1, -1, -1):
        attempt = attempts[i]
        if attempt.get("reason") in ("completed", "diverged"):
            break
        end = end_position(attempt)
        if end is None and i + 1 < len(attempts):
            end = start_position(attempts[i + 1])
        if end is not None and end > start_position(attempt):
            break
        if attempt.get("reason") not in NEUTRAL:
            stalled += 1
    return stalled


def process_age_s() -> float | None:
    """Seconds since this process started (from /proc: interpreter start-up and imports included); None where
    /proc cannot tell."""
    try:
        stat = Path("/proc/self/stat").read_text()
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime (after the command's parens)
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))


class StartupClock:
    """The seconds of each phase of an attempt before its first training step, in `phases` (the attempt's entry
    holds this very dict, so phases timed after the record is opened land in it too)."""

    def __init__(self, imports_s: float | None = None) -> None:
        self.t0 = time.perf_counter()
        self.phases: dict[str, float] = {}
        if imports_s is not None:
            self.phases["imports_s"] = round(imports_s, 3)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0)

    def add(self, name: str, seconds: float) -> None:
        key = f"{name}_s"
        self.phases[key] = round(self.phases.get(key, 0.0) + seconds, 3)


_first_run_in_process = True


def imports_s_once() -> float | None:
    """Process start → now, for the first run this process executes (its interpreter, imports and, in a job, the
    unpickling); None for a later run in the same process (a worker's next run, a test), which paid none of it."""
    global _first_run_in_process
    if not _first_run_in_process:
        return None
    _first_run_in_process = False
    return process_age_s()


class StepClock(Reporter):
    """Passes everything to `inner`, and times the training steps the engine reports (`Reporter.step`).

    `resume_s`: from `fit_started()` to the first epoch's start (the checkpoint read back, the optimizer built);
    `steps`: steps taken in this attempt; `step_s`: the mean step after the first (which pays warm-up), or the first
    one alone; `steps_per_epoch`: the epoch's step count. The engine reports a step once its losses are known
    (every step on CPU, in batches on a GPU); the times are a host's view, good for sizing a time limit.
    """

    def __init__(self, inner: Reporter, on_first_epoch: Callable[[], None] | None = None) -> None:
        self.inner = inner
        self.on_first_epoch = on_first_epoch  # start-up is over: told once, before the first step
        self.t_fit: float | None = None
        self.t_epoch: float | None = None
        self.t_first_epoch: float | None = None  # when training proper began: the end of start-up
        self.resume_s: float | None = None
        self.steps = 0
        self.steps_per_epoch: int | None = None
        self._t_first: float | None = None
        self._t_last: float | None = None
        self._first_s: float | None = None
        self.steps_after_first = 0
        self.slow_s = float(os.environ.get(SLOW_STEP_ENV) or 0.0)
        # Only a reporter that takes per-step losses gets them: defining `iteration` here would make the engine
        # build and pass each step's dict for nothing (kdbench.train.step_log asks whether it is overridden).
        if getattr(inner.iteration, "__func__", None) is not Reporter.iteration:
            self.iteration = inner.iteration  # type: ignore[method-assign]

    def fit_started(self) -> None:
        self.t_fit = time.perf_counter()

    def phase_start(self, label: str, total: int | None = None) -> None:
        now = time.perf_counter()
        if label.startswith("epoch "):
            if self.t_first_epoch is None:
                self.t_first_epoch = now
                self.resume_s = None if self.t_fit is None else now - self.t_fit
                if self.on_first_epoch is not None:
                    self.on_first_epoch()
            self.t_epoch, self.steps_per_epoch = now, total
        self.inner.phase_start(label, total)

    def step(self, n: int = 1, **info: Any) -> None:
        if self.slow_s and n > 0:
            time.sleep(self.slow_s * n)
        if n > 0 and self.t_epoch is not None:
            now = time.perf_counter()
            if self._t_first is None:
                self._first_s = (now - self.t_epoch) / n
                self._t_first = now
                self.steps_after_first = n - 1
            else:
                self.steps_after_first += n
            self._t_last = now
            self.steps += n
        self.inner.step(n, **info)

    @property
    def step_s(self) -> float | None:
        if self._t_first is not None and self._t_last is not None and self.steps_after_first > 0:
            return (self._t_last - self._t_first) / self.steps_after_first
        return self._first_s

    def phase_end(self, summary: dict[str, Any] | None = None) -> None:
        self.inner.phase_end(summary)

    def log(self, message: str) -> None:
        self.inner.log(message)

    def facts(self) -> dict[str, Any]:
        """What the attempt's entry keeps of its steps."""
        return {"steps": self.steps, "step_s": None if self.step_s is None else round(self.step_s, 4),
                "steps_per_epoch": self.steps_per_epoch}
