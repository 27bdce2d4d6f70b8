"""`run()`: one distillation run from options to a stored record.

dataset → teacher (zoo or user checkpoint) → method (student + losses) → engine → evaluator → record.
"""

from __future__ import annotations

import resource
import shutil
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout

from kdbench.core import distributed
from kdbench.core.cpu_numerics import check_native_possible, configure_portable, cpu_info, portable_threads
from kdbench.core.environment import configure_determinism, configure_threads, environment, resolve_device
from kdbench.core.errors import RunDiverged, UserError
from kdbench.core.progress import NULL_REPORTER, LineReporter, Reporter
from kdbench.core.storage import check_writable
from kdbench.data.loaders import make_eval_loader, make_train_loader
from kdbench.data.registry import DataSplits, build_dataset, get_dataset_spec
from kdbench.data.subset import keep_train_fraction, train_fraction_of
from kdbench.data.validation import split_data_params
from kdbench.execute.resolve import RunOptions, TeacherCheckpoint, resolve_config, with_run_teacher, zoo_teacher_code
from kdbench.models.zoo import count_parameters, count_weight_layers
from kdbench.spec.config import RunConfig
from kdbench.store import attempts, exports
from kdbench.store.fingerprint import code_fingerprint
from kdbench.store.records import RunStore, new_record
from kdbench.teachers.output_cache import open_run_cache
from kdbench.teachers.zoo import TeacherKey, TeacherZoo, load_teacher_checkpoint, training_data
from kdbench.train.engine import Engine, EngineSettings, FitResult
from kdbench.train.evaluate import inference_time_per_image
from kdbench.train.method import MethodContext, get_method, method_params
from kdbench.train.metric_logs import check_backends, metric_logs

# Inference time per image is measured at this batch size (stated in every record) unless overridden.
INFER_BATCH_SIZE = 256


@dataclass
class Paths:
    results_dir: str | Path | None = None
    zoo_dir: str | Path | None = None
    data_root: str | Path | None = None
    cache_dir: str | Path | None = None  # the teacher-output cache (kdbench.teachers.output_cache)


def teacher_key(config: RunConfig) -> TeacherKey:
    """The zoo key of the run's teacher: its training data is the full training split unless the run asks for the
    information-matched control (`teacher_data.train_fraction`), never the student's `data.train_fraction`."""
    assert config.teacher is not None and config.teacher_recipe is not None
    own, val_fraction = split_data_params(config.data_params)
    return TeacherKey(
        arch=config.teacher, dataset=config.dataset, recipe=config.teacher_recipe, seed=config.teacher_seed,
        data_params=own, model_options=config.teacher_params,
        code=zoo_teacher_code(config.teacher_recipe),
        train_fraction=train_fraction_of(config.teacher_data), val_fraction=val_fraction,
        portable=config.portable,
    )


def load_teacher_data(config: RunConfig, data_root: str | Path | None, student: DataSplits | None = None) -> DataSplits:
    """The data the run's zoo teacher trains on (:func:`kdbench.teachers.zoo.training_data` of its key). The
    student's `data` is reused when it holds the very same samples (no validation split, the same fraction, the
    same augmentation), so a dataset is not read twice for nothing."""
    key = teacher_key(config)
    if student is not None and student.val is None and key.recipe.augment == config.recipe.augment \
            and key.train_fraction == train_fraction_of(config.data_params):
        return student
    return training_data(key, data_root)


def load_data(
    config: RunConfig, data_root: str | Path | None, augment: str | None = None, *, validation: bool = True
) -> DataSplits:
    """The run's data; with `validation` (the student's) the `data.val_fraction` split is held out of training
    and the training split cut to `data.train_fraction`, without it the full training split is returned (e.g.
    for its test split). What a zoo teacher trains on is :func:`load_teacher_data`'s."""
    spec = get_dataset_spec(config.dataset)
    own, val_fraction = split_data_params(config.data_params)
    params = spec.params.__class__(**own) if own else spec.params
    splits = build_dataset(config.dataset, params, data_root, augment or config.recipe.augment,
                           val_fraction=val_fraction if validation else 0.0)
    if not validation:
        return splits
    return keep_train_fraction(splits, train_fraction_of(config.data_params), int(getattr(params, "split_seed", 0)))


