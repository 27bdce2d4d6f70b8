"""The one training engine: data → method → losses → optimizer step → evaluator, for every method.

It never names a method. It asks the method (a :class:`~kdbench.train.method.Distiller`) for logits and a dict of
weighted losses, sums them, logs each by name, steps the optimizer (the only `backward()`/`step()` in
kdbench), evaluates the student each epoch, and checkpoints so that an interrupted run resumes with the same
numbers as an uninterrupted one: the learning rate changes at every optimizer step and is a pure function of
the global step (kdbench.train.schedule), the data order and the global RNGs are reseeded from (seed, epoch) at every
epoch start, and the checkpoint carries model, optimizer, AMP scaler and history (kdbench.train.checkpoint:
its format, its checks and the resume).

A run also resumes inside an epoch: a step-level checkpoint (every `checkpoint_every_steps` steps, and at the end of
the step in progress when a stop signal asks for one: kdbench.train.stop_request) holds the steps done, the epoch's
loss sums and hits so far and the global RNG states after its last step. The resumed epoch starts as any epoch
does (reseeded, the sampler and the method told the epoch), passes over the batches already trained (their order
and crops are a pure function of (seed, epoch, index): they are read, not trained on), restores the RNG states and
goes on from the next step: the same numbers as an epoch never interrupted.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from kdbench.core import distributed
from kdbench.core.progress import NULL_REPORTER, Reporter
from kdbench.spec.recipe import Recipe
from kdbench.train import rng_state, stop_request
from kdbench.train.checkpoint import StepPosition, resume, save_checkpoint
from kdbench.train.compile import CompileStats, compile_distiller
from kdbench.train.dot import DistillationOrientedSGD, check_dot_run, split_losses
from kdbench.train.epoch_record import EpochRecord
from kdbench.train.evaluate import EvalResult, _autocast, evaluate
from kdbench.train.method import Batch, Distiller
from kdbench.train.optim import build_optimizer
from kdbench.train.schedule import build_scheduler, current_lr, describe_schedule
from kdbench.train.step_log import StepLog


@dataclass
class FitResult:
    history: list[EpochRecord] = field(default_factory=list)
    resumed_from: int = 0  # epochs already done when this process started
    resumed_at_step: int = 0  # steps of the next epoch already done when it started (a step-level checkpoint)
    resume_refused: str | None = None  # why a checkpoint found at start was not used (the run restarted)
    schedule: dict[str, Any] = field(default_factory=dict)  # the lr schedule used (schedule.describe_schedule)
    # The optimizer's parameter groups: name, parameter count, base lr, weight decay (kdbench.train.optim).
    param_groups: list[dict[str, Any]] = field(default_factory=list)
    # With --compile: what compiling cost (kdbench.train.compile.CompileStats.describe), read after the fit.
    compiled: CompileStats | None = None

    @property
    def last(self) -> EpochRecord:
        return self.history[-1]

    @property
    def selected_on(self) -> str:
        """Which split chooses the best epoch: "val" when every epoch was evaluated on a validation split, else
        "test" (what "best epoch" means in the DKD tables)."""
        return "val" if self.history and all(r.val_top1 is not None for r in self.history) else "test"

    @property
    def best(self) -> EpochRecord:
        # Highest top-1 on the selecting split; the earliest epoch wins ties.
        if self.selected_on == "val":
            return max(self.history, key=lambda r: (r.val_top1, -r.epoch))
        return max(self.history, key=lambda r: (r.top1, -r.epoch))


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919) % (2**31)


def _total(losses: dict[str, torch.Tensor]) -> torch.Tensor:
    """The sum of a method's weighted losses, in their order. Not `sum()`: it starts from 0, one more add per
    step, and one more node for backward to pass through; 0 + x is x, so the numbers are the same."""
    terms = iter(losses.values())
    total = next(terms)
    for term in terms:
        total = total + term
    return total


def _on(device: torch.device, tensor: torch.Tensor) -> torch.Tensor:
    # In-memory sets are served on the device already; `.to()` would return the same tensor at 4x the cost of
    # asking. (A "cuda" device is not equal to a tensor's "cuda:0": that case takes `.to()`, which is a no-op.)
    return tensor if tensor.device == device else tensor.to(device, non_blocking=True)


class _TrainHits:
    """The epoch's top-1 hits on its training batches, counted on the device every `every` steps over the
    batches held until then: one argmax, compare and sum for all of them instead of four tensor ops per step
    (a few µs each). The count is an exact integer either way; holding the logits costs `every` batches of them."""

    def __init__(self, device: torch.device, every: int = 16, correct: torch.Tensor | None = None) -> None:
        self.every = every
        # `correct`: the hits of the steps before a step checkpoint (an exact integer, in float32 as counted)
        self._correct = torch.zeros((), device=device) if correct is None else correct.to(device).clone()
        self._held: list[tuple[torch.Tensor, torch.Tensor]] = []

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self._held.append((logits.detach(), labels))
        if len(self._held) >= self.every:
            self._count_held()

    def count(self) -> torch.Tensor:
        """All hits so far, a 0-dim float tensor on the device."""
        self._count_held()
        return self._correct

    def _count_held(self) -> None:
        if self._held:
            logits, labels = (torch.cat(t) for t in zip(*self._held, strict=True))
            self._correct += (logits.argmax(1) == labels).sum()
            self._held.clear()


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    # What torch.manual_seed does for the devices kdbench runs on (CPU, CUDA), without its MPS/XPU/custom-backend
    # probes: those took ~65 of its ~87 µs, paid every epoch (4 µs a step on digits' 22 steps). The same generator
    # states, so the same numbers.
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


@dataclass
class EngineSettings:
    device: torch.device
    amp: bool = False
    channels_last: bool = False
    # Save a checkpoint after an epoch when this many seconds passed since the last one (0: every epoch).
    # The final epoch is always saved.
    checkpoint_interval_s: float = 0.0
    # Also save a step-level checkpoint after every this many optimizer steps inside an epoch (0: off). A stop
    # signal saves one at the end of the step in progress either way (kdbench.train.stop_request). One process only.
    checkpoint_every_steps: int = 0
    # A checkpoint that cannot be used stops the run (UnusableCheckpointError) instead of a restart from scratch.
    strict_resume: bool = False
    # `--set group.NAME.KEY=VALUE` of the run: lr scale / weight decay per named parameter group (kdbench.train.optim).
    param_groups: dict[str, dict[str, float]] = field(default_factory=dict)
    # Read the losses (finiteness check, progress, logging backends) at every step: the default on CPU, where it
    # costs nothing; None = on CPU only. Otherwise they stay on the device and are read every `log_interval`
    # steps and at the end of each epoch (kdbench.train.step_log).
    sync_every_step: bool | None = None
    log_interval: int = 50
    # Data-parallel over this many processes (the process group is up; kdbench.core.distributed): DDP, rank-0-only
    # checkpoints, sharded evaluation. 1 = the one-process path. `sync_bn`: SyncBatchNorm when > 1.
    world_size: int = 1
    sync_bn: bool = False
    # `--compile`: the student, teacher and method modules through torch.compile in this mode (kdbench.train.compile).
    compile: bool = False
    compile_mode: str = "default"


def _nothing(result: FitResult) -> None:
    pass


@dataclass(frozen=True)
class FitCallbacks:
    """The hooks :meth:`Engine.fit` calls, each with the run's `FitResult` so far; the one place they are named.

    - `on_new_best(result)`: the epoch just trained became `result.best`. Called BEFORE that epoch's checkpoint
      is saved, so a copy of the best weights made here is never older than the checkpoint a resumed run starts
      from.
    - `on_epoch_end(result)`: after every epoch, its record appended and its checkpoint (when due) saved.

    A hook left out does nothing; an exception a hook raises ends `fit` with it."""

    on_new_best: Callable[[FitResult], None] = _nothing
    on_epoch_end: Callable[[FitResult], None] = _nothing


@dataclass
class _Fit:
    """What one `fit` trains with, built once and handed to each epoch."""

    model: Distiller
    forward_train: Callable[[Batch], Any]  # the method's, or DDP's around it when data-parallel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    train_loader: DataLoader
    eval_loader: DataLoader
    val_loader: DataLoader | None
    recipe: Recipe
    seed: int


@dataclass
class _EpochTrain:
    """What an epoch's training steps leave for its record (summed over ranks when data-parallel)."""

    lr_last: float  # the lr of the epoch's last optimizer step
    sums: dict[str, Any]  # the losses' sums over the epoch's steps, by name, plus "total" (StepLog.sums)
    correct: torch.Tensor  # top-1 hits on the training batches (_TrainHits.count)
    seen: int  # training samples
    batches: int


