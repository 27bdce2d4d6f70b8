"""The public entry of one run: `kdbench.run(...)` resolves its options into a config and executes it
(kdbench.execute.runner), in this process or, with `nproc` > 1, in a data-parallel group of processes on this
machine that this module launches and whose run lock it holds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kdbench.core import distributed
from kdbench.core.errors import UserError
from kdbench.core.progress import NULL_REPORTER, LineReporter, Reporter
from kdbench.execute.folders import check_run_folders
from kdbench.execute.locks import run_lock
from kdbench.execute.resolve import RunOptions, TeacherCheckpoint, resolve_config, with_run_teacher
from kdbench.execute.runner import INFER_BATCH_SIZE, ExecuteOptions, execute, stored_result
from kdbench.spec.config import RunConfig
from kdbench.spec.paths import Paths
from kdbench.store.records import RunStore
from kdbench.train.dot import check_dot_run


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
    compile: bool = False,
    compile_mode: str = "default",
    data_on_device: bool | None = None,
    checkpoint_every_steps: int = 0,
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
    `data_on_device`: keep an in-memory set (digits, CIFAR, STL-10) on the GPU (True) or on the host (False);
    None keeps it there when it fits 4 GiB ($KDBENCH_DATA_ON_DEVICE=0/1 decides instead when set). The same
    numbers either way; the record's `data.served` says where batches came from.
    `checkpoint_every_steps` N > 0: also save a step-level checkpoint every N optimizer steps (one process; the
    same numbers, not in the run id).
    `portable=True`: CPU numbers that every x86 CPU computes alike (kdbench.core.cpu_numerics.configure_portable;
    slower, in the run id); only in a process that has not computed with torch yet.
    `compile=True`: the student, teacher and method modules through torch.compile in `compile_mode`
    (kdbench.train.compile; other numbers than eager, so in the run id); a module that cannot be compiled runs eager.

    >>> import kdbench
    >>> record = kdbench.run("kd", teacher="resnet18", student="resnet18", epochs=2, teacher_epochs=2)
    >>> record["metrics"]["top1_last"]
    """
    opts = RunOptions(
        method=method, teacher=teacher, student=student, dataset=dataset, seed=seed, teacher_seed=teacher_seed,
        epochs=epochs, teacher_epochs=teacher_epochs, batch_size=batch_size, lr=lr, sets=list(sets or []),
        teacher_ckpt=teacher_ckpt, amp=amp, channels_last=channels_last, teacher_cache_dtype=teacher_cache_dtype,
        portable=portable, compile=compile, compile_mode=compile_mode,
    )
    config = resolve_config(with_run_teacher(opts, results_dir))
    paths = Paths(results_dir, zoo_dir, data_root, cache_dir)
    # resolve_config hashed the file into the config; the digest travels along instead of hashing it again.
    ckpt = TeacherCheckpoint(Path(teacher_ckpt).expanduser(), config.teacher_ckpt_sha256) \
        if teacher_ckpt and config.teacher_ckpt_sha256 else None
    options = ExecuteOptions(infer_batch_size, keep_checkpoint, tuple(log), teacher_cache, data_on_device)
    if nproc < 1:
        raise UserError(f"--nproc {nproc}: expected a number of processes ≥ 1")
    if nproc > 1:
        check_dot_run(config.recipe, world_size=nproc)
        return _launch(replace(config, world_size=nproc, sync_bn=sync_bn), paths, _RankArgs(
            force, ckpt, options, strict, deterministic), device, reporter)
    return execute(config, paths, device=device, force=force, reporter=reporter, teacher_ckpt=ckpt,
                   infer_batch_size=infer_batch_size, strict=strict, keep_checkpoint=keep_checkpoint, log=log,
                   teacher_cache=teacher_cache, deterministic=deterministic, data_on_device=data_on_device,
                   checkpoint_every_steps=checkpoint_every_steps)


@dataclass(frozen=True)
class _RankArgs:
    """What each process of a data-parallel run is asked beside its config and folders (pickled to it)."""

    force: bool
    teacher_ckpt: TeacherCheckpoint | None
    options: ExecuteOptions
    strict: bool
    deterministic: bool


def _launch(config: RunConfig, paths: Paths, args: _RankArgs, device: str, reporter: Reporter) -> dict[str, Any]:
    """A data-parallel run of `config.world_size` processes on this machine; rank 0's record."""
    distributed.per_rank_batch(config.recipe.batch_size, config.world_size)  # refused here, before any process starts
    store = RunStore(paths.results_dir)
    check_run_folders(config, paths)  # before any process
    # This process holds the run's lock for its workers: a second identical run waits here, before it starts
    # any process (its ranks waited apart, and died in their collectives: issue #29).
    with run_lock(store, config.run_id, reporter):
        shown = stored_result(store.load(config.run_id), args.force, reporter,
                              "already completed; showing the stored result (--force to rerun)")
        if shown is not None:
            return shown
        return distributed.launch_local(config.world_size, _execute_rank, (config.to_dict(), paths, args), device)


def _execute_rank(config: dict[str, Any], paths: Paths, args: _RankArgs, *, device: str) -> dict[str, Any]:
    """One rank of a data-parallel run (in a process the launcher started, the process group up, the launcher
    holding the run's lock): rank 0 logs plain lines, the others stay quiet."""
    reporter = LineReporter() if distributed.is_main() else NULL_REPORTER
    options = args.options
    return execute(RunConfig.from_dict(config), paths, device=device, force=args.force, reporter=reporter,
                   teacher_ckpt=args.teacher_ckpt, infer_batch_size=options.infer_batch_size, strict=args.strict,
                   keep_checkpoint=options.keep_checkpoint, log=options.log, teacher_cache=options.teacher_cache,
                   deterministic=args.deterministic, run_locked=True, data_on_device=options.data_on_device)


__all__ = ["run"]
