"""A run's checkpoint: what it holds, how it is saved and loaded, and how a run resumes from it.

The checkpoint (`checkpoint.pt`, under the run's folder or a zoo entry's `work/`) holds model, optimizer, AMP
scaler and the epoch history: plain data only (tensors, numbers, strings, lists, dicts), so that it is read with
the safe loader (kdbench.core.safe_load), and written atomically (a crash mid-save keeps the previous one). It holds
no RNG state: every epoch reseeds from (seed, epoch) (kdbench.train.engine), so a resumed run has the numbers of an
uninterrupted one. Before anything is restored, the file is checked to hold this run's state (its keys, the model's
parameter names and shapes, the scaler's, the optimizer's groups): a checkpoint that does not is refused whole.

:func:`resume` is how :class:`~kdbench.train.engine.Engine` starts a fit: from the epochs the checkpoint holds, or
from scratch (with a warning) when it is refused, unless the run asked to stop instead (`strict`).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from kdbench.core import distributed
from kdbench.core.progress import Reporter
from kdbench.core.safe_load import UnusableCheckpointError, check_plain, load_plain_checkpoint
from kdbench.core.storage import atomic_torch_save
from kdbench.train.epoch_record import EpochRecord

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
    return history


def resume(path: Path | None, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, *,
           strict: bool, world_size: int, reporter: Reporter) -> tuple[list[EpochRecord], str | None]:
    """Restore model, optimizer and scaler from the checkpoint at `path` when there is one: (the epochs it holds,
    None). A checkpoint that cannot be used (refused by the safe loader, or not this run's state) is reported and
    the run starts from scratch: ([], why); with `strict` it stops the run instead (UnusableCheckpointError).
    Data-parallel (`world_size` > 1): every rank resumes from rank 0's checkpoint, read once it is in place."""
    if world_size > 1:
        distributed.barrier()
    if path is None or not path.exists():
        return [], None
    try:
        history = load_checkpoint(path, model, optimizer, scaler)
    except UnusableCheckpointError as e:
        if strict:
            raise
        reporter.log(f"warning: {e}; starting this run again from scratch (the file will be replaced)")
        return [], str(e)
    if history:
        reporter.log(f"resumed from epoch {len(history)} checkpoint")
    return history, None
