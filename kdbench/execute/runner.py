"""`execute(config)`: one distillation run from its resolved config to a stored record (the public `run()` that
resolves options into that config, and launches data-parallel processes, is kdbench.execute.api).

dataset → teacher (zoo or user checkpoint) → method (student + losses) → engine → evaluator → record. The run's
pieces are built by kdbench.execute.build, its lock is kdbench.execute.locks', its record is assembled by
kdbench.store.record_builder; this module runs them: the checks before any record is written, the engine with its
callbacks, the record of how it ended.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from kdbench.core import distributed
from kdbench.core.cpu_numerics import check_native_possible, configure_portable, portable_threads
from kdbench.core.environment import configure_determinism, configure_threads, resolve_device
from kdbench.core.errors import RunDiverged, UserError
from kdbench.core.progress import NULL_REPORTER, Reporter
from kdbench.data.registry import DataSplits
from kdbench.execute.build import (
    Loaders,
    build_distiller,
    build_loaders,
    load_data,
    load_given_teacher,
    load_teacher_data,
    student_model_facts,
    teacher_key,
)
from kdbench.execute.folders import check_run_folders
from kdbench.execute.locks import world_run_lock
from kdbench.execute.model_probe import check_run_models
from kdbench.execute.resolve import RunOptions, TeacherCheckpoint
from kdbench.spec.config import RunConfig
from kdbench.spec.paths import Paths
from kdbench.store import attempts, exports
from kdbench.store.fingerprint import code_fingerprint
from kdbench.store.liveness import StartupClock, StepClock, imports_s_once
from kdbench.store.record_builder import (
    attempt_blocks,
    completed_blocks,
    evaluation_blocks,
    new_record,
    now,
    served_block,
    teacher_block,
)
from kdbench.store.records import RunStore
from kdbench.teachers.output_cache import default_cache_dir, open_run_cache
from kdbench.teachers.zoo import TeacherZoo
from kdbench.train.compile import use_inductor_cache
from kdbench.train.engine import Engine, EngineSettings, FitCallbacks, FitResult
from kdbench.train.evaluate import inference_time_per_image
from kdbench.train.method import Distiller
from kdbench.train.metric_logs import check_backends, metric_logs

# Inference time per image is measured at this batch size (stated in every record) unless overridden.
INFER_BATCH_SIZE = 256


@dataclass(frozen=True)
class ExecuteOptions:
    """What :func:`execute` is asked beyond the config and its folders; none of it changes the run's numbers."""

    infer_batch_size: int = INFER_BATCH_SIZE
    keep_checkpoint: bool = False
    log: tuple[str, ...] = ()  # logging backends (kdbench.train.metric_logs)
    teacher_cache: str = "on"  # "on"|"off": the teacher-output cache under Paths.cache_dir
    # Keep an in-memory set (digits, CIFAR, STL-10) on the GPU the run trains on: None = when it fits
    # (kdbench.data.loaders.keep_on_device, or $KDBENCH_DATA_ON_DEVICE). The same numbers either way.
    data_on_device: bool | None = None


@dataclass(frozen=True, eq=False)
class _PreparedRun:
    """A run made ready by :func:`execute` before it takes the run's lock: its data opened, its given teacher
    loaded, the process configured."""

    config: RunConfig
    paths: Paths
    data: DataSplits
    given_teacher: tuple[torch.nn.Module, dict[str, Any]] | None  # the user's file or another run's student
    settings: EngineSettings
    store: RunStore
    reporter: Reporter
    options: ExecuteOptions
    threads: dict[str, Any]  # what configure_threads() chose
    determinism: dict[str, Any]
    startup: StartupClock  # the seconds of this attempt's start-up phases (the attempt's entry holds them)


@dataclass(frozen=True, eq=False)
class Distillation:
    """Everything one distillation needs, gathered under the run's lock: the run, its teacher, its record (filled
    in as the run goes) and the time already spent."""

    run: _PreparedRun  # (an attribute: the name `run` stays free for run())
    teacher: torch.nn.Module | None
    record: dict[str, Any]
    t_start: float  # time.perf_counter() when this attempt began
    teacher_s: float  # seconds spent getting the teacher

    @property
    def config(self) -> RunConfig:
        return self.run.config

    @property
    def settings(self) -> EngineSettings:
        return self.run.settings

    @property
    def run_id(self) -> str:
        return self.run.config.run_id

    @property
    def run_dir(self) -> Path:
        return self.run.store.run_dir(self.run_id)


