"""The callables a sweep submits: one per run (an array task) and one per missing zoo teacher.

Both are `submitit.helpers.Checkpointable`: on preemption or timeout submitit calls `checkpoint()`, pickles the
returned DelayedSubmission and requeues the job; the requeued job calls the object again. A run job then calls
`kdbench.execute.runner.execute` again, which resumes from the run's `checkpoint.pt` (the engine saves one every epoch
and reseeds every epoch from (seed, epoch); a signal during an epoch saves the step in progress first, and the
requeued job continues at the next step: kdbench.sweep.signals), so the final metrics equal an uninterrupted
run's. A teacher job resumes from the zoo entry's work checkpoint the same way.

Configs travel as plain dicts (`RunConfig.to_dict()`), so a pickle stays loadable when kdbench's classes
change between submission and start.
"""

from __future__ import annotations

import os
from typing import Any

import submitit

from kdbench.core.progress import LineReporter, Reporter
from kdbench.spec.config import RunConfig


def _reporter() -> Reporter:
    # Plain lines (one per epoch) in the job's log file, not progress bars.
    return LineReporter()


def _set_threads(threads: int | None) -> None:
    """Match torch's threads to the CPUs the job was given (a 1-CPU SLURM task still sees every core)."""
    import torch

    from kdbench.core.environment import configure_threads

    configure_threads()  # from the allocation under SLURM
    if threads and not os.environ.get("SLURM_JOB_ID"):
        torch.set_num_threads(threads)  # local executor: processes share the machine


def _global_rank() -> int:
    try:
        return submitit.JobEnvironment().global_rank
    except RuntimeError:  # called outside a submitit job (tests, a plain call)
        return 0


class RunJob(submitit.helpers.Checkpointable):
    """One sweep run: `kdbench.execute.runner.execute(config)`; the record in `<results>/runs/<run_id>/` is the
    output."""

    def __init__(self, config: dict[str, Any], paths: dict[str, Any], *, force: bool = False,
                 threads: int | None = None, timeout_min: float | None = None) -> None:
        self.config = config
        self.paths = paths
        self.force = force
        self.threads = threads
        self.timeout_min = timeout_min

    @property
    def run_id(self) -> str:
        return RunConfig.from_dict(self.config).run_id

    def __call__(self) -> dict[str, Any] | None:
        from kdbench.execute.runner import execute
        from kdbench.spec.paths import Paths

        world = self.config.get("world_size", 1)
        if world > 1:  # every task is one rank of the run (kdbench.core.distributed)
            return self._as_rank()
        # A one-process run in a job of several tasks: only rank 0 trains (the others would race on its record).
        if _global_rank() != 0:
            return None
        from kdbench.sweep.signals import defer_checkpoint_signal, install_sigterm_handler
        from kdbench.sweep.time_limits import signal_delay_s

        if os.environ.get("SLURM_JOB_ID"):  # not in the debug executor's own process: it must still die on SIGTERM
            install_sigterm_handler()
            # submitit's USR2 handler: after the step in progress is saved, or half the warning's lead at most
            defer_checkpoint_signal(wait_s=signal_delay_s(self.timeout_min or 60) / 2)
        _set_threads(self.threads)
        config = RunConfig.from_dict(self.config)
        reporter = _reporter()
        reporter.log(f"run {config.run_id}: {config.method} {config.teacher or '-'} -> {config.student} "
                     f"{config.dataset} seed {config.seed} (restart {os.environ.get('SLURM_RESTART_COUNT', 0)})")
        record = execute(
            config,
            Paths.from_dict(self.paths),
            device=self.paths.get("device", "auto"), force=self.force, reporter=reporter,
            teacher_cache=self.paths.get("teacher_cache", "on"),
            checkpoint_every_steps=self.paths.get("checkpoint_every_steps", 0),
        )
        return {"run_id": record["run_id"], "status": record["status"], "metrics": record.get("metrics")}

    def _as_rank(self) -> dict[str, Any]:
        """One rank of a data-parallel run: join the job's process group (rank, world size and master address
        from submitit's JobEnvironment), train, leave. Rank 0 logs and writes; a requeue resumes every rank
        from rank 0's checkpoint."""
        from kdbench.core import distributed
        from kdbench.core.environment import resolve_device
        from kdbench.core.progress import NULL_REPORTER
        from kdbench.execute.runner import execute
        from kdbench.spec.paths import Paths
        from kdbench.sweep.signals import install_sigterm_handler

        if os.environ.get("SLURM_JOB_ID"):
            install_sigterm_handler()
        _set_threads(self.threads)
        config = RunConfig.from_dict(self.config)
        device = distributed.init_from_submitit(resolve_device(self.paths.get("device", "auto")), config.run_id)
        try:
            record = execute(
                config,
                Paths.from_dict(self.paths),
                device=str(device), force=self.force, reporter=_reporter() if distributed.is_main() else NULL_REPORTER,
                teacher_cache=self.paths.get("teacher_cache", "on"),
            )
        finally:
            distributed.shutdown()
        return {"run_id": record["run_id"], "status": record["status"], "metrics": record.get("metrics")}

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission | None:
        """On the time limit's warning or a preemption: requeue, unless this attempt and the one before it both
        ended on the time limit where the run already was (kdbench.store.liveness; a preemption does not count):
        then the run stops as `failed` with one line saying what the last attempt spent and the --timeout-min that
        would let it progress.

        The engine already saved the last finished epoch, or (the signal came during an epoch's steps: called
        after the step in progress, kdbench.sweep.signals.defer_checkpoint_signal) that step; the requeued call
        resumes from it. The count comes from the run's attempt records, not from this object: an attempt killed
        outright (no checkpoint call) counts too. A forced run must not start over again after a preemption.
        Returning None tells submitit not to requeue.
        """
        from kdbench.store import attempts
        from kdbench.store.liveness import STALLED_ATTEMPTS_TO_FAIL
        from kdbench.store.records import RunStore
        from kdbench.sweep.signals import warning_reason
        from kdbench.sweep.stalls import stall_line

        timeout_min = getattr(self, "timeout_min", None) or 60
        reason = warning_reason()
        store = RunStore(self.paths.get("results_dir"))
        stalled, spent = attempts.stalled_so_far(store, self.run_id, reason)
        if stalled >= STALLED_ATTEMPTS_TO_FAIL:
            attempts.give_up(stall_line(stalled, reason, spent, timeout_min), store, self.run_id)
            return None
        attempts.interrupt(reason)
        self.force = False
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


