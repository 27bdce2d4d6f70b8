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

A step-level checkpoint (kdbench.train.checkpoint.StepPosition) carries `sums` after a `flush`; the resumed
epoch's StepLog starts from them (`sums=`) and adds the rest of the epoch's rows to the same float32 bits, so the
epoch's means are those of an uninterrupted epoch.

`every_step` (the CPU default, where a read costs nothing) reads and reports each step as it happens; the engine
calls `add` before the optimizer step, so a non-finite loss is refused before it is stepped on.

The epoch's loss sums (`sums`) are added up here, on the host, from the numbers read above, rather than on the
device with a tensor add per loss and step (each a few µs of dispatch). They are float32 sums taken in step order,
as float32 tensor adds would give, so the epoch means keep their bits: IEEE addition rounds the same on either.
The rows read are held and folded when `sums` is asked for (or the loss names change), in one `np.cumsum`, whose
accumulation is sequential in float32: the same additions in the same order as a running sum per step, without
~10 µs of numpy scalar arithmetic inside every training step.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from kdbench.core.errors import RunDiverged
from kdbench.core.progress import Reporter

_ZERO = np.float32(0.0)


def _overrides(reporter: Reporter, name: str) -> bool:
    """Whether `reporter.<name>` is anything but the base Reporter's no-op (a subclass's method, one set on the
    instance, or a duck-typed reporter's own)."""
    return getattr(getattr(reporter, name), "__func__", None) is not getattr(Reporter, name)


class StepLog:
    def __init__(self, reporter: Reporter, epoch: int, every_step: bool, interval: int = 50,
                 sums: dict[str, np.float32] | None = None) -> None:
        self.reporter = reporter
        self.epoch = epoch
        self.every_step = every_step
        self.interval = max(1, interval)
        # folded so far: by name, plus "total" (`sums`: the epoch's sums before a step checkpoint it resumes from)
        self._sums: dict[str, np.float32] = {k: np.float32(v) for k, v in (sums or {}).items()}
        self._rows: list[list[float]] = []  # read, not yet folded into _sums; each in the order of _row_names
        self._row_names: list[str] = []
        self._names: list[str] = []
        self._pending: list[tuple[int, int, torch.Tensor, float]] = []  # (step in epoch, global step, row, lr)
        # A reporter that leaves `step` / `iteration` as the base class's no-ops (the null reporter, the plain-line
        # one of sweep jobs) is not called per step: the call and the dict built for it cost µs a step for nothing.
        self._report_steps = _overrides(reporter, "step")
        self._report_iterations = _overrides(reporter, "iteration")

    @property
    def sums(self) -> dict[str, np.float32]:
        """By name, plus "total": the float32 sums over the epoch's steps read so far, in step order."""
        self._fold()
        return self._sums

    def add(self, step: int, global_step: int, losses: dict[str, torch.Tensor], total: torch.Tensor,
            lr: float) -> None:
        """Step `step` (0-based in the epoch; `global_step` 1-based across epochs) ran with these weighted
        losses and their `total` at learning rate `lr`. With `every_step`, raises RunDiverged now when the
        total is not finite."""
        names = [*losses, "total"]
        if self.every_step:
            terms = list(losses.values())
            row = [v.item() for v in terms]
            # One term is its own total (the engine's sum of one term is that tensor): not read twice.
            row.append(row[0] if len(terms) == 1 and total is terms[0] else total.item())
            if not math.isfinite(row[-1]):
                raise RunDiverged(self.epoch, step, dict(zip(names[:-1], row[:-1], strict=True)))
            self._hold(names, row)
            if self._report_steps:
                self.reporter.step(1, loss=row[-1])
            if self._report_iterations:
                self.reporter.iteration(global_step, dict(zip(names, row, strict=True)), lr)
            return
        if names != self._names:  # a method whose loss terms change (a new stage) starts a new batch of rows
            self.flush()
            self._names = names
        row = torch.stack([v.detach().float().reshape(()) for v in (*losses.values(), total)])
        self._pending.append((step, global_step, row, lr))
        if self._report_steps:
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
            self._hold(self._names, row)
            if self._report_iterations:
                self.reporter.iteration(global_step, dict(zip(self._names, row, strict=True)), lr)
        if self._report_steps:
            self.reporter.step(0, loss=values[-1, -1].item())
        self._pending.clear()

    def _hold(self, names: list[str], row: list[float]) -> None:
        if names != self._row_names:  # a method whose loss terms change (a new stage): fold the old rows first
            self._fold()
            self._row_names = names
        self._rows.append(row)

    def _fold(self) -> None:
        """Add the held rows to the sums, in step order. Row 0 of the stacked array is each name's sum so far (0
        for a new name: 0 + x is x, as a running sum from 0 gives); converting to float32 rounds a loss read in
        another precision as `np.float32(x)` (and `.float()`) would."""
        if not self._rows:
            return
        start = [self._sums.get(name, _ZERO) for name in self._row_names]
        folded = np.cumsum(np.array([start, *self._rows], dtype=np.float32), axis=0)[-1]
        self._sums.update(zip(self._row_names, folded, strict=True))
        self._rows.clear()