def execute(
    config: RunConfig,
    paths: Paths | None = None,
    *,
    device: str = "auto",
    force: bool = False,
    reporter: Reporter = NULL_REPORTER,
    checkpoint_interval_s: float = 0.0,
    infer_batch_size: int = INFER_BATCH_SIZE,
    teacher_ckpt: TeacherCheckpoint | str | Path | None = None,
    strict: bool = False,
    keep_checkpoint: bool = False,
    log: Sequence[str] = (),
    teacher_cache: str = "on",
    deterministic: bool = True,
    run_locked: bool = False,
    data_on_device: bool | None = None,
    checkpoint_every_steps: int = 0,
) -> dict[str, Any]:
    """Run `config` to completion (resuming from its checkpoint if one exists) and return its record.

    A completed record of the same config is returned as it is unless `force`. `teacher_ckpt` is the user's
    teacher file when `config.teacher_ckpt_sha256` is set (its sha256 must match; a :class:`TeacherCheckpoint`
    carries the digest already computed, so the file is not hashed again). A checkpoint the safe loader refuses
    restarts the run from scratch with a warning, or with `strict` stops it (UnusableCheckpointError).
    A completed run keeps its student exports (kdbench.store.exports); its resumable `checkpoint.pt` is removed unless
    `keep_checkpoint`. `log` names logging backends (kdbench.train.metric_logs) that receive its curves.
    `teacher_cache` "on" reads and fills the teacher-output cache under `paths.cache_dir`
    (kdbench.teachers.output_cache; the same numbers as "off").
    `deterministic` (environment.configure_determinism): cuDNN autotuning off and deterministic kernels on a GPU.
    `data_on_device` (:class:`ExecuteOptions`): keep an in-memory set on the GPU, or not; None decides by its size.
    `checkpoint_every_steps` N > 0: also save a step-level checkpoint every N optimizer steps inside an epoch (a
    resumed run continues at that step with the same numbers); 0: at epoch ends (and on a stop signal) only.

    The data and a user's teacher file are opened before any record is written: a mistake there (a missing or
    unreadable file) leaves no record behind. The run itself holds a per-run lock: a second process asking for
    the same run id waits, then returns the finished record, or resumes from the checkpoint if the first died.
    `run_locked`: the caller holds that lock already (the launcher of a `--nproc` run, for all its processes).
    """
    _check_steps(checkpoint_every_steps)
    clock = StartupClock(imports_s_once())  # what this attempt spends before its first step, phase by phase
    paths = paths or Paths()
    store = RunStore(paths.results_dir)
    with clock.phase("checks"):
        check_code(config)
        existing = store.load(config.run_id)
        shown = stored_result(existing, force, reporter,
                               "already completed; showing the stored result (--force to rerun)")
        if shown is not None:
            return shown
        _check_before_writing(config, store, existing, log, reporter)
        check_run_folders(config, paths)  # results and zoo: not an OSError mid-run, nor a half-made run (issue #34)
    with clock.phase("configure"):
        dev = resolve_device(device)
        threads, determinism = _configure_process(config, dev, deterministic)
        settings = replace(_engine_settings(config, dev, checkpoint_interval_s, strict),
                           checkpoint_every_steps=checkpoint_every_steps)
        if config.compile:  # a sweep's runs on this machine reuse the kernels compiled once
            use_inductor_cache(Path(paths.cache_dir).expanduser() if paths.cache_dir else default_cache_dir())
    with clock.phase("data"), distributed.main_first():  # a dataset prepared on first use is prepared once
        data = load_data(config, paths.data_root)
    with clock.phase("model"):  # a model that cannot take the data: one line now, not a traceback mid-run
        check_run_models(config, data, paths.zoo_dir)
    with clock.phase("teacher"):
        given_teacher = load_given_teacher(config, teacher_ckpt, paths.results_dir, data, dev,
                                           zoo_dir=paths.zoo_dir, reporter=reporter,
                                           evaluated=_evaluated_teacher(existing, force, dev))
    prepared = _PreparedRun(config, paths, data, given_teacher, settings, store, reporter,
                            ExecuteOptions(infer_batch_size, keep_checkpoint, tuple(log), teacher_cache,
                                           data_on_device), threads, determinism, clock)
    lock_t0 = time.perf_counter()
    with world_run_lock(store, config.run_id, reporter, held=run_locked):
        clock.add("lock", time.perf_counter() - lock_t0)
        existing = store.load(config.run_id)  # finished by another process while this one waited for the lock
        shown = stored_result(existing, force, reporter, "completed by another process; showing its result")
        if shown is not None:
            return shown
        if force and distributed.is_main():
            store.checkpoint_path(config.run_id).unlink(missing_ok=True)
            exports.remove_exports(store.run_dir(config.run_id))
        return _execute_locked(prepared, existing=None if force else existing)


