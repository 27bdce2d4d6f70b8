"""A sweep's state: each run's record combined with the state of its latest job.

The run record is the truth for finished runs (completed / diverged). While a job is queued or running it
decides (a requeued run's record may still say `interrupted` from its last attempt); a job that ended
without a completed record failed, unless the scheduler stopped it (cancelled, timed out, preempted): that
run is `interrupted` and `--resume` continues it from its checkpoint. This also reconciles a record left
`running` by a process killed before it could write. SLURM job states come from `squeue` (live jobs) and `sacct`
(finished ones); local jobs from submitit's result file and the controller process.

A pending SLURM job also has squeue's reason: one that never clears (kdbench.sweep.pending) makes the sweep
`stuck`, which ends `--wait` and is shown by `kdbench status` with the option to change.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from submitit.core.utils import JobPaths

from kdbench.core.errors import UserError
from kdbench.core.safe_load import RefusedPickle, load_plain_pickle
from kdbench.store.liveness import end_position, start_position
from kdbench.store.records import RunStore
from kdbench.sweep.grid import Resources
from kdbench.sweep.job_errors import job_error_line
from kdbench.sweep.node_fit import PartitionNodes, partition_nodes
from kdbench.sweep.pending import StuckJob, never_clears
from kdbench.sweep.saved_sweep import latest_jobs

STATES = ("pending", "running", "completed", "failed", "diverged", "interrupted")
_PENDING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "SUSPENDED", "RESV_DEL_HOLD"}
_RUNNING = {"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT", "RESIZING", "STOPPED"}
_ENDED_BADLY = {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
                "DEADLINE", "REVOKED"}
_STOPPED = {"CANCELLED", "TIMEOUT", "PREEMPTED", "DEADLINE"}  # the scheduler stopped it: resumable
# Seconds each scheduler query may take: `status` must answer within a few seconds when the controller is down.
QUERY_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class RunState:
    run_id: str
    label: str
    state: str  # one of STATES
    job_id: str | None
    job_state: str | None
    top1: float | None
    error: str | None
    reason: str | None = None  # why SLURM keeps its job pending (squeue's reason)
    attempts: tuple[dict[str, Any], ...] = ()  # each attempt's progress (attempt_progress), oldest first


@dataclass(frozen=True)
class SweepState:
    sweep_id: str
    executor: str
    runs: list[RunState]
    teachers: dict[str, tuple[str, str | None]]  # digest → (job id, job state)
    scheduler_note: str | None = None  # e.g. the controller is unreachable: job states are partial
    stuck: tuple[StuckJob, ...] = ()  # jobs pending for a reason that never clears

    def counts(self) -> dict[str, int]:
        c = Counter(r.state for r in self.runs)
        return {s: c.get(s, 0) for s in STATES}

    @property
    def active(self) -> bool:
        teacher_busy = any(state in _PENDING | _RUNNING for _, state in self.teachers.values())
        # A run whose record completed may still have its job returning: wait for the job too.
        return teacher_busy or any(r.state in ("pending", "running") or r.job_state in _PENDING | _RUNNING
                                   for r in self.runs)

    def in_flight(self) -> dict[str, str]:
        """Run id → job id of runs whose job is still queued or running."""
        return {r.run_id: r.job_id for r in self.runs
                if r.job_id and r.job_state in _PENDING | _RUNNING}


# ---------------------------------------------------------------------------------------------------------
# Job states


def _expand_array(spec: str) -> list[int]:
    """`"[0-3,5%2]"` → [0, 1, 2, 3, 5] (sacct/squeue's notation for array tasks not yet split)."""
    out: list[int] = []
    for part in spec.strip("[]").split("%")[0].split(","):
        lo, dash, hi = part.partition("-")
        if lo.isdigit():
            out.extend(range(int(lo), int(hi) + 1) if dash and hi.isdigit() else [int(lo)])
    return out


def _parse_states(lines: str, reasons: dict[str, str] | None = None) -> dict[str, str]:
    """Job id → state from `JOBID|STATE[|REASON]` lines (squeue or sacct); a pending job's reason (squeue's
    `%r`, e.g. `PartitionConfig`) goes into `reasons`."""
    out: dict[str, str] = {}
    for line in lines.splitlines():
        job, _, rest = line.strip().partition("|")
        state, _, reason = rest.partition("|")
        if not job or not state:
            continue
        state = state.split()[0].rstrip("+")  # "CANCELLED by 0" → CANCELLED
        m = re.fullmatch(r"(\d+)_(\[.*\])", job)
        ids = [f"{m.group(1)}_{i}" for i in _expand_array(m.group(2))] if m else [job]
        for job_id in ids:
            if m and job_id in out:
                continue  # a task listed on its own line already
            out[job_id] = state
            if reasons is not None:
                reasons.pop(job_id, None)
                if state == "PENDING" and reason.strip() not in ("", "None"):
                    reasons[job_id] = reason.strip()
    return out


def controller_unreachable(timeout_s: float = QUERY_TIMEOUT_S) -> str | None:
    """Why the SLURM controller cannot be asked now (None when `scontrol ping` says it is up)."""
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return f"`scontrol ping` got no answer in {timeout_s:g}s"
    except OSError as e:
        return f"`scontrol ping` could not run ({e})"
    if ping.returncode == 0 and " UP" in ping.stdout:
        return None
    first = (ping.stdout.strip() or ping.stderr.strip()).splitlines()[:1]
    return first[0] if first else "no controller"


def slurm_job_states(job_ids: list[str], notes: list[str] | None = None,
                     reasons: dict[str, str] | None = None) -> dict[str, str]:
    """SLURM state of each job id (`123` or an array task `123_4`); unknown ids are left out.

    With the controller down, squeue is skipped (it would retry for many seconds) and sacct, served by
    slurmdbd, answers alone; `notes` receives one line saying so. `reasons` receives squeue's reason of each
    pending job.
    """
    if not job_ids:
        return {}
    wanted = set(job_ids)
    states: dict[str, str] = {}
    down = controller_unreachable()
    if down is not None and notes is not None:
        notes.append(f"SLURM controller unreachable ({down}): job states from accounting (sacct) where it "
                     "answers, else from the run records")
    try:  # live jobs first: squeue knows them the moment they are submitted
        if down is None:
            q = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T|%r"], capture_output=True, text=True,
                               timeout=QUERY_TIMEOUT_S * 3)
            live_reasons: dict[str, str] = {}
            states.update({k: v for k, v in _parse_states(q.stdout, live_reasons).items() if k in wanted})
            if reasons is not None:
                reasons.update({k: v for k, v in live_reasons.items() if k in wanted})
    except (OSError, subprocess.SubprocessError):
        pass
    missing = wanted - set(states)
    if missing:
        bases = sorted({j.split("_")[0] for j in missing})
        try:
            a = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(bases)],
                               capture_output=True, text=True, timeout=QUERY_TIMEOUT_S)
            found = _parse_states(a.stdout)
            states.update({k: found[k] for k in missing if k in found})
            # An array cancelled before any task started is one line of its base id (`123|CANCELLED by 0`).
            states.update({k: found[k.split("_")[0]] for k in missing
                           if k not in found and "_" in k and k.split("_")[0] in found})
        except (OSError, subprocess.SubprocessError):
            if notes is not None and down is not None:
                notes[-1] = f"SLURM unreachable ({down}; sacct got no answer either): states from the run records"
    return states


