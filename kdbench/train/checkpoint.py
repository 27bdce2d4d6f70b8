"""A run's checkpoint: what it holds, how it is saved and loaded, and how a run resumes from it.

The checkpoint (`checkpoint.pt`, under the run's folder or a zoo entry's `work/`) holds model, optimizer, AMP
scaler and the epoch history: plain data only (tensors, numbers, strings, lists, dicts), so that it is read with
the safe loader (kdbench.core.safe_load), and written atomically (a crash mid-save keeps the previous one). The
model's state dict is the Distiller's: the student, the method's own modules and buffers (CRD's memory banks and
normalisers), so a method's state travels with it; what a method derives from the epoch (FitNet's stage, DKD's
warm-up) is set again by `on_epoch_start`.

An epoch-boundary checkpoint holds no RNG state: every epoch reseeds from (seed, epoch) (kdbench.train.engine), so
a resumed run has the numbers of an uninterrupted one. A step-level checkpoint (taken inside an epoch: on a stop
signal, or every `--checkpoint-every-steps`) also holds its :class:`StepPosition`: the steps done in the epoch, the
epoch's loss sums and hits so far, and the global RNG states after its last step, under the key `in_epoch` (with
the history inside it, so that code older than step checkpoints refuses such a file and starts over rather than
resume mid-epoch weights at an epoch boundary). Before anything is restored, the file is checked to hold this run's
state (its keys, the model's parameter names and shapes, the scaler's, the optimizer's groups): a checkpoint that
does not is refused whole.

:func:`resume` is how :class:`~kdbench.train.engine.Engine` starts a fit: from the epochs the checkpoint holds, or
from scratch (with a warning) when it is refused, unless the run asked to stop instead (`strict`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdbench.core import distributed
from kdbench.core.progress import Reporter
from kdbench.core.safe_load import UnusableCheckpointError, check_plain, load_plain_checkpoint
from kdbench.core.storage import atomic_torch_save
from kdbench.train import rng_state
from kdbench.train.epoch_record import EpochRecord

CHECKPOINT_KEYS = ("model", "optimizer", "scaler", "history")
STEP_KEY = "in_epoch"  # a step-level checkpoint's position and history (in place of "history")


@dataclass
class StepPosition:
    """Where inside an epoch a step-level checkpoint was taken: what the rest of the epoch continues from."""

    epoch: int  # the epoch it is inside (1-based); the history holds the epochs before it
    step: int  # the epoch's optimizer steps done (1 ... steps per epoch)
    lr_first: float  # the lr of the epoch's first step (its record's `lr`)
    lr_last: float  # the lr of its last step done
    loss_sums: dict[str, Any]  # the epoch's float32 loss sums so far, by name, plus "total" (StepLog.sums)
    correct: torch.Tensor  # top-1 hits on the epoch's training batches so far
    seen: int  # training samples so far
    rng: dict[str, Any]  # the global RNG states after its last step (kdbench.train.rng_state)

    def to_state(self) -> dict[str, Any]:
        names = list(self.loss_sums)
        return {"epoch": self.epoch, "step": self.step, "lr_first": self.lr_first, "lr_last": self.lr_last,
                "loss_names": names,
                # float32 bits as they are: the resumed epoch adds its next losses to these exact sums
                "loss_sums": torch.tensor([float(self.loss_sums[n]) for n in names], dtype=torch.float32),
                "correct": self.correct.detach().cpu(), "seen": self.seen, "rng": self.rng}

    @classmethod
    def from_state(cls, state: Any) -> StepPosition:
        """Raises ValueError on a position this code did not write."""
        try:
            names, sums = state["loss_names"], state["loss_sums"]
            ok = (isinstance(names, list) and all(isinstance(n, str) for n in names)
                  and isinstance(sums, torch.Tensor) and sums.dtype == torch.float32 and sums.shape == (len(names),)
                  and isinstance(state["correct"], torch.Tensor) and rng_state.is_valid(state["rng"])
                  and all(isinstance(state[k], int) for k in ("epoch", "step", "seen"))
                  and state["epoch"] >= 1 and state["step"] >= 1
                  and isinstance(state["lr_first"], float) and isinstance(state["lr_last"], float))
        except (TypeError, KeyError):
            ok = False
        if not ok:
            raise ValueError("not a step position")
        return cls(state["epoch"], state["step"], state["lr_first"], state["lr_last"],
                   dict(zip(names, sums.numpy(), strict=True)), state["correct"], state["seen"], state["rng"])


def saved_step(path: Path) -> tuple[int, int] | None:
    """(epoch, step) of the step-level checkpoint at `path` (the epoch it is inside, the steps of it done), read
    with its tensors memory-mapped rather than loaded; None for an epoch-boundary checkpoint, none, or a file the
    safe loader refuses. For a run's liveness (kdbench.store.liveness), which asks at every attempt's end."""
    try:
        state = load_plain_checkpoint(path, mmap=True)  # the safe loader's refusals are errors like any other here
    except Exception:  # noqa: BLE001 - missing, refused or damaged: no step saved that a resume could use
        return None
    inner = state.get(STEP_KEY) if isinstance(state, dict) else None
    if not isinstance(inner, dict):
        return None
    epoch, step = inner.get("epoch"), inner.get("step")
    ok = isinstance(epoch, int) and isinstance(step, int) and not isinstance(epoch, bool) and epoch >= 1 and step >= 1
    return (epoch, step) if ok else None


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                    history: list[EpochRecord], position: StepPosition | None = None) -> None:
    """Everything a resumed run needs, as plain data only (tensors, numbers, strings, lists, dicts), so that
    resuming reads it with the safe loader. At an epoch boundary (`position` None) no RNG state: every epoch
    reseeds from (seed, epoch); inside an epoch, its `position` (RNG states included)."""
    records = [asdict(r) for r in history]
    state: dict[str, Any] = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
    }
    if position is None:
        state["history"] = records
    else:
        state[STEP_KEY] = {**position.to_state(), "history": records}
    check_plain(state)  # fail at save time, loudly, rather than at resume time
    atomic_torch_save(state, path)


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler) -> list[EpochRecord]:
    """Restore a `save_checkpoint` file into model, optimizer and scaler; the epoch history it holds."""
    return load_checkpoint_at(path, model, optimizer, scaler)[0]


def load_checkpoint_at(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                       scaler: torch.amp.GradScaler) -> tuple[list[EpochRecord], StepPosition | None]:
    """Restore a `save_checkpoint` file into model, optimizer and scaler: the epoch history it holds, and where
    inside the next epoch it was taken (None: at the end of the history's last epoch).

    Everything is checked before anything is restored, so a refused checkpoint (UnusableCheckpointError) leaves
    model and optimizer exactly as they were: a restart from scratch gives a fresh run's numbers.
    """
    state = load_plain_checkpoint(path)
    bad = UnusableCheckpointError(f"checkpoint {path} does not hold this run's state")
    position = None
    if isinstance(state.get(STEP_KEY), dict):
        try:
            position = StepPosition.from_state(state[STEP_KEY])
        except ValueError:
            raise bad from None
        state = {**state, "history": state[STEP_KEY].get("history")}
    if not all(k in state for k in CHECKPOINT_KEYS) or not isinstance(state["history"], list):
        raise bad
    try:
        history = [EpochRecord(**r) for r in state["history"]]
    except TypeError:
        raise bad from None
    if position is not None and position.epoch != len(history) + 1:
        raise bad
    weights, own = state["model"], model.state_dict()
    if not isinstance(weights, dict) or set(weights) != set(own) or any(
        # The dtype too: load_state_dict casts without a word, so float bytes labelled int32 in a colleague's
        # checkpoint would resume as other weights. This run saved these tensors itself, in its own dtypes.
        not isinstance(weights[k], torch.Tensor) or weights[k].shape != v.shape or weights[k].dtype != v.dtype
        for k, v in own.items()
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
    return history, position


@dataclass
class Resumed:
    """What a fit starts from: the epochs done, the position inside the next one (None: its start), and why a
    checkpoint found was not used (None: it was, or there was none)."""

    history: list[EpochRecord]
    position: StepPosition | None = None
    refused: str | None = None


def resume(path: Path | None, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, *,
           strict: bool, world_size: int, reporter: Reporter) -> Resumed:
    """Restore model, optimizer and scaler from the checkpoint at `path` when there is one (the epochs it holds,
    and its step position when taken inside an epoch). A checkpoint that cannot be used (refused by the safe
    loader, or not this run's state) is reported and the run starts from scratch (`refused` says why); with
    `strict` it stops the run instead (UnusableCheckpointError).
    Data-parallel (`world_size` > 1): every rank resumes from rank 0's checkpoint, read once it is in place."""
    if world_size > 1:
        distributed.barrier()
    if path is None or not path.exists():
        return Resumed([])
    try:
        history, position = load_checkpoint_at(path, model, optimizer, scaler)
    except UnusableCheckpointError as e:
        if strict:
            raise
        reporter.log(f"warning: {e}; starting this run again from scratch (the file will be replaced)")
        return Resumed([], refused=str(e))
    if position is not None:
        reporter.log(f"resumed from epoch {position.epoch} step {position.step} checkpoint")
    elif history:
        reporter.log(f"resumed from epoch {len(history)} checkpoint")
    return Resumed(history, position)
