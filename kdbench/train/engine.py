"""The one training engine: data → method → losses → optimizer step → evaluator, for every method.

It never names a method. It asks the method (a :class:`~kdbench.train.method.Distiller`) for logits and a dict of
weighted losses, sums them, logs each by name, steps the optimizer (the only `backward()`/`step()` in
kdbench), evaluates the student each epoch, and checkpoints so that an interrupted run resumes with the same
numbers as an uninterrupted one: the learning rate changes at every optimizer step and is a pure function of
the global step (kdbench.train.schedule), the data order and the global RNGs are reseeded from (seed, epoch) at every
epoch start, and the checkpoint carries model, optimizer, AMP scaler and history.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from kdbench.core import distributed
from kdbench.core.progress import NULL_REPORTER, Reporter
from kdbench.core.safe_load import UnusableCheckpointError, check_plain, load_plain_checkpoint
from kdbench.core.storage import atomic_torch_save
from kdbench.spec.recipe import Recipe
from kdbench.train.evaluate import _autocast, evaluate
from kdbench.train.method import Batch, Distiller
from kdbench.train.optim import build_optimizer
from kdbench.train.schedule import build_scheduler, current_lr, describe_schedule
from kdbench.train.step_log import StepLog


@dataclass
class EpochRecord:
    epoch: int
    lr: float  # the learning rate of the epoch's first optimizer step
    lr_last: float  # ... and of its last one (the lr changes at every step)
    losses: dict[str, float]  # mean over the epoch's batches, by name, plus "total"
    train_top1: float
    top1: float
    top5: float
    eval_loss: float
    epoch_s: float
    eval_s: float
    # Accuracy on the validation split held out of training (data.val_fraction), when there is one. Defaults keep
    # the histories of older checkpoints and metrics files loadable.
    val_top1: float | None = None
    val_top5: float | None = None


@dataclass
class FitResult:
    history: list[EpochRecord] = field(default_factory=list)
    resumed_from: int = 0  # epochs already done when this process started
    resume_refused: str | None = None  # why a checkpoint found at start was not used (the run restarted)
    schedule: dict[str, Any] = field(default_factory=dict)  # the lr schedule used (schedule.describe_schedule)
    # The optimizer's parameter groups: name, parameter count, base lr, weight decay (kdbench.train.optim).
    param_groups: list[dict[str, Any]] = field(default_factory=list)

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

    def summary(self) -> dict[str, Any]:
        """Last- and best-epoch numbers; the best ones are always TEST accuracies, at the epoch the selecting
        split (`best_selected_on`) chose."""
        best = self.best
        out = {
            "top1_last": self.last.top1,
            "top5_last": self.last.top5,
            "top1_best": best.top1,
            "top5_best": best.top5,
            "best_epoch": best.epoch,
            "epochs": self.last.epoch,
            "best_selected_on": self.selected_on,
        }
        if self.selected_on == "val":
            out.update(val_top1_best=best.val_top1, val_top5_best=best.val_top5)
        return out


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

    def __init__(self, device: torch.device, every: int = 16) -> None:
        self.every = every
        self._correct = torch.zeros((), device=device)
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
    torch.manual_seed(seed)


CHECKPOINT_KEYS = ("model", "optimizer", "scaler", "history")


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                    history: list[EpochRecord]) -> None:
    """Everything a resumed run needs, as plain data only (tensors, numbers, strings, lists, dicts), so that
    resuming reads it with the safe loader. No RNG state: every epoch reseeds from (seed, epoch)."""
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "history": [asdict(r) for r in history],
    }
    check_plain(state)  # fail at save time, loudly, rather than at resume time
    atomic_torch_save(state, path)


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler) -> list[EpochRecord]:
    """Restore a `save_checkpoint` file into model, optimizer and scaler; the epoch history it holds.

    Everything is checked before anything is restored, so a refused checkpoint (UnusableCheckpointError) leaves
    model and optimizer exactly as they were: a restart from scratch gives a fresh run's numbers.
    """
    state = load_plain_checkpoint(path)
    bad = UnusableCheckpointError(f"checkpoint {path} does not hold this run's state")
    if not all(k in state for k in CHECKPOINT_KEYS) or not isinstance(state["history"], list):
        raise bad
    try:
        history = [EpochRecord(**r) for r in state["history"]]
    except TypeError:
        raise bad from None
    weights, own = state["model"], model.state_dict()
    if not isinstance(weights, dict) or set(weights) != set(own) or any(
        not isinstance(weights[k], torch.Tensor) or weights[k].shape != v.shape for k, v in own.items()
    ):
        raise bad
    if not isinstance(state["scaler"], dict) or (scaler.is_enabled() and set(state["scaler"]) != set(
            scaler.state_dict())):
        raise bad
    try:
        optimizer.load_state_dict(state["optimizer"])  # validates the groups before it changes anything
    except (ValueError, KeyError, TypeError, AttributeError):
        raise bad from None
    model.load_state_dict(weights)
    scaler.load_state_dict(state["scaler"])
    return history


@dataclass
class EngineSettings:
    device: torch.device
    amp: bool = False
    channels_last: bool = False
    # Save a checkpoint after an epoch when this many seconds passed since the last one (0: every epoch).
    # The final epoch is always saved.
    checkpoint_interval_s: float = 0.0
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
        on_epoch_end: Callable[[FitResult], None] | None = None,
        val_loader: DataLoader | None = None,
        on_new_best: Callable[[FitResult], None] | None = None,
    ) -> FitResult:
        """Train `model` for the recipe's epochs (resuming from `checkpoint_path` when it holds some), evaluating
        on `eval_loader` (test) and, when given, on `val_loader` (the split that then chooses the best epoch) after
        each.

        `on_new_best(result)` is called when the epoch just trained became `result.best`, before that epoch's
        checkpoint is saved: a copy of the best weights made there is never older than the checkpoint a
        resumed run starts from. `on_epoch_end(result)` is called after every epoch and its checkpoint."""
        device = self.s.device
        model.to(device)
        if self.s.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.s.world_size > 1 and self.s.sync_bn:
            distributed.convert_sync_bn(model)  # before the optimizer: the same Parameters, new layers
        self._forward_train = distributed.data_parallel(model, device) if self.s.world_size > 1 \
            else model.forward_train
        optimizer, groups = build_optimizer(model, recipe, self.s.param_groups)
        scaler = torch.amp.GradScaler(device.type, enabled=self.s.amp and device.type == "cuda")
        result = FitResult(param_groups=groups)
        if self.s.world_size > 1:
            distributed.barrier()  # every rank resumes from rank 0's checkpoint, read once it is in place
        if checkpoint_path is not None and checkpoint_path.exists():
            result.history, result.resume_refused = self._resume(checkpoint_path, model, optimizer, scaler)
            result.resumed_from = len(result.history)
            if result.resumed_from:
                self.reporter.log(f"resumed from epoch {result.resumed_from} checkpoint")
        last_save = time.monotonic()
        steps_per_epoch = len(train_loader)
        result.schedule = describe_schedule(recipe, steps_per_epoch)
        # The lr is a function of the global step only: a resumed run starts the scheduler where it stopped.
        scheduler = build_scheduler(optimizer, recipe, steps_per_epoch, len(result.history) * steps_per_epoch)

        for epoch in range(len(result.history) + 1, recipe.epochs + 1):
            record = self._train_epoch(model, optimizer, scheduler, scaler, train_loader, eval_loader, recipe, seed,
                                       epoch, val_loader)
            result.history.append(record)
            if on_new_best is not None and result.best.epoch == record.epoch:
                on_new_best(result)
            due = time.monotonic() - last_save >= self.s.checkpoint_interval_s or epoch == recipe.epochs
            if checkpoint_path is not None and due and distributed.is_main():
                save_checkpoint(checkpoint_path, model, optimizer, scaler, result.history)
                last_save = time.monotonic()
            if on_epoch_end is not None:
                on_epoch_end(result)
        return result

    def _resume(self, path: Path, model: Distiller, optimizer: torch.optim.Optimizer,
                scaler: torch.amp.GradScaler) -> tuple[list[EpochRecord], str | None]:
        """Restore model, optimizer and scaler from `path`: (the epochs it holds, None). A checkpoint that cannot
        be used (refused by the safe loader, or not this run's state) is reported and the run starts from
        scratch: ([], why); with `strict_resume` it stops the run instead."""
        try:
            return load_checkpoint(path, model, optimizer, scaler), None
        except UnusableCheckpointError as e:
            if self.s.strict_resume:
                raise
            self.reporter.log(f"warning: {e}; starting this run again from scratch (the file will be replaced)")
            return [], str(e)

    def _train_epoch(
        self,
        model: Distiller,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        scaler: torch.amp.GradScaler,
        train_loader: DataLoader,
        eval_loader: DataLoader,
        recipe: Recipe,
        seed: int,
        epoch: int,
        val_loader: DataLoader | None = None,
    ) -> EpochRecord:
        device = self.s.device
        t0 = time.perf_counter()
        lr_first = lr_last = current_lr(optimizer)
        # Ranks draw their own dropout masks and CRD negatives (as timm seeds per rank); still a function of (seed,
        # epoch). Crops are not drawn from this stream: they are keyed by sample index (data/loaders.py), so a
        # sample gets the crop it gets in one process.
        _seed_everything(epoch_seed(seed, epoch) + (distributed.rank() if self.s.world_size > 1 else 0))
        sampler = train_loader.sampler
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        model.train()
        model.begin_epoch(epoch)
        model.on_epoch_start(epoch)

        hits = _TrainHits(device)
        seen = 0
        batches = 0
        steps = len(train_loader)
        self.reporter.phase_start(f"epoch {epoch}/{recipe.epochs}", total=steps)
        step_log = StepLog(self.reporter, epoch, self.s.sync_every_step if self.s.sync_every_step is not None
                           else device.type != "cuda", self.s.log_interval)
        amp_context = (lambda: _autocast(device, True)) if self.s.amp else contextlib.nullcontext
        scaled = scaler.is_enabled()
        for step, (images, labels, index) in enumerate(train_loader):
            images, labels, index = _on(device, images), _on(device, labels), _on(device, index)
            if self.s.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with amp_context():  # no autocast context at all without AMP: entering a disabled one costs a step
                logits, losses = self._forward_train(Batch(images, labels, index))
            total = _total(losses)
            lr_last = current_lr(optimizer)  # the lr this step uses (the scheduler moves on after it)
            # A non-finite loss stops the run: never step on NaN/Inf and carry on silently. On CPU the losses are
            # read here, and a non-finite total refused, before the optimizer steps on it; on a GPU a read would
            # stall the device every step, so they stay there and are checked on each logging interval's batch
            # of them (step_log.flush), before the epoch ends and so before any checkpoint holding a diverged
            # step. StepLog also keeps the epoch's loss sums.
            step_log.add(step, (epoch - 1) * steps + step + 1, losses, total, lr_last)
            optimizer.zero_grad(set_to_none=True)
            if scaled:
                scaler.scale(total).backward()
                scaler.step(optimizer)
                scaler.update()
            else:  # AMP off: the disabled scaler's three calls would only pass through to these two
                total.backward()
                optimizer.step()
            scheduler.step()  # the next step's lr

            hits.add(logits, labels)
            seen += labels.numel()
            batches += 1
        step_log.flush()
        correct = hits.count()
        train_s = time.perf_counter() - t0
        sums: dict[str, Any] = step_log.sums
        if self.s.world_size > 1:  # the epoch's means over the global batches; one model on every rank
            sums = {k: distributed.all_reduce_mean(torch.as_tensor(v, device=device)) for k, v in sums.items()}
            correct = distributed.all_reduce_sum(correct)
            seen = int(distributed.all_reduce_sum(torch.tensor(seen, device=device)))
            distributed.broadcast_buffers(model)

        t1 = time.perf_counter()
        ranks = self.s.world_size > 1
        ev = evaluate(model, eval_loader, device, amp=self.s.amp, channels_last=self.s.channels_last,
                      sum_over_ranks=ranks)
        val = None if val_loader is None else evaluate(model, val_loader, device, amp=self.s.amp,
                                                       channels_last=self.s.channels_last, sum_over_ranks=ranks)
        eval_s = time.perf_counter() - t1
        record = EpochRecord(
            epoch=epoch,
            lr=lr_first,
            lr_last=lr_last,
            losses={k: float(v) / max(batches, 1) for k, v in sums.items()},
            train_top1=100.0 * float(correct) / max(seen, 1),
            top1=ev.top1,
            top5=ev.top5,
            eval_loss=ev.loss,
            epoch_s=train_s,
            eval_s=eval_s,
            val_top1=None if val is None else val.top1,
            val_top5=None if val is None else val.top5,
        )
        self.reporter.phase_end({k: v for k, v in asdict(record).items() if v is not None})
        return record
