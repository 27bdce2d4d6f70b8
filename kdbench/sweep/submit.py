"""Submitting a sweep's plan through submitit.

One job per missing teacher, then every run as ONE job array that starts only after all teacher jobs ended
well (`--dependency=afterok:T1:T2`, `--kill-on-invalid-dep=yes` so a failed teacher cancels the array
instead of leaving it pending forever). With every teacher cached there is no teacher job and no dependency.

On the local executor (subprocesses of this machine) the teacher jobs run beside a few workers that each run
their share of the runs in turn, as many as the CPUs allow, since local jobs all start at once; a run whose
teacher is still being trained waits on the zoo's file lock. The debug executor runs everything in this
process, one after another. Which executor, and how it is built: kdbench.sweep.executors; the sweep file each
submission is appended to: kdbench.sweep.saved_sweep. submitit's files go to `<results>/submitit/<sweep_id>/`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from kdbench.core.errors import UserError
from kdbench.spec.paths import Paths
from kdbench.store.records import default_results_dir
from kdbench.sweep.chains import local_shares, parents
from kdbench.sweep.executors import make_executor
from kdbench.sweep.grid import Resources, SweepRun
from kdbench.sweep.jobs import RunJob, RunSequence, TeacherJob
from kdbench.sweep.node_fit import check_fits, default_cpus_per_task, node_cpu_counts
from kdbench.sweep.plan import Plan
from kdbench.sweep.saved_sweep import save_sweep
from kdbench.sweep.scheduler_errors import scheduler_refusal
from kdbench.teachers.zoo import default_zoo_dir


def absolute_paths(paths: Paths) -> Paths:
    """Results and zoo made absolute (jobs may start in another folder or on another node)."""
    results = Path(paths.results_dir) if paths.results_dir else default_results_dir()
    zoo = Path(paths.zoo_dir) if paths.zoo_dir else default_zoo_dir()
    data = str(Path(paths.data_root).expanduser().resolve()) if paths.data_root else None
    cache = str(Path(paths.cache_dir).expanduser().resolve()) if paths.cache_dir else None
    return Paths(str(results.expanduser().resolve()), str(zoo.expanduser().resolve()), data, cache)



@dataclass
class Submitted:
    """What one submission started; `jobs` holds submitit's Job objects (for waiting in this process)."""

    teacher_jobs: dict[str, Any]  # digest → Job
    run_jobs: dict[str, Any]  # run id → Job
    dependency: str | None
    record: dict[str, Any]  # the entry appended to the sweep file's "submissions"


def submit_plan(sweep: dict[str, Any], plan: Plan, *, force: bool = False) -> Submitted:
    """Submit the plan's teacher jobs and its run array, append the submission to the sweep and save it."""
    kind = sweep["executor"]
    folder = Path(sweep["folder"])
    resources = _fixed_threads(sweep, plan)  # before the folder: a refused request leaves nothing behind
    private_folder(folder)
    teacher_jobs: dict[str, Any] = {}
    run_jobs: dict[str, Any] = {}
    dependency = None
    what = "a teacher job"
    # sbatch's refusal is printed by submitit to stderr as well: keep it for the one-line error instead.
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured) if kind == "slurm" else contextlib.nullcontext():
            _submit_teachers(sweep, plan, kind, folder, resources, teacher_jobs)
            if teacher_jobs and kind == "slurm":
                dependency = "afterok:" + ":".join(str(j.job_id) for j in teacher_jobs.values())
            if plan.run_tasks:
                what = f"the array of {len(plan.run_tasks)} runs"
                run_jobs = _submit_runs(sweep, plan, kind, folder, resources, dependency, force)
    except submitit.core.utils.FailedJobError as e:
        _undo_submission(sweep, folder, [*teacher_jobs.values(), *run_jobs.values()])
        raise scheduler_refusal(str(e) or captured.getvalue(), resources, what) from None
    record = _submission_record(plan, kind, resources, teacher_jobs, run_jobs, dependency, force)
    sweep["submissions"].append(record)
    save_sweep(sweep)
    return Submitted(teacher_jobs, run_jobs, dependency, record)


def _fixed_threads(sweep: dict[str, Any], plan: Plan) -> Resources:
    """The sweep's resources, with SLURM's CPUs per task chosen once and written into the sweep; a request no
    node of the partition can hold is refused before anything is submitted."""
    resources = Resources(**sweep["resources"])
    if sweep["executor"] != "slurm":
        return resources
    node_cpus = node_cpu_counts(resources.partition)
    if resources.cpus_per_task is None:
        # Chosen once and kept in the sweep (saved only if the submission succeeds): a resumed run must get the
        # same threads, or its floating-point sums (and metrics) differ from an uninterrupted run's.
        resources = dataclasses.replace(
            resources, cpus_per_task=default_cpus_per_task(resources, len(plan.run_tasks) or 1, node_cpus))
        sweep["resources"]["cpus_per_task"] = resources.cpus_per_task
    check_fits(resources, resources.cpus_per_task or 1, node_cpus)
    return resources


def _submit_teachers(sweep: dict[str, Any], plan: Plan, kind: str, folder: Path, resources: Resources,
                     jobs: dict[str, Any]) -> None:
    """One job per teacher the plan trains, into `jobs` by zoo digest as each is submitted (so a refusal midway
    can undo those already in); on the debug executor they have trained on return."""
    for task in plan.teacher_tasks:
        executor = make_executor(kind, folder, resources, name=f"kdbench-teacher-{task.key.arch}")
        jobs[task.key.digest] = executor.submit(
            TeacherJob(task.config.to_dict(), sweep["paths"], threads=resources.cpus_per_task))
    if kind == "debug":  # in-process: train the teachers now, before the runs that need them
        for job in jobs.values():
            job.exception()


