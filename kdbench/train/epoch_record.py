"""The record of one trained epoch: what the engine's history, a run's `metrics.jsonl` and a checkpoint hold.

Its own module because both the engine (kdbench.train.engine), which makes it, and the checkpoint
(kdbench.train.checkpoint), which stores and restores a history of them, need it.
"""

from __future__ import annotations

from dataclasses import dataclass


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