def _check_steps(every: int) -> None:
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        raise UserError(f"--checkpoint-every-steps {every!r}: expected a number of optimizer steps ≥ 0 (0: off)")


def _evaluated_teacher(existing: dict[str, Any] | None, force: bool, dev: torch.device) -> dict[str, Any] | None:
    """The teacher metrics an earlier attempt of this run recorded on a device of this type (a resumed run does
    not evaluate the same teacher file again: kdbench.teachers.zoo.load_teacher_checkpoint); None otherwise."""
    if existing is None or force or existing.get("status") == "completed":
        return None
    device = ((existing.get("environment") or {}).get("device") or {}).get("type")
    return existing.get("teacher_metrics") if device == dev.type else None


def stored_result(existing: dict[str, Any] | None, force: bool, reporter: Reporter, why: str) -> dict[str, Any] | None:
    """The stored record of a completed run, marked `cached`, with a line saying `why` it is shown; None when the
    run must (still, or with `force` again) be trained."""
    if existing is None or existing["status"] != "completed" or force:
        return None
    reporter.log(f"run {existing['run_id']} {why}")
    return {**existing, "cached": True}


def check_code(config: RunConfig) -> None:
    """A config resolved by other code (e.g. a sweep submitted before an edit) would store numbers of this code
    under the other code's run id: refused."""
    if config.code:
        current = code_fingerprint(config.method)["fingerprint"]
        if config.code != current:
            raise UserError(f"run {config.run_id} was resolved for code {config.code} of method '{config.method}', "
                            f"but the code is now {current}: resolve it again (rerun the command or resubmit the "
                            "sweep)")


def _check_before_writing(config: RunConfig, store: RunStore, existing: dict[str, Any] | None, log: Sequence[str],
                          reporter: Reporter) -> None:
    """What must be refused (or said) before anything is written."""
    check_backends(log)  # a mistyped option is refused before anything is written, the probe file included
    if existing is None:
        older = store.older_code_runs(config)
        if older:
            reporter.log(f"code changed since run {', '.join(older)}; training again under {config.run_id} "
                         "(the older record stays; `kdbench leaderboard --all-code` shows it)")