def _pid_alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    m = re.search(r"^State:\s*(\S)", status, re.M)
    return bool(m) and m.group(1) != "Z"


def local_job_states(folder: Path, job_ids: list[str]) -> dict[str, str]:
    """Local executor: job ids are the controller's pid; its result file says how the job ended.

    The result file is a pickle in the results folder, which others may be able to write: it is read with an
    unpickler that imports nothing (kdbench's jobs return only plain values), never with `pickle.load`, and only
    for a job id that is a pid, so the path stays inside the sweep's own submitit folder.
    """
    states: dict[str, str] = {}
    for job_id in job_ids:
        if not job_id.isdigit():  # local job ids are pids; anything else is not a job of ours
            continue
        result = JobPaths(folder, job_id, task_id=0).result_pickle
        if result.exists():
            try:
                outcome = load_plain_pickle(result)[0]
            except RefusedPickle:  # not a result our job wrote: a failed job, whatever it claims
                states[job_id] = "FAILED"
                continue
            except Exception:  # noqa: BLE001 - a file being written: look again next time
                continue
            states[job_id] = "COMPLETED" if outcome == "success" else "FAILED"
        elif _pid_alive(int(job_id)):
            states[job_id] = "RUNNING"
        else:
            states[job_id] = "FAILED"  # the controller is gone without a result
    return states


def job_states(sweep: dict[str, Any], job_ids: list[str], notes: list[str] | None = None,
               reasons: dict[str, str] | None = None) -> dict[str, str]:
    if sweep["executor"] == "slurm":
        return slurm_job_states(job_ids, notes, reasons)
    if sweep["executor"] == "local":
        return local_job_states(Path(sweep["folder"]), job_ids)
    return {}  # debug: jobs ran in the submitting process; the records say it all


# ---------------------------------------------------------------------------------------------------------
# Run states


def combine(record_status: str | None, job_state: str | None, has_job: bool) -> str:
    """One run's state from its record's status and its latest job's state."""
    if record_status in ("completed", "diverged"):
        return record_status
    if job_state in _PENDING:
        return "pending"
    if job_state in _RUNNING:
        return "running"
    if job_state in _STOPPED and record_status in ("running", "interrupted"):
        return "interrupted"  # the scheduler stopped it (a record left `running` was killed before it wrote)
    if job_state in _ENDED_BADLY or job_state == "COMPLETED" or record_status == "failed":
        return "failed"  # a job that ended without a completed record failed, whatever SLURM says
    if record_status in ("running", "interrupted"):
        return record_status  # no job state (e.g. the scheduler is unreachable): what the record knows
    return "pending" if has_job else "failed"