def student_model_facts(config: RunConfig, data: DataSplits) -> dict[str, Any]:
    """Everything `create_model` needs to build the run's student (what a student export's card records)."""
    spec = get_method(config.method)
    options = {**spec.cls.student_options(method_params(config), config.student), **config.student_params}
    return {"architecture": config.student, "num_classes": data.num_classes, "in_chans": data.in_chans,
            "image_size": data.image_size, "cifar_stem": config.recipe.cifar_stem, "options": options}


def build_student(config: RunConfig, data: DataSplits) -> torch.nn.Module:
    return exports.build_from_card(student_model_facts(config, data))


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
) -> dict[str, Any]:
    """Run `config` to completion (resuming from its checkpoint if one exists) and return its record.

    A completed record of the same config is returned as it is unless `force`. `teacher_ckpt` is the user's
    teacher file when `config.teacher_ckpt_sha256` is set (its sha256 must match; a :class:`TeacherCheckpoint`
    carries the digest already computed, so the file is not hashed again). A checkpoint the safe loader refuses
    restarts the run from scratch with a warning, or with `strict` stops it (UnusableCheckpointError).
    A completed run keeps its student exports (kdbench.store.exports); its resumable `checkpoint.pt` is removed unless
    `keep_checkpoint`. `log` names logging backends (kdbench.train.metric_logs) that receive its curves.
    `teacher_cache` "on" reads and fills the teacher-output cache under `paths.cache_dir`
    (kdbench.teachers.output_cache;
    the same numbers as "off").
    `deterministic` (environment.configure_determinism): cuDNN autotuning off and deterministic kernels on a GPU.

    The data and a user's teacher file are opened before any record is written: a mistake there (a missing or
    unreadable file) leaves no record behind. The run itself holds a per-run lock: a second process asking for
    the same run id waits, then returns the finished record, or resumes from the checkpoint if the first died.
    `run_locked`: the caller holds that lock already (the launcher of a `--nproc` run, for all its processes).
    """
    paths = paths or Paths()
    store = RunStore(paths.results_dir)
    run_id = config.run_id
    check_code(config)
    existing = store.load(run_id)
    if existing is not None and existing["status"] == "completed" and not force:
        reporter.log(f"run {run_id} already completed; showing the stored result (--force to rerun)")
        return {**existing, "cached": True}
    check_backends(log)  # a mistyped option is refused before anything is written, the probe file included
    check_writable(store.root / "runs", f"results dir {store.root}", "--results-dir")  # not an OSError mid-run
    if existing is None:
        older = store.older_code_runs(config)
        if older:
            reporter.log(f"code changed since run {', '.join(older)}; training again under {run_id} "
                         "(the older record stays; `kdbench leaderboard --all-code` shows it)")

    dev = resolve_device(device)
    if config.portable and dev.type != "cpu":
        raise UserError(f"--portable makes CPU numbers independent of the CPU; this run is on {dev}: use --device cpu")
    if config.portable:  # before anything computes: it works only then
        configure_portable()
    else:
        check_native_possible()
    threads = portable_threads(configure_threads()) if config.portable else configure_threads()
    determinism = {**configure_determinism(deterministic, dev), "portable": config.portable}
    if config.world_size > 1:
        distributed.check_world(config.world_size)
        distributed.per_rank_batch(config.recipe.batch_size, config.world_size)
        distributed.check_sync_bn(config.sync_bn, dev)
    settings = EngineSettings(dev, amp=config.amp, channels_last=config.channels_last,
                              checkpoint_interval_s=checkpoint_interval_s, strict_resume=strict,
                              param_groups=config.param_groups, world_size=config.world_size,
                              sync_bn=config.sync_bn)
    with distributed.main_first():  # a dataset prepared on first use is prepared once
        data = load_data(config, paths.data_root)
    user_teacher = _load_user_teacher(config, teacher_ckpt, data, dev) if config.teacher_ckpt_sha256 else \
        _load_run_teacher(config, paths.results_dir, data, dev) if config.teacher_run else None
    with world_run_lock(store, run_id, reporter, held=run_locked):
        existing = store.load(run_id)  # finished by another process while this one waited for the lock
        if existing is not None and existing["status"] == "completed" and not force:
            reporter.log(f"run {run_id} completed by another process; showing its result")
            return {**existing, "cached": True}
        if force and distributed.is_main():
            store.checkpoint_path(run_id).unlink(missing_ok=True)
            exports.remove_exports(store.run_dir(run_id))
        return _execute_locked(config, paths, data, user_teacher, settings, store, reporter, infer_batch_size,
                               existing=None if force else existing, threads=threads,
                               keep_checkpoint=keep_checkpoint, log=log, teacher_cache=teacher_cache,
                               determinism=determinism)


