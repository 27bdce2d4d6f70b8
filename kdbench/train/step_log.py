"""Per-step losses from the training loop to the divergence check, the reporter and the epoch's loss sums, with
few device syncs.

Reading a CUDA tensor on the host (`.item()`, `float()`) waits for every queued kernel: done at each step, the
GPU idles while the host catches up. :class:`StepLog` keeps each step's weighted losses (and their total) on the
device and reads them once per `interval` steps, and at the end of the epoch, in one transfer; then it raises
:class:`~kdbench.core.errors.RunDiverged` at the first step whose total was not finite (the same epoch, step and
losses the per-step check reports) and hands each step's numbers to `Reporter.iteration` in order. The engine
calls `flush()` before evaluating and checkpointing an epoch, so no checkpoint ever holds a diverged step.
Steps taken after a non-finite loss within the interval change nothing that is kept: the run ends as
`diverged` and its checkpoint is that of the previous epoch.

`every_step` (the CPU default, where a read costs nothing) reads and reports each step as it happens; the engine
calls `add` before the optimizer step, so a non-finite loss is refused before it is stepped on.

The epoch's loss sums (`sums`) are added up here, on the host, from the numbers read above, rather than on the
device with a tensor add per loss and step (each a few µs of dispatch). They are float32 sums taken in step order,
as float32 tensor adds would give, so the epoch means keep their bits: IEEE addition rounds the same on either.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from kdbench.core.errors import RunDiverged
from kdbench.core.progress import Reporter

_ZERO = np.float32(0.0)


class StepLog:
    def __init__(self, reporter: Reporter, epoch: int, every_step: bool, interval: int = 50) -> None:
        self.reporter = reporter
        self.epoch = epoch
        self.every_step = every_step
        self.interval = max(1, interval)
        self.sums: dict[str, np.float32] = {}  # by name, plus "total": float32 sums over the epoch's steps so far
        self._names: list[str] = []
        self._pending: list[tuple[int, int, torch.Tensor, float]] = []  # (step in epoch, global step, row, lr)

    def add(self, step: int, global_step: int, losses: dict[str, torch.Tensor], total: torch.Tensor,
            lr: float) -> None:
        """Step `step` (0-based in the epoch; `global_step` 1-based across epochs) ran with these weighted
        losses and their `total` at learning rate `lr`. With `every_step`, raises RunDiverged now when the
        total is not finite."""
        names = [*losses, "total"]
        if self.every_step:
            row = [v.item() for v in losses.values()]
            row.append(total.item())
            if not math.isfinite(row[-1]):
                raise RunDiverged(self.epoch, step, dict(zip(names[:-1], row[:-1], strict=True)))
            self._tally(names, row)
            self.reporter.step(1, loss=row[-1])
            self.reporter.iteration(global_step, dict(zip(names, row, strict=True)), lr)
            return
        if names != self._names:  # a method whose loss terms change (a new stage) starts a new batch of rows
            self.flush()
            self._names = names
        row = torch.stack([v.detach().float().reshape(()) for v in (*losses.values(), total)])
        self._pending.append((step, global_step, row, lr))
        self.reporter.step(1)
        if len(self._pending) >= self.interval:
            self.flush()

    def flush(self) -> None:
        """Read the pending steps (one device→host transfer), stop at the first non-finite one, report them."""
        if not self._pending:
            return
        values = torch.stack([row for _, _, row, _ in self._pending]).cpu()
        finite = torch.isfinite(values[:, -1])
        if not bool(finite.all()):
            i = int((~finite).nonzero()[0, 0])
            step = self._pending[i][0]
            self._pending.clear()
            raise RunDiverged(self.epoch, step, dict(zip(self._names[:-1], values[i, :-1].tolist(), strict=True)))
        for (_, global_step, _, lr), row in zip(self._pending, values.tolist(), strict=True):
            self._tally(self._names, row)
            self.reporter.iteration(global_step, dict(zip(self._names, row, strict=True)), lr)
        self.reporter.step(0, loss=values[-1, -1].item())
        self._pending.clear()

    def _tally(self, names: list[str], row: list[float]) -> None:
        # np.float32(x) rounds a loss held in another dtype (float64, say) as `.float()` would.
        for name, x in zip(names, row, strict=True):
            self.sums[name] = self.sums.get(name, _ZERO) + np.float32(x)