@dataclass
class _AtStep:
    """An epoch after `step` of its optimizer steps, as a step-level checkpoint holds it."""

    epoch: int
    step: int
    lr_first: float
    lr_last: float
    step_log: StepLog
    hits: _TrainHits
    seen: int

    def position(self) -> StepPosition:
        self.step_log.flush()  # the pending losses read (and a non-finite one refused) before they are saved
        return StepPosition(self.epoch, self.step, self.lr_first, self.lr_last, dict(self.step_log.sums),
                            self.hits.count().clone(), self.seen, rng_state.capture())


class _StepSaver:
    """Step-level checkpoints inside one epoch: every `checkpoint_every_steps` steps (not after the epoch's last:
    the epoch's own checkpoint follows), and after the step in progress when a stop signal asks for one
    (kdbench.train.stop_request); then what the signal asked for (e.g. submitit's requeue and exit)."""

    def __init__(self, settings: EngineSettings, reporter: Reporter, path: Path | None,
                 history: list[EpochRecord]) -> None:
        self.every = settings.checkpoint_every_steps
        self.reporter = reporter
        self.path = path
        self.history = history  # the epochs before this one (the run's list: this epoch is appended after)

    def due(self, done: int, steps: int) -> bool:
        return stop_request.pending() or (self.every > 0 and done % self.every == 0 and done < steps)

    def save(self, fit: _Fit, at: _AtStep) -> None:
        asked = stop_request.pending()
        thens = stop_request.take()
        if self.path is not None and distributed.is_main():
            save_checkpoint(self.path, fit.model, fit.optimizer, fit.scaler, self.history, at.position())
        if not asked:
            return
        self.reporter.log(f"epoch {at.epoch} step {at.step}: stop signal; saved this step's checkpoint (a resumed "
                          "run continues from the next step)" if self.path is not None else
                          f"epoch {at.epoch} step {at.step}: stop signal")
        if thens and fit.model.teacher_cache is not None:
            fit.model.teacher_cache.end_epoch()  # the outputs computed so far kept, for the resumed run to read
        for then in thens:
            then()