def check_code(config: RunConfig) -> None:
    """A config resolved by other code (e.g. a sweep submitted before an edit) would store numbers of this code
    under the other code's run id: refused."""
    if config.code:
        current = code_fingerprint(config.method)["fingerprint"]
        if config.code != current:
            raise UserError(f"run {config.run_id} was resolved for code {config.code} of method '{config.method}', "
                            f"but the code is now {current}: resolve it again (rerun the command or resubmit the "
                            "sweep)")


def _load_user_teacher(
    config: RunConfig, teacher_ckpt: TeacherCheckpoint | str | Path | None, data: DataSplits, dev: torch.device
) -> tuple[torch.nn.Module, dict[str, Any]]:
    ckpt = teacher_ckpt if isinstance(teacher_ckpt, TeacherCheckpoint) or teacher_ckpt is None \
        else TeacherCheckpoint.hash(teacher_ckpt)
    if ckpt is None or ckpt.sha256 != config.teacher_ckpt_sha256:
        raise UserError("this run's teacher is a user checkpoint: pass the same --teacher-ckpt file")
    assert config.teacher is not None
    return load_teacher_checkpoint(ckpt.path, config.teacher, data, dev, cifar_stem=config.recipe.cifar_stem,
                                   sha256=ckpt.sha256)