class TeacherJob(submitit.helpers.Checkpointable):
    """Train the zoo teacher of `config` (the teacher of one of the sweep's runs) unless it is cached."""

    def __init__(self, config: dict[str, Any], paths: dict[str, Any], *, threads: int | None = None) -> None:
        self.config = config
        self.paths = paths
        self.threads = threads

    def __call__(self) -> dict[str, Any] | None:
        from kdbench.core.environment import resolve_device
        from kdbench.execute.build import load_teacher_data, teacher_key
        from kdbench.execute.model_probe import check_teacher_takes_data
        from kdbench.teachers.zoo import TeacherZoo
        from kdbench.train.engine import EngineSettings

        if _global_rank() != 0:
            return None
        config = RunConfig.from_dict(self.config)
        if config.portable:  # before anything computes; a portable teacher is trained as the run would train it
            from kdbench.core.cpu_numerics import configure_portable

            configure_portable()
        else:
            _set_threads(self.threads)
        key = teacher_key(config)
        reporter = _reporter()
        data = load_teacher_data(config, self.paths.get("data_root"))  # what the key says, never the student's
        settings = EngineSettings(resolve_device(self.paths.get("device", "auto")), amp=config.amp,
                                  channels_last=config.channels_last, compile=config.compile,
                                  compile_mode=config.compile_mode or "default")  # a compiled key: compiled
        zoo = TeacherZoo(self.paths.get("zoo_dir"), reporter)
        check_teacher_takes_data(zoo, key, data)  # the job's log: one line, not timm's traceback from training
        _, card = zoo.get_or_train(key, data, settings)
        return {"arch": key.arch, "dataset": key.dataset, "digest": key.digest, "top1": card.get("top1"),
                "cached": card.get("cached"), "path": card.get("path")}

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


class RunSequence(submitit.helpers.Checkpointable):
    """Several runs one after another in one job: the local executor's worker.

    The local executor starts every job at once, so a sweep of 30 runs would start 30 trainings on one machine;
    instead each of a few workers takes its share of the runs. A failed run does not stop the others; the job
    fails at the end if any run failed. On a requeue, runs already completed return their stored record.
    """

    def __init__(self, runs: list[RunJob]) -> None:
        self.runs = runs

    def __call__(self) -> list[dict[str, Any] | None]:
        out: list[dict[str, Any] | None] = []
        failed: list[str] = []
        for run in self.runs:
            try:
                out.append(run())
            except Exception as e:  # noqa: BLE001 - the record holds the traceback; go on with the next run
                failed.append(f"{run.run_id} ({type(e).__name__}: {e})")
                out.append(None)
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(self.runs)} runs failed: " + "; ".join(failed))
        return out

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        for run in self.runs:
            run.force = False
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)
