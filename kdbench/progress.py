"""Progress reporting from library code without printing: the library calls a Reporter, the CLI renders it."""

from __future__ import annotations

from typing import Any


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
