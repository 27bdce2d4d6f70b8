"""Progress reporting from library code without printing: the library calls a Reporter, the CLI renders it."""

from __future__ import annotations

import sys
from typing import Any, TextIO


class Reporter:
    """No-op reporter; subclass and override what you want to show."""

    def phase_start(self, label: str, total: int | None = None) -> None:
        """A phase (teacher training epoch, distillation epoch, evaluation) with `total` steps begins."""

    def step(self, n: int = 1, **info: Any) -> None:
        """`n` steps of the current phase are done; `info` holds running values (e.g. loss)."""

    def iteration(self, step: int, losses: dict[str, Any], lr: float) -> None:
        """One optimizer step of a training phase is done: `step` counts the phase's steps from 1 across epochs,
        `losses` holds the weighted losses by name (detached tensors) and "total", `lr` the learning rate used."""

    def phase_end(self, summary: dict[str, Any] | None = None) -> None:
        """The current phase ended; `summary` holds its results (e.g. epoch metrics)."""

    def log(self, message: str) -> None:
        """A line worth showing a person (e.g. "teacher loaded from the zoo")."""


NULL_REPORTER = Reporter()


def epoch_line(label: str, summary: dict[str, Any]) -> str:
    """One epoch's summary as one line (the terminal and the plain-log reporters print the same words)."""
    losses = " ".join(f"{k}={v:.4f}" for k, v in summary.get("losses", {}).items())
    val = f" val_top1={summary['val_top1']:.2f}" if summary.get("val_top1") is not None else ""
    return (f"{label}: lr={summary['lr']:.4g} {losses} train_top1={summary['train_top1']:.2f} "
            f"top1={summary['top1']:.2f} top5={summary['top5']:.2f}{val} ({summary['epoch_s']:.1f}s)")


class LineReporter(Reporter):
    """Plain lines, one per epoch and per message, for logs nobody watches live: a SLURM job's output, rank 0 of
    a data-parallel run. No terminal UI, so library layers (sweep jobs, the nproc launcher) can use it."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._label = ""

    def _print(self, text: str) -> None:
        print(text, file=self._stream or sys.stderr, flush=True)

    def phase_start(self, label: str, total: int | None = None) -> None:
        self._label = label

    def phase_end(self, summary: dict[str, Any] | None = None) -> None:
        if summary and "top1" in summary:
            self._print(epoch_line(self._label, summary))

    def log(self, message: str) -> None:
        self._print(f"› {message}")