def _configure_process(config: RunConfig, dev: torch.device,
                       deterministic: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Kernels and threads for the run (before anything computes): what configure_threads() chose, and the
    determinism settings the record states."""
    if config.portable and dev.type != "cpu":
        raise UserError(f"--portable makes CPU numbers independent of the CPU; this run is on {dev}: use --device cpu")
    if config.portable:  # before anything computes: it works only then
        configure_portable()
    else:
        check_native_possible()
    threads = portable_threads(configure_threads()) if config.portable else configure_threads()
    return threads, {**configure_determinism(deterministic, dev), "portable": config.portable}


def _engine_settings(config: RunConfig, dev: torch.device, checkpoint_interval_s: float,
                     strict: bool) -> EngineSettings:
    if config.world_size > 1:
        distributed.check_world(config.world_size)
        distributed.per_rank_batch(config.recipe.batch_size, config.world_size)
        distributed.check_sync_bn(config.sync_bn, dev)
    return EngineSettings(dev, amp=config.amp, channels_last=config.channels_last,
                          checkpoint_interval_s=checkpoint_interval_s, strict_resume=strict,
                          param_groups=config.param_groups, world_size=config.world_size, sync_bn=config.sync_bn,
                          compile=config.compile, compile_mode=config.compile_mode or "default")


def _execute_locked(prepared: _PreparedRun, *, existing: dict[str, Any] | None) -> dict[str, Any]:
    """The run proper, under its lock. `existing` is the run's earlier record (an interrupted attempt's), whose
    attempt history the new record continues."""
    with prepared.startup.phase("record"):
        record = _new_record(prepared, existing)
    t_start = time.perf_counter()
    try:
        t0 = time.perf_counter()
        with prepared.startup.phase("teacher"):
            teacher = _teacher(prepared, record)
        return _distill(Distillation(prepared, teacher, record, t_start, teacher_s=time.perf_counter() - t0))
    except RunDiverged as e:
        record.update(status="diverged", divergence={"epoch": e.epoch, "step": e.step, "losses": e.losses})
        _write_ended(prepared.store, record, "diverged")
        return record
    except BaseException as e:
        reason = attempts.stop_reason(e)  # a time limit, preemption or scancel: `interrupted`, resumable
        record.update(status="interrupted" if reason in attempts.INTERRUPTIONS else "failed",
                      error=attempts.error_text(e), traceback=traceback.format_exc(limit=20)[-4000:])
        _write_ended(prepared.store, record, reason)
        raise
    finally:
        attempts.finish()


def _new_record(prepared: _PreparedRun, existing: dict[str, Any] | None) -> dict[str, Any]:
    """The attempt's record, written before training: the run's environment, threads and data."""
    record = {**new_record(prepared.config),
              **attempt_blocks(prepared.settings.device, prepared.threads, prepared.determinism, prepared.data)}
    same_run = existing is not None and existing.get("config") == record["config"]
    attempts.begin(record, existing if same_run else None, prepared.store, prepared.threads,  # sets started_at
                   prepared.startup)
    prepared.store.write(record)
    return record


def _write_ended(store: RunStore, record: dict[str, Any], reason: str) -> None:
    attempts.end(record, reason)
    record["finished_at"] = now()
    store.write(record)


def _teacher(prepared: _PreparedRun, record: dict[str, Any]) -> torch.nn.Module | None:
    """The run's teacher (the given one, or the zoo's, trained if missing), its facts in `record`; None when the
    method has none."""
    config = prepared.config
    if prepared.given_teacher is not None:
        teacher, card = prepared.given_teacher
    elif config.teacher is not None:
        zoo = TeacherZoo(prepared.paths.zoo_dir, prepared.reporter)
        # The teacher trains on what its key says (its recipe's augmentation, its own training data): the full
        # training split, not the student's fraction or validation hold-out, unless teacher_data says so.
        teacher_data = load_teacher_data(config, prepared.paths.data_root, prepared.data)
        with distributed.main_first():  # rank 0 trains a missing teacher (one process); the others load it
            teacher, card = zoo.get_or_train(teacher_key(config), teacher_data,
                                             replace(prepared.settings, world_size=1))
    else:
        return None
    record["teacher_metrics"] = teacher_block(card, teacher)
    return teacher


def _distill(d: Distillation) -> dict[str, Any]:
    """Build the method around a new student, train it, measure it, store its record and exports."""
    distiller = _build_distiller_with_cache(d)
    with d.run.startup.phase("loaders"):
        loaders = build_loaders(d.config, d.run.data, d.settings.device, on_device=d.run.options.data_on_device)
        d.record["data"]["served"] = served_block(loaders.train)
        d.record.update(evaluation_blocks(d.config, d.settings.device))
    fit, train_s = _fit(d, distiller, loaders)
    _complete_record(d, distiller, fit, train_s)
    return _store_completed(d, distiller.student)


def _build_distiller_with_cache(d: Distillation) -> Distiller:
    """The method around a new student, with the run's teacher-output cache (what the record says of it too)."""
    with d.run.startup.phase("model"):
        distiller = build_distiller(d.config, d.run.data, d.teacher)
    teacher_sha256 = (d.record.get("teacher_metrics") or {}).get("sha256")  # the weights the run loaded
    with d.run.startup.phase("cache"):
        distiller.teacher_cache, d.record["teacher_cache"] = open_run_cache(
            d.config, teacher_sha256, len(d.run.data.train), d.settings.device, d.run.options.teacher_cache,
            d.run.paths.cache_dir, d.run.reporter)
    return distiller


@dataclass(frozen=True, eq=False)
class RunCallbacks:
    """What the engine calls back during a run: the metrics kept on disk after each epoch, the best epoch's student
    exported as soon as it is the best. (The teacher-output cache's epoch hooks are the engine's to call.)"""

    store: RunStore
    run_id: str
    run_dir: Path
    distiller: Distiller

    def on_epoch_end(self, fit: FitResult) -> None:
        self.store.write_metrics(self.run_id, fit.history)

    def on_new_best(self, fit: FitResult) -> None:  # before the epoch's checkpoint: see FitCallbacks
        if distributed.is_main():
            exports.save_student(self.distiller.student, self.run_dir / exports.BEST, epoch=fit.best.epoch,
                                 run_id=self.run_id)