def teacher_state(job_state: str | None) -> str | None:
    """A teacher job's state in the run vocabulary (None when unknown, e.g. the debug executor)."""
    if job_state == "COMPLETED":
        return "completed"
    if job_state in _PENDING:
        return "pending"
    if job_state in _RUNNING:
        return "running"
    return "failed" if job_state in _ENDED_BADLY else None


def attempt_progress(record: dict[str, Any] | None) -> tuple[dict[str, Any], ...]:
    """Each attempt of a run: its job, why it ended, the saved position (`{"epoch", "step"}`) it started from and
    reached (None while it runs or if it vanished), its start-up seconds, and the steps it took and their time."""
    out = []
    for attempt in (record or {}).get("attempts") or []:
        start, end = start_position(attempt), end_position(attempt)
        out.append({"job_id": attempt.get("job_id"), "reason": attempt.get("reason"),
                    "from": {"epoch": start[0], "step": start[1]},
                    "to": None if end is None else {"epoch": end[0], "step": end[1]},
                    "startup_s": attempt.get("startup_s"), "steps": attempt.get("steps"),
                    "step_s": attempt.get("step_s")})
    return tuple(out)


def sweep_state(sweep: dict[str, Any]) -> SweepState:
    store = RunStore(sweep["paths"]["results_dir"])
    run_jobs, teacher_jobs = latest_jobs(sweep)
    notes: list[str] = []
    reasons: dict[str, str] = {}
    states = job_states(sweep, [*run_jobs.values(), *teacher_jobs.values()], notes, reasons)
    runs = []
    for entry in sweep["runs"]:
        rid = entry["run_id"]
        try:
            record, unreadable = store.load(rid), None
        except UserError as e:  # a colleague's folder linked out of the results, a broken record: say it, go on
            record, unreadable = None, str(e)
        job_id = run_jobs.get(rid)
        job_state = states.get(job_id) if job_id else None
        status = record["status"] if record else None
        if job_state == "RUNNING" and record is None and sweep["executor"] == "local":
            job_state = "PENDING"  # its local worker is busy with an earlier run of its share
        metrics = (record or {}).get("metrics") or {}
        pair = f"{entry['teacher']} → {entry['student']}" if entry["teacher"] else entry["student"]
        runs.append(RunState(
            run_id=rid, label=f"{entry['method']} {pair} {entry['dataset']} s{entry['seed']}",
            state=combine(status, job_state, job_id is not None),
            job_id=job_id, job_state=job_state, top1=metrics.get("top1_last"),
            error=unreadable or (record or {}).get("error") or _error_without_record(sweep, record, job_id, job_state),
            reason=reasons.get(job_id) if job_id else None,
            attempts=attempt_progress(record),
        ))
    teachers = {d: (j, states.get(j)) for d, j in teacher_jobs.items()}
    return SweepState(sweep["sweep_id"], sweep["executor"], runs, teachers, notes[0] if notes else None,
                      stuck_jobs(reasons, Resources(**sweep["resources"])))


def _error_without_record(sweep: dict[str, Any], record: dict[str, Any] | None, job_id: str | None,
                          job_state: str | None) -> str | None:
    """A failed job's error from its log, for a run it refused before writing a record (none to read it from)."""
    if record is not None or not job_id or job_state not in _ENDED_BADLY:
        return None
    return job_error_line(sweep["folder"], job_id)


def stuck_jobs(reasons: dict[str, str], resources: Resources) -> tuple[StuckJob, ...]:
    """The jobs whose pending reason never clears, each with the option to change."""
    known: list[PartitionNodes | None] = []

    def nodes() -> PartitionNodes | None:  # one sinfo call, and only when a reason needs it
        if not known:
            known.append(partition_nodes(resources.partition))
        return known[0]

    stuck = []
    for job_id, reason in sorted(reasons.items()):
        fix = never_clears(reason, resources, nodes)
        if fix is not None:
            stuck.append(StuckJob(job_id, reason, fix))
    return tuple(stuck)


def cancel_jobs(job_ids: list[str]) -> bool:
    """scancel the jobs; whether scancel accepted them."""
    try:
        return subprocess.run(["scancel", *job_ids], capture_output=True, text=True,
                              timeout=QUERY_TIMEOUT_S * 3).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def wait_for_sweep(sweep: dict[str, Any], on_update: Callable[[SweepState], None] | None = None,
                   poll_s: float = 2.0, timeout_s: float | None = None) -> SweepState:
    """Poll until no job of the sweep is queued or running, or one is pending for a reason that never clears
    (`state.stuck`); `on_update` sees every poll."""
    start = time.monotonic()
    while True:
        state = sweep_state(sweep)
        if on_update is not None:
            on_update(state)
        if not state.active or state.stuck:
            return state
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            return state
        time.sleep(poll_s)


def env_poll_s() -> float:
    """Polling period of `--wait` (KDBENCH_POLL_S; tests use a short one)."""
    return float(os.environ.get("KDBENCH_POLL_S", "5"))