def _load_run_teacher(config: RunConfig, results_dir: str | Path | None, data: DataSplits,
                      dev: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The student of run `config.teacher_run` (its last-epoch export, checked against its card) as the teacher;
    the run must be completed and its student of the architecture the config names."""
    assert config.teacher is not None and config.teacher_run is not None
    path = exports.run_teacher_file(exports.RUN_TEACHER_PREFIX + config.teacher_run, results_dir)
    teacher, card = load_teacher_checkpoint(path, config.teacher, data, dev, cifar_stem=config.recipe.cifar_stem)
    if card.get("source") != exports.RUN_TEACHER_PREFIX + config.teacher_run or \
            exports.read_card(path.parent)["architecture"] != config.teacher:
        raise UserError(f"--teacher run:{config.teacher_run}: its export is not a {config.teacher} of that run")
    return teacher, card


def _execute_locked(
    config: RunConfig,
    paths: Paths,
    data: DataSplits,
    user_teacher: tuple[torch.nn.Module, dict[str, Any]] | None,
    settings: EngineSettings,
    store: RunStore,
    reporter: Reporter,
    infer_batch_size: int,
    *,
    existing: dict[str, Any] | None,
    threads: dict[str, Any],
    keep_checkpoint: bool = False,
    log: Sequence[str] = (),
    teacher_cache: str = "on",
    determinism: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The run proper, under its lock. `existing` is the run's earlier record (an interrupted attempt's), whose
    attempt history the new record continues; `threads` is what configure_threads() chose."""
    record = new_record(config)
    record["environment"] = {**environment(settings.device), "cpu": cpu_info(),
                             **({"determinism": determinism} if determinism else {})}
    record["threads"] = threads
    record["data"] = {"num_train": len(data.train), "num_test": len(data.test),
                      **({"num_val": len(data.val)} if data.val is not None else {}),
                      "num_classes": data.num_classes, "image_size": data.image_size, **data.notes}
    same_run = existing is not None and existing.get("config") == record["config"]
    attempts.begin(record, existing if same_run else None, store, threads)  # sets started_at
    store.write(record)
    t_start = time.perf_counter()
    try:
        teacher = None
        t0 = time.perf_counter()
        if user_teacher is not None:
            teacher, card = user_teacher
            record["teacher_metrics"] = _teacher_metrics(card, teacher)
        elif config.teacher is not None:
            zoo = TeacherZoo(paths.zoo_dir, reporter)
            # The teacher trains on what its key says (its recipe's augmentation, its own training data): the full
            # training split, not the student's fraction or validation hold-out, unless teacher_data says so.
            teacher_data = load_teacher_data(config, paths.data_root, data)
            with distributed.main_first():  # rank 0 trains a missing teacher (one process); the others load it
                teacher, card = zoo.get_or_train(teacher_key(config), teacher_data, replace(settings, world_size=1))
            record["teacher_metrics"] = _teacher_metrics(card, teacher)
        teacher_s = time.perf_counter() - t0
        return _distill(config, data, teacher, settings, store, record, reporter, t_start, teacher_s,
                        infer_batch_size, keep_checkpoint, log, teacher_cache, paths.cache_dir)
    except RunDiverged as e:
        record.update(status="diverged", divergence={"epoch": e.epoch, "step": e.step, "losses": e.losses})
        attempts.end(record, "diverged")
        record["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        store.write(record)
        return record
    except BaseException as e:
        reason = attempts.stop_reason(e)  # a time limit, preemption or scancel: `interrupted`, resumable
        record.update(status="interrupted" if reason in attempts.INTERRUPTIONS else "failed",
                      error=attempts.error_text(e), traceback=traceback.format_exc(limit=20)[-4000:])
        attempts.end(record, reason)
        record["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        store.write(record)
        raise
    finally:
        attempts.finish()


@contextmanager
def world_run_lock(store: RunStore, run_id: str, reporter: Reporter = NULL_REPORTER, *,
                   held: bool = False) -> Iterator[None]:
    """The run's lock for every process of the run: rank 0 holds it for the whole world (the others would wait on
    it forever), and the other ranks wait at a barrier until rank 0 has it; without that barrier, a waiting
    world's other ranks went on alone into its collectives and died there once the first run finished (issue
    #29). `held`: the caller (run()'s launcher of a --nproc run) holds it for every process already."""
    if held:
        yield
        return
    with run_lock(store, run_id, reporter) if distributed.is_main() else nullcontext():
        # A world started elsewhere (SLURM tasks): its ranks wait here, within the collectives' timeout
        # (distributed.timeout_s); one process: no barrier.
        distributed.barrier()
        yield


@contextmanager
def run_lock(store: RunStore, run_id: str, reporter: Reporter = NULL_REPORTER) -> Iterator[None]:
    """Hold the run's file lock (`runs/<id>/run.lock`): one process trains a run id at a time. The OS releases
    it when its holder dies, so a waiter then takes over (and the engine resumes from the checkpoint)."""
    path = store.run_dir(run_id) / "run.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        reporter.log(f"run {run_id}: another process is running it; waiting for it to finish")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _teacher_metrics(card: dict[str, Any], teacher: torch.nn.Module) -> dict[str, Any]:
    keep = ("top1", "top5", "top1_best", "top5_best", "best_epoch", "epochs", "train_s", "sha256", "path", "cached",
            "user_checkpoint", "recipe", "source", "source_sha256", "train_data")
    return {**{k: card[k] for k in keep if k in card}, "params": count_parameters(teacher),
            "layers": count_weight_layers(teacher)}


def _distill(
    config: RunConfig,
    data: DataSplits,
    teacher: torch.nn.Module | None,
    settings: EngineSettings,
    store: RunStore,
    record: dict[str, Any],
    reporter: Reporter,
    t_start: float,
    teacher_s: float,
    infer_batch_size: int,
    keep_checkpoint: bool = False,
    log: Sequence[str] = (),
    teacher_cache: str = "on",
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    spec = get_method(config.method)
    params = method_params(config)
    ctx = MethodContext(
        num_classes=data.num_classes, in_chans=data.in_chans, image_size=data.image_size,
        num_train=len(data.train), train_targets=data.train_targets, epochs=config.recipe.epochs,
        seed=config.seed, label_smoothing=config.recipe.label_smoothing,
    )
    torch.manual_seed(config.seed)  # student and the method's own modules start from the run's seed
    student = build_student(config, data)
    distiller = spec.cls(student, teacher, params, ctx)
    distiller.teacher_cache, record["teacher_cache"] = open_run_cache(
        config, record, len(data.train), settings.device, teacher_cache, cache_dir, reporter)
    run_id = config.run_id
    shard = {"rank": distributed.rank(), "world": config.world_size}
    train_loader = make_train_loader(data.train, config.recipe.batch_size, config.seed, settings.device,
                                     data.num_workers, **shard)
    eval_loader = make_eval_loader(data.test, config.recipe.eval_batch_size, config.seed, settings.device,
                                   data.num_workers, **shard)
    val_loader = None if data.val is None else make_eval_loader(
        data.val, config.recipe.eval_batch_size, config.seed, settings.device, data.num_workers, **shard)
    record["eval"] = {"batch_size": config.recipe.eval_batch_size, "order": "shuffled", "order_seed": config.seed}
    if config.world_size > 1:
        record["distributed"] = {
            "world_size": config.world_size, "backend": distributed.backend_for(settings.device),
            "per_rank_batch": distributed.per_rank_batch(config.recipe.batch_size, config.world_size),
            "sync_bn": config.sync_bn, "eval": "whole batches dealt to ranks, counts summed"}

    def on_epoch_end(fit: FitResult) -> None:
        store.write_metrics(run_id, fit.history)
        if distiller.teacher_cache is not None:
            distiller.teacher_cache.flush()

    run_dir = store.run_dir(run_id)

    def on_new_best(fit: FitResult) -> None:  # before the epoch's checkpoint: see Engine.fit
        if distributed.is_main():
            exports.save_student(student, run_dir / exports.BEST, epoch=fit.best.epoch, run_id=run_id)

    t0 = time.perf_counter()
    attempts.training_started()
    with metric_logs(log, reporter, run_dir / "logs", run_id, record["config"]) as engine_reporter:
        fit = Engine(settings, engine_reporter).fit(
            distiller, train_loader, eval_loader, config.recipe, config.seed,
            checkpoint_path=store.checkpoint_path(run_id), on_epoch_end=on_epoch_end, val_loader=val_loader,
            on_new_best=on_new_best,
        )
    train_s = time.perf_counter() - t0

    example = torch.cat([data.test[i][0][None] for i in range(min(len(data.test), infer_batch_size))])
    if example.shape[0] < infer_batch_size:  # small test sets: tile to the stated batch size
        example = example.repeat((infer_batch_size + example.shape[0] - 1) // example.shape[0], 1, 1, 1)
    example = example[:infer_batch_size]
    per_image = inference_time_per_image(distiller, example, settings.device, amp=settings.amp,
                                         channels_last=settings.channels_last)
    extra_params = sum(p.numel() for n, p in distiller.named_parameters() if not n.startswith("student."))
    record.update(
        status="completed",
        metrics={**fit.summary(), "resumed_from_epoch": fit.resumed_from},
        schedule=fit.schedule,
        param_groups=fit.param_groups,
        **({"resume_refused": fit.resume_refused} if fit.resume_refused else {}),
        student_info={"params": count_parameters(student), "layers": count_weight_layers(student),
                      "method_extra_params": extra_params},
        inference={"batch_size": infer_batch_size, "s_per_image": per_image, "device": settings.device.type},
        timing={"teacher_s": teacher_s, "train_s": train_s, "total_s": time.perf_counter() - t_start,
                "epoch_s_mean": sum(r.epoch_s for r in fit.history) / len(fit.history)},  # totals: below
        memory=_memory(settings.device),
        **({"metric_logs": {name: f"logs/{name}" for name in log}} if log else {}),
        method_info=distiller.describe(),
        teacher_cache=record["teacher_cache"] if distiller.teacher_cache is None else
        distiller.teacher_cache.describe(),
        # Predictions that depend on the other test images of the evaluation batch: marked in every table.
        transductive=spec.cls.transductive(params, config.student, config.student_params),
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    attempts.end(record, "completed")
    record["timing"] = attempts.totals(record, record["timing"])
    if not distributed.is_main():
        distributed.barrier()  # rank 0 writes exports and the record
        return record
    record["exports"] = {**exports.write_exports(run_dir, student, record=record,
                                                 model_facts=student_model_facts(config, data)),
                         "checkpoint_kept": keep_checkpoint}
    if "best" not in record["exports"]:
        reporter.log(f"run {run_id}: no file holds the best epoch's weights (the run began before best-epoch "
                     "exports); only the last epoch is exported")
    store.write(record)
    if not keep_checkpoint:  # after the record: a crash before this line resumes (all epochs done) and re-exports
        store.checkpoint_path(run_id).unlink(missing_ok=True)
    distributed.barrier()
    return record


def _memory(device: torch.device) -> dict[str, float]:
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def run(
    method: str,
    teacher: str | None = None,
    *,
    student: str | None = None,
    dataset: str = "digits",
    seed: int = 0,
    teacher_seed: int = 0,
    epochs: int | None = None,
    teacher_epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    sets: list[str] | None = None,
    teacher_ckpt: str | None = None,
    results_dir: str | Path | None = None,
    zoo_dir: str | Path | None = None,
    data_root: str | Path | None = None,
    device: str = "auto",
    amp: bool = False,
    channels_last: bool = False,
    force: bool = False,
    reporter: Reporter = NULL_REPORTER,
    infer_batch_size: int = INFER_BATCH_SIZE,
    strict: bool = False,
    keep_checkpoint: bool = False,
    log: Sequence[str] = (),
    teacher_cache: str = "on",
    cache_dir: str | Path | None = None,
    teacher_cache_dtype: str = "float32",
    deterministic: bool = True,
    nproc: int = 1,
    sync_bn: bool = False,
    portable: bool = False,
) -> dict[str, Any]:
    """Train one method and return its run record (the public Python entry point).

    `nproc` > 1: data-parallel training of this one run across that many processes on this machine
    (kdbench.core.distributed; the recipe's batch is the global batch), `sync_bn` with SyncBatchNorm across them.

    `strict`: a checkpoint that cannot be resumed (e.g. refused by the safe loader) stops the run instead of
    restarting it from scratch with a warning. `keep_checkpoint`: keep the resumable `checkpoint.pt` (optimizer
    state included) of the completed run beside its student exports. `log`: logging backends ("tensorboard",
    "wandb") that receive per-step losses and lr and per-epoch metrics (`metrics.jsonl` is written either way).
    `teacher_cache` "on"|"off": read and fill the teacher-output cache under `cache_dir` (default
    $KDBENCH_CACHE or ~/.cache/kdbench/teacher-outputs); the numbers are the same either way.
    `teacher_cache_dtype="float16"` stores (and reads) the teacher's outputs in half precision: other numbers,
    so it is part of the run id.
    `deterministic=False`: let cuDNN autotune its kernels (faster on a GPU, not bit-reproducible; not in the run id).
    `teacher="run:RUN_ID"`: the student of completed run RUN_ID (under `results_dir`) is the teacher.
    `portable=True`: CPU numbers that every x86 CPU computes alike (kdbench.core.cpu_numerics.configure_portable;
    slower, in the run id); only in a process that has not computed with torch yet.

    >>> import kdbench
    >>> record = kdbench.run("kd", teacher="resnet18", student="resnet18", epochs=2, teacher_epochs=2)
    >>> record["metrics"]["top1_last"]
    """
    opts = RunOptions(
        method=method, teacher=teacher, student=student, dataset=dataset, seed=seed, teacher_seed=teacher_seed,
        epochs=epochs, teacher_epochs=teacher_epochs, batch_size=batch_size, lr=lr, sets=list(sets or []),
        teacher_ckpt=teacher_ckpt, amp=amp, channels_last=channels_last, teacher_cache_dtype=teacher_cache_dtype,
        portable=portable,
    )
    config = resolve_config(with_run_teacher(opts, results_dir))
    paths = Paths(results_dir, zoo_dir, data_root, cache_dir)
    # resolve_config hashed the file into the config; the digest travels along instead of hashing it again.
    ckpt = TeacherCheckpoint(Path(teacher_ckpt).expanduser(), config.teacher_ckpt_sha256) \
        if teacher_ckpt and config.teacher_ckpt_sha256 else None
    if nproc < 1:
        raise UserError(f"--nproc {nproc}: expected a number of processes ≥ 1")
    if nproc > 1:
        config = replace(config, world_size=nproc, sync_bn=sync_bn)
        distributed.per_rank_batch(config.recipe.batch_size, nproc)  # refused here, before any process starts
        store = RunStore(results_dir)
        check_writable(store.root / "runs", f"results dir {store.root}", "--results-dir")  # before any process
        # This process holds the run's lock for its workers: a second identical run waits here, before it starts
        # any process (its ranks waited apart, and died in their collectives: issue #29).
        with run_lock(store, config.run_id, reporter):
            existing = store.load(config.run_id)
            if existing is not None and existing["status"] == "completed" and not force:
                reporter.log(f"run {config.run_id} already completed; showing the stored result (--force to rerun)")
                return {**existing, "cached": True}
            return distributed.launch_local(nproc, _execute_rank, (config.to_dict(), paths, force, ckpt,
                                                                   infer_batch_size, strict, keep_checkpoint,
                                                                   list(log), teacher_cache, deterministic),
                                            device)
    return execute(config, paths, device=device, force=force, reporter=reporter, teacher_ckpt=ckpt,
                   infer_batch_size=infer_batch_size, strict=strict, keep_checkpoint=keep_checkpoint, log=log,
                   teacher_cache=teacher_cache, deterministic=deterministic)


def _execute_rank(config: dict[str, Any], paths: Paths, force: bool, ckpt: TeacherCheckpoint | None,
                  infer_batch_size: int, strict: bool, keep_checkpoint: bool, log: list[str], teacher_cache: str,
                  deterministic: bool, *, device: str) -> dict[str, Any]:
    """One rank of a data-parallel run (in a process the launcher started, the process group up, the launcher
    holding the run's lock): rank 0 logs plain lines, the others stay quiet."""
    reporter = LineReporter() if distributed.is_main() else NULL_REPORTER
    return execute(RunConfig.from_dict(config), paths, device=device, force=force, reporter=reporter,
                   teacher_ckpt=ckpt, infer_batch_size=infer_batch_size, strict=strict,
                   keep_checkpoint=keep_checkpoint, log=log, teacher_cache=teacher_cache,
                   deterministic=deterministic, run_locked=True)


def clear_run(results_dir: str | Path | None, run_id: str) -> None:
    shutil.rmtree(RunStore(results_dir).run_dir(run_id), ignore_errors=True)


__all__ = ["Paths", "RunOptions", "TeacherCheckpoint", "execute", "load_teacher_data", "run"]
