"""Per-step losses from the training loop to the divergence check and the reporter, with few device syncs.

Reading a CUDA tensor on the host (`.item()`, `float()`) waits for every queued kernel: done at each step, the
GPU idles while the host catches up. :class:`StepLog` keeps each step's weighted losses (and their total) on the
device and reads them once per `interval` steps, and at the end of the epoch, in one transfer; then it raises
:class:`~kdbench.errors.RunDiverged` at the first step whose total was not finite (the same epoch, step and
losses the per-step check reports) and hands each step's numbers to `Reporter.iteration` in order. The engine
calls `flush()` before evaluating and checkpointing an epoch, so no checkpoint ever holds a diverged step.
Steps taken after a non-finite loss within the interval change nothing that is kept: the run ends as
`diverged` and its checkpoint is that of the previous epoch.

`every_step` (the CPU default, where a read costs nothing) reports each step as it happens, as the engine always
did; the engine then also checks finiteness before the optimizer step.
"""

from __future__ import annotations

import torch

from .errors import RunDiverged
from .progress import Reporter


class StepLog:
    def __init__(self, reporter: Reporter, epoch: int, every_step: bool, interval: int = 50) -> None:
        self.reporter = reporter
        self.epoch = epoch
        self.every_step = every_step
        self.interval = max(1, interval)
        self._names: list[str] = []
        self._pending: list[tuple[int, int, torch.Tensor, float]] = []  # (step in epoch, global step, row, lr)

    def add(self, step: int, global_step: int, losses: dict[str, torch.Tensor], total: torch.Tensor,
            lr: float) -> None:
        """Step `step` (0-based in the epoch; `global_step` 1-based across epochs) ran with these weighted
        losses and their `total` at learning rate `lr`."""
        if self.every_step:
            self.reporter.step(1, loss=total.detach())
            self.reporter.iteration(global_step, {**{k: v.detach() for k, v in losses.items()},
                                                  "total": total.detach()}, lr)
            return
        names = [*losses, "total"]
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
            self.reporter.iteration(global_step, dict(zip(self._names, row, strict=True)), lr)
        self.reporter.step(0, loss=values[-1, -1].item())
        self._pending.clear()