def _fit(d: Distillation, distiller: Distiller, loaders: Loaders) -> tuple[FitResult, float]:
    """Train (resuming from the run's checkpoint when it holds epochs); the fit and its seconds."""
    hooks = RunCallbacks(d.run.store, d.run_id, d.run_dir, distiller)
    callbacks = FitCallbacks(on_new_best=hooks.on_new_best, on_epoch_end=hooks.on_epoch_end)
    t0 = time.perf_counter()
    with metric_logs(d.run.options.log, d.run.reporter, d.run_dir / "logs", d.run_id,
                     d.record["config"]) as engine_reporter:
        # The attempt's steps and their seconds, for its entry; start-up's end written into the record at once.
        steps = StepClock(engine_reporter, on_first_epoch=attempts.startup_finished)
        attempts.training_started(steps)
        steps.fit_started()
        fit = Engine(d.settings, steps).fit(
            distiller, loaders.train, loaders.test, d.config.recipe, d.config.seed,
            checkpoint_path=d.run.store.checkpoint_path(d.run_id), val_loader=loaders.val, callbacks=callbacks,
        )
    return fit, time.perf_counter() - t0


def _inference_s_per_image(d: Distillation, distiller: Distiller) -> float:
    """Seconds per image of the trained model, timed on a batch of test images at the stated batch size."""
    test, batch = d.run.data.test, d.run.options.infer_batch_size
    example = torch.cat([test[i][0][None] for i in range(min(len(test), batch))])
    if example.shape[0] < batch:  # small test sets: tile to the stated batch size
        example = example.repeat((batch + example.shape[0] - 1) // example.shape[0], 1, 1, 1)
    return inference_time_per_image(distiller, example[:batch], d.settings.device, amp=d.settings.amp,
                                    channels_last=d.settings.channels_last)


def _complete_record(d: Distillation, distiller: Distiller, fit: FitResult, train_s: float) -> None:
    """The record of the completed run (kdbench.store.record_builder), its timing totalled over attempts."""
    per_image = _inference_s_per_image(d, distiller)
    extra_params = sum(p.numel() for n, p in distiller.named_parameters() if not n.startswith("student."))
    d.record.update(completed_blocks(
        fit, student=distiller.student, extra_params=extra_params,
        inference={"batch_size": d.run.options.infer_batch_size, "s_per_image": per_image,
                   "device": d.settings.device.type},
        timing={"teacher_s": d.teacher_s, "train_s": train_s, "total_s": time.perf_counter() - d.t_start,
                **({"compile": fit.compiled.describe()} if fit.compiled is not None else {})},
        device=d.settings.device, log=d.run.options.log, method_info=distiller.describe(),
        teacher_cache=d.record["teacher_cache"] if distiller.teacher_cache is None else
        distiller.teacher_cache.describe()))
    attempts.end(d.record, "completed")
    d.record["timing"] = attempts.totals(d.record, d.record["timing"])


def _store_completed(d: Distillation, student: torch.nn.Module) -> dict[str, Any]:
    """Rank 0 writes the student's exports and the record, then drops the resumable checkpoint unless kept."""
    record, store, keep_checkpoint = d.record, d.run.store, d.run.options.keep_checkpoint
    if not distributed.is_main():
        distributed.barrier()  # rank 0 writes exports and the record
        return record
    record["exports"] = {**exports.write_exports(d.run_dir, student, record=record,
                                                 model_facts=student_model_facts(d.config, d.run.data)),
                         "checkpoint_kept": keep_checkpoint}
    if "best" not in record["exports"]:
        d.run.reporter.log(f"run {d.run_id}: no file holds the best epoch's weights (the run began before "
                           "best-epoch exports); only the last epoch is exported")
    store.write(record)
    if not keep_checkpoint:  # after the record: a crash before this line resumes (all epochs done) and re-exports
        store.checkpoint_path(d.run_id).unlink(missing_ok=True)
    distributed.barrier()
    return record


__all__ = ["ExecuteOptions", "Paths", "RunOptions", "TeacherCheckpoint", "execute", "load_teacher_data"]
