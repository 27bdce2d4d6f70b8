"""The one training engine: data → method → losses → optimizer step → evaluator, for every method.

It never names a method. It asks the method (a :class:`~kdbench.method.Distiller`) for logits and a dict of
weighted losses, sums them, logs each by name, steps the optimizer (the only `backward()`/`step()` in
kdbench), evaluates the student each epoch, and checkpoints so that an interrupted run resumes with the same
numbers as an uninterrupted one: the learning rate is a function of the epoch, the data order and the global
RNGs are reseeded from (seed, epoch) at every epoch start, and the checkpoint carries model, optimizer, AMP
scaler and history.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from .errors import RunDiverged
from .evaluate import _autocast, evaluate
from .method import Batch, Distiller
from .progress import NULL_REPORTER, Reporter
from .recipe import Recipe
from .schedule import build_optimizer, lr_at_epoch, set_lr
from .storage import atomic_torch_save


@dataclass
class EpochRecord:
    epoch: int
    lr: float
    losses: dict[str, float]  # mean over the epoch's batches, by name, plus "total"
    train_top1: float
    top1: float
    top5: float
    eval_loss: float
    epoch_s: float
    eval_s: float


@dataclass
class FitResult:
    history: list[EpochRecord] = field(default_factory=list)
    resumed_from: int = 0  # epochs already done when this process started

    @property
    def last(self) -> EpochRecord:
        return self.history[-1]

    @property
    def best(self) -> EpochRecord:
        # Highest top-1; the earliest epoch wins ties (what "best epoch" means in the DKD tables).
        return max(self.history, key=lambda r: (r.top1, -r.epoch))

    def summary(self) -> dict[str, Any]:
        best = self.best
        return {
            "top1_last": self.last.top1,
            "top5_last": self.last.top5,
            "top1_best": best.top1,
            "top5_best": best.top5,
            "best_epoch": best.epoch,
            "epochs": self.last.epoch,
        }


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919) % (2**31)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class EngineSettings:
    device: torch.device
    amp: bool = False
    channels_last: bool = False
    # Save a checkpoint after an epoch when this many seconds passed since the last one (0: every epoch).
    # The final epoch is always saved.
    checkpoint_interval_s: float = 0.0


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
    ) -> FitResult:
        device = self.s.device
        model.to(device)
        if self.s.channels_last:
            model.to(memory_format=torch.channels_last)
        optimizer = build_optimizer(model.trainable_parameters(), recipe)
        scaler = torch.amp.GradScaler(device.type, enabled=self.s.amp and device.type == "cuda")
        result = FitResult()
        if checkpoint_path is not None and checkpoint_path.exists():
            state = torch.load(checkpoint_path, map_location=device, weights_only=False)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state["scaler"])
            result.history = [EpochRecord(**r) for r in state["history"]]
            result.resumed_from = len(result.history)
            self.reporter.log(f"resumed from epoch {result.resumed_from} checkpoint")
        last_save = time.monotonic()

        for epoch in range(len(result.history) + 1, recipe.epochs + 1):
            record = self._train_epoch(model, optimizer, scaler, train_loader, eval_loader, recipe, seed, epoch)
            result.history.append(record)
            due = time.monotonic() - last_save >= self.s.checkpoint_interval_s or epoch == recipe.epochs
            if checkpoint_path is not None and due:
                atomic_torch_save(
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scaler": scaler.state_dict(),
                        "history": [asdict(r) for r in result.history],
                    },
                    checkpoint_path,
                )
                last_save = time.monotonic()
            if on_epoch_end is not None:
                on_epoch_end(result)
        return result

    def _train_epoch(
        self,
        model: Distiller,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        train_loader: DataLoader,
        eval_loader: DataLoader,
        recipe: Recipe,
        seed: int,
        epoch: int,
    ) -> EpochRecord:
        device = self.s.device
        t0 = time.perf_counter()
        lr = lr_at_epoch(recipe, epoch)
        set_lr(optimizer, lr)
        _seed_everything(epoch_seed(seed, epoch))
        sampler = train_loader.sampler
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        model.train()
        model.on_epoch_start(epoch)

        sums: dict[str, torch.Tensor] = {}
        correct = torch.zeros((), device=device)
        seen = 0
        batches = 0
        self.reporter.phase_start(f"epoch {epoch}/{recipe.epochs}", total=len(train_loader))
        for step, (images, labels, index) in enumerate(train_loader):
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            index = index.to(device, non_blocking=True)
            if self.s.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with _autocast(device, self.s.amp):
                logits, losses = model.forward_train(Batch(images, labels, index))
            total = sum(losses.values())
            # A non-finite loss stops the run: never step on NaN/Inf and carry on silently.
            if not torch.isfinite(total.detach()).item():
                raise RunDiverged(epoch, step, {k: float(v.detach()) for k, v in losses.items()})
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            scaler.step(optimizer)
            scaler.update()

            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + value.detach().float()
            sums["total"] = sums.get("total", 0.0) + total.detach().float()
            correct += (logits.detach().argmax(1) == labels).sum()
            seen += labels.numel()
            batches += 1
            self.reporter.step(1, loss=total.detach())
        train_s = time.perf_counter() - t0

        t1 = time.perf_counter()
        ev = evaluate(model, eval_loader, device, amp=self.s.amp, channels_last=self.s.channels_last)
        eval_s = time.perf_counter() - t1
        record = EpochRecord(
            epoch=epoch,
            lr=lr,
            losses={k: float(v) / max(batches, 1) for k, v in sums.items()},
            train_top1=100.0 * float(correct) / max(seen, 1),
            top1=ev.top1,
            top5=ev.top5,
            eval_loss=ev.loss,
            epoch_s=train_s,
            eval_s=eval_s,
        )
        self.reporter.phase_end(asdict(record))
        return record