def _submission_record(plan: Plan, kind: str, resources: Resources, teacher_jobs: dict[str, Any],
                       run_jobs: dict[str, Any], dependency: str | None, force: bool) -> dict[str, Any]:
    """The entry a submission appends to the sweep file: its jobs, their dependency, what it skipped."""
    return {
        "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "force": force,
        "teacher_jobs": {d: {"job_id": str(j.job_id), "arch": t.key.arch, "label": t.label}
                         for (d, j), t in zip(teacher_jobs.items(), plan.teacher_tasks, strict=True)},
        "array_job": str(next(iter(run_jobs.values())).job_id).split("_")[0] if run_jobs and kind == "slurm"
        else None,
        "workers": sorted({str(j.job_id) for j in run_jobs.values()}) if kind == "local" else [],
        "dependency": dependency,
        "cpus_per_task": resources.cpus_per_task,
        "tasks": {rid: str(j.job_id) for rid, j in run_jobs.items()},
        "skipped": {r.run_id: why for r, why in plan.skipped},
    }


def private_folder(folder: Path) -> None:
    """Create submitit's folder (and its `submitit/` parent) readable and writable by this user only.

    submitit's job files are pickles that the job unpickles and runs: anyone who could replace one would run
    code as this user. The rest of the results folder may be shared; this part must not be.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if folder.stat().st_uid != os.getuid():
        raise UserError(f"submitit folder {folder} belongs to another user: its job pickles would run as you. "
                        "Use a results folder of your own (--results-dir)")
    for path in (folder.parent, folder):
        if path.stat().st_uid == os.getuid():
            path.chmod(0o700)


def _submit_runs(sweep: dict[str, Any], plan: Plan, kind: str, folder: Path, resources: Resources,
                 dependency: str | None, force: bool) -> dict[str, Any]:
    """Submit the plan's runs (one array on SLURM) and return run id → submitit Job."""
    executor = make_executor(kind, folder, resources, name=f"kdbench-sweep-{sweep['sweep_id']}",
                             dependency=dependency)
    calls = [RunJob(r.config.to_dict(), sweep["paths"], force=force, threads=resources.cpus_per_task,
                    timeout_min=resources.timeout_min) for r in plan.run_tasks]
    # A chain's stage waits for the stage before it when both are in this submission (kdbench.sweep.chains).
    parent_of = parents([r.run_id for r in plan.run_tasks], [r.config for r in plan.run_tasks])
    if kind == "local":
        return _submit_local_workers(executor, plan.run_tasks, calls, resources, parent_of)
    first = [i for i, r in enumerate(plan.run_tasks) if r.run_id not in parent_of]
    jobs: dict[int, Any] = {}
    if first:
        with executor.batch():  # one `sbatch --array` for every run that waits for no other run
            jobs.update({i: executor.submit(calls[i]) for i in first})
    for i, run in enumerate(plan.run_tasks):  # stages in chain order: each after its teacher run's job
        if run.run_id in parent_of:
            parent = next(j for j, r in enumerate(plan.run_tasks) if r.run_id == parent_of[run.run_id])
            stage_executor = make_executor(kind, folder, resources, name=f"kdbench-sweep-{sweep['sweep_id']}",
                                           dependency=f"afterok:{jobs[parent].job_id}" if kind == "slurm" else None)
            jobs[i] = stage_executor.submit(calls[i])
    if kind == "debug":
        for i in sorted(jobs):
            jobs[i].exception()  # runs it; unlike result(), never drops into pdb on failure
    return {r.run_id: jobs[i] for i, r in enumerate(plan.run_tasks)}


def _undo_submission(sweep: dict[str, Any], folder: Path, jobs: list[Any]) -> None:
    """After a refused submission: cancel what was already queued and drop submitit's files, so nothing of
    it remains for `status` or a `--resume` to count (the sweep file is only written after success)."""
    for job in jobs:
        with contextlib.suppress(Exception):
            job.cancel(check=False)
    if not sweep["submissions"]:  # a new sweep: its whole folder is this submission's
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            folder.parent.rmdir()  # `<results>/submitit` when no other sweep has files there
    else:
        for leftover in folder.glob(".submission_file_*.sh"):
            leftover.unlink(missing_ok=True)


def local_workers(n_runs: int, resources: Resources) -> int:
    """How many local workers: one per `cpus_per_task` CPUs of this machine, at most `array_parallelism`."""
    cpus = os.cpu_count() or 1
    return max(1, min(n_runs, resources.array_parallelism, cpus // (resources.cpus_per_task or cpus)))


def _submit_local_workers(executor: submitit.Executor, runs: list[SweepRun], calls: list[RunJob],
                          resources: Resources, parent_of: dict[str, str] | None = None) -> dict[str, Any]:
    n = local_workers(len(calls), resources)
    # round-robin (each worker gets a mix), a chain's stages in one worker, in order
    shares = local_shares([r.run_id for r in runs], parent_of or {}, n)
    run_jobs: dict[str, Any] = {}
    for share in shares:
        job = executor.submit(RunSequence([calls[i] for i in share]))
        run_jobs.update({runs[i].run_id: job for i in share})
    return run_jobs