class _Steps:
    """One training step, in two halves around the step log: `forward` (the batch to the device, channels-last,
    autocast when AMP is on; the method's logits and weighted losses and their total) and `step` (backward, the
    optimizer step, the AMP scaler when on, then the scheduler: the next step's lr; with DOT, a backward pass
    per half of the losses: kdbench.train.dot). Settings are read once here, not at every step."""

    def __init__(self, settings: EngineSettings, fit: _Fit) -> None:
        self.device = settings.device
        self.channels_last = settings.channels_last
        self.forward_train = fit.forward_train
        self.amp = settings.amp
        self.optimizer, self.scheduler, self.scaler = fit.optimizer, fit.scheduler, fit.scaler
        if isinstance(fit.optimizer, DistillationOrientedSGD):
            self.step = self._dot_step
        else:
            self.step = self._scaled_step if fit.scaler.is_enabled() else self._plain_step

    def forward(self, images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor,
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        device = self.device
        images = _on(device, images)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        batch = Batch(images, _on(device, labels), _on(device, index))
        if self.amp:
            with _autocast(device, True):
                logits, losses = self.forward_train(batch)
        else:  # no autocast context at all without AMP: even a null one is a context entered at every step
            logits, losses = self.forward_train(batch)
        return logits, losses, _total(losses)

    def _scaled_step(self, total: torch.Tensor, losses: dict[str, torch.Tensor]) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()

    def _plain_step(self, total: torch.Tensor, losses: dict[str, torch.Tensor]) -> None:
        # AMP off: the disabled scaler's three calls would only pass through to these two.
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self.scheduler.step()

    def _dot_step(self, total: torch.Tensor, losses: dict[str, torch.Tensor]) -> None:
        # DOT (kdbench.train.dot), in its reference's order: the distillation half's gradients first (the graph
        # kept for the second pass), then the task half's; one step moves the parameters by both momenta.
        optimizer = self.optimizer
        task, distil = split_losses(losses)
        # A half the step lacks (FitNet's hint pre-stage has no `ce`), or one without a graph, adds no gradient.
        optimizer.zero_grad(set_to_none=True)
        if distil is not None and distil.requires_grad:
            distil.backward(retain_graph=task is not None)
        optimizer.stash_kd_grads()
        optimizer.zero_grad(set_to_none=True)  # to None: the stashed gradients are kept, not zeroed
        if task is not None and task.requires_grad:
            task.backward()
        optimizer.step()
        self.scheduler.step()


class Engine:
    def __init__(self, settings: EngineSettings, reporter: Reporter = NULL_REPORTER) -> None:
        self.s = settings
        self.reporter = reporter

    def fit(
        self,
        model: Distiller,
        train_loader: DataLoader,
        eval_loader: DataLoader,
        recipe: Recipe,
        seed: int,
        checkpoint_path: Path | None = None,
        val_loader: DataLoader | None = None,
        callbacks: FitCallbacks | None = None,
    ) -> FitResult:
        """Train `model` for the recipe's epochs (resuming from `checkpoint_path` when it holds some), evaluating
        on `eval_loader` (test) and, when given, on `val_loader` (the split that then chooses the best epoch) after
        each, calling `callbacks`' hooks (:class:`FitCallbacks`)."""
        hooks = callbacks or FitCallbacks()
        forward_train = self._place(model)
        compiled = compile_distiller(model, self.s.compile_mode, self.reporter.log, self.s.device) \
            if self.s.compile else None
        check_dot_run(recipe, amp=self.s.amp, world_size=self.s.world_size)
        # A compiled run's optimizer step is the fused kernel (kdbench.train.compile).
        optimizer, groups = build_optimizer(model, recipe, self.s.param_groups, fused=self.s.compile)
        scaler = torch.amp.GradScaler(self.s.device.type, enabled=self.s.amp and self.s.device.type == "cuda")
        result = FitResult(param_groups=groups, compiled=compiled)
        position = self._resume_into(result, checkpoint_path, model, optimizer, scaler)
        steps_per_epoch = len(train_loader)
        result.schedule = describe_schedule(recipe, steps_per_epoch)
        # The lr is a function of the global step only: a resumed run starts the scheduler where it stopped.
        scheduler = build_scheduler(optimizer, recipe, steps_per_epoch,
                                    len(result.history) * steps_per_epoch + result.resumed_at_step)
        fit = _Fit(model, forward_train, optimizer, scheduler, scaler, train_loader, eval_loader, val_loader, recipe,
                   seed)
        self._train_epochs(fit, result, checkpoint_path, hooks, position)
        return result

    def _place(self, model: Distiller) -> Callable[[Batch], Any]:
        """`model` on the device (channels-last, SyncBatchNorm when asked): the training forward to call, DDP's
        when data-parallel."""
        model.to(self.s.device)
        if self.s.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.s.world_size > 1 and self.s.sync_bn:
            distributed.convert_sync_bn(model)  # before the optimizer: the same Parameters, new layers
        return distributed.data_parallel(model, self.s.device) if self.s.world_size > 1 else model.forward_train

    def _resume_into(self, result: FitResult, path: Path | None, model: Distiller,
                     optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> StepPosition | None:
        """The checkpoint's state restored into `result` (its history) and the model, optimizer and scaler; where
        inside the next epoch it was taken (None: at its start)."""
        resumed = resume(path, model, optimizer, scaler, strict=self.s.strict_resume, world_size=self.s.world_size,
                         reporter=self.reporter)
        result.history, result.resume_refused = resumed.history, resumed.refused
        result.resumed_from = len(result.history)
        result.resumed_at_step = resumed.position.step if resumed.position is not None else 0
        return resumed.position

    def _train_epochs(self, fit: _Fit, result: FitResult, checkpoint_path: Path | None,
                      hooks: FitCallbacks, position: StepPosition | None = None) -> None:
        last_save = time.monotonic()
        for epoch in range(len(result.history) + 1, fit.recipe.epochs + 1):
            saver = _StepSaver(self.s, self.reporter, checkpoint_path, result.history) \
                if self.s.world_size == 1 else None
            record = self._train_epoch(fit, epoch, saver, position)
            position = None
            result.history.append(record)
            if result.best.epoch == record.epoch:
                hooks.on_new_best(result)
            due = time.monotonic() - last_save >= self.s.checkpoint_interval_s or epoch == fit.recipe.epochs
            if checkpoint_path is not None and due and distributed.is_main():
                save_checkpoint(checkpoint_path, fit.model, fit.optimizer, fit.scaler, result.history)
                last_save = time.monotonic()
            hooks.on_epoch_end(result)

    def _train_epoch(self, fit: _Fit, epoch: int, saver: _StepSaver | None = None,
                     position: StepPosition | None = None) -> EpochRecord:
        """One epoch (from `position` inside it when resumed there): its training steps, then the evaluation of
        the student; the epoch's record."""
        t0 = time.perf_counter()
        lr_first = current_lr(fit.optimizer) if position is None else position.lr_first
        self._begin_epoch(fit, epoch)
        train = self._train_steps(fit, epoch, lr_first, saver, position)
        train_s = time.perf_counter() - t0
        if fit.model.teacher_cache is not None:  # the epoch's teacher outputs kept (the cache writes its entries)
            fit.model.teacher_cache.end_epoch()
        if self.s.world_size > 1:
            train = self._over_ranks(fit.model, train)
        t1 = time.perf_counter()
        ev, val = self._evaluate(fit)
        record = _epoch_record(epoch, lr_first, train, ev, val, train_s, time.perf_counter() - t1)
        # Its fields one level deep: `asdict` would deep-copy the losses dict, every epoch, for a reporter that
        # only reads it.
        self.reporter.phase_end({f.name: v for f in fields(record) if (v := getattr(record, f.name)) is not None})
        return record

    def _begin_epoch(self, fit: _Fit, epoch: int) -> None:
        # Ranks draw their own dropout masks and CRD negatives (as timm seeds per rank); still a function of (seed,
        # epoch). Crops are not drawn from this stream: they are keyed by sample index (data/loaders.py), so a
        # sample gets the crop it gets in one process.
        _seed_everything(epoch_seed(fit.seed, epoch) + (distributed.rank() if self.s.world_size > 1 else 0))
        sampler = fit.train_loader.sampler
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        fit.model.train()
        if fit.model.teacher_cache is not None:  # the epoch keys the teacher's outputs (a callback of the run's)
            fit.model.teacher_cache.begin_epoch(epoch)
        fit.model.on_epoch_start(epoch)

    def _train_steps(self, fit: _Fit, epoch: int, lr_first: float, saver: _StepSaver | None,
                     position: StepPosition | None) -> _EpochTrain:
        """The epoch's optimizer steps (those after `position` when resumed inside it). Nothing here reads the
        device per step (on a GPU): the losses go to the StepLog, the hits to _TrainHits, and both are read in
        batches."""
        steps = len(fit.train_loader)
        self.reporter.phase_start(f"epoch {epoch}/{fit.recipe.epochs}", total=steps)
        every_step = self.s.sync_every_step if self.s.sync_every_step is not None else self.s.device.type != "cuda"
        done = 0 if position is None else position.step
        step_log = StepLog(self.reporter, epoch, every_step, self.s.log_interval,
                           sums=None if position is None else position.loss_sums)
        hits = _TrainHits(self.s.device, correct=None if position is None else position.correct)
        one = _Steps(self.s, fit)
        optimizer, first_global = fit.optimizer, (epoch - 1) * steps + 1
        lr_last = current_lr(optimizer) if position is None else position.lr_last
        seen = 0 if position is None else position.seen
        batches = done
        loader = iter(fit.train_loader)  # a DataLoader draws its workers' base seed here: before the restore below
        if position is not None:
            for _ in range(done):  # trained before the checkpoint: read (order and crops are keyed), not trained
                next(loader)
            rng_state.restore(position.rng)  # the streams as they were after step `done`
            if done:
                self.reporter.step(done)
        steps_running = stop_request.steps_running() if saver is not None else contextlib.nullcontext()
        with steps_running:
            for step, (images, labels, index) in enumerate(loader, start=done):
                logits, losses, total = one.forward(images, labels, index)
                lr_last = current_lr(optimizer)  # the lr this step uses (the scheduler moves on after it)
                # A non-finite loss stops the run: never step on NaN/Inf and carry on silently. On CPU the losses
                # are read here, and a non-finite total refused, before the optimizer steps on it; on a GPU a read
                # would stall the device every step, so they stay there and are checked on each logging
                # interval's batch of them (step_log.flush), before the epoch ends and so before any checkpoint
                # holding a diverged step. StepLog also keeps the epoch's loss sums.
                step_log.add(step, first_global + step, losses, total, lr_last)
                one.step(total, losses)
                hits.add(logits, labels)
                seen += labels.numel()
                batches += 1
                if saver is not None and saver.due(batches, steps):
                    saver.save(fit, _AtStep(epoch, batches, lr_first, lr_last, step_log, hits, seen))
            if saver is not None and stop_request.pending():  # came while the loader ended (workers shut down)
                saver.save(fit, _AtStep(epoch, batches, lr_first, lr_last, step_log, hits, seen))
        step_log.flush()
        return _EpochTrain(lr_last, step_log.sums, hits.count(), seen, batches)

    def _over_ranks(self, model: Distiller, train: _EpochTrain) -> _EpochTrain:
        """The epoch's means over the global batches; one model on every rank."""
        device = self.s.device
        sums = {k: distributed.all_reduce_mean(torch.as_tensor(v, device=device)) for k, v in train.sums.items()}
        correct = distributed.all_reduce_sum(train.correct)
        seen = int(distributed.all_reduce_sum(torch.tensor(train.seen, device=device)))
        distributed.broadcast_buffers(model)
        return _EpochTrain(train.lr_last, sums, correct, seen, train.batches)

    def _evaluate(self, fit: _Fit) -> tuple[EvalResult, EvalResult | None]:
        """The student on the test split and, when there is one, on the validation split."""
        def on(loader: DataLoader) -> EvalResult:
            return evaluate(fit.model, loader, self.s.device, amp=self.s.amp, channels_last=self.s.channels_last,
                            sum_over_ranks=self.s.world_size > 1)

        return on(fit.eval_loader), None if fit.val_loader is None else on(fit.val_loader)


def _epoch_record(epoch: int, lr_first: float, train: _EpochTrain, ev: EvalResult, val: EvalResult | None,
                  train_s: float, eval_s: float) -> EpochRecord:
    return EpochRecord(
        epoch=epoch,
        lr=lr_first,
        lr_last=train.lr_last,
        losses={k: float(v) / max(train.batches, 1) for k, v in train.sums.items()},
        train_top1=100.0 * float(train.correct) / max(train.seen, 1),
        top1=ev.top1,
        top5=ev.top5,
        eval_loss=ev.loss,
        epoch_s=train_s,
        eval_s=eval_s,
        val_top1=None if val is None else val.top1,
        val_top5=None if val is None else val.top5,
    )
