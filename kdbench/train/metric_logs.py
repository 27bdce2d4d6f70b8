"""`--log tensorboard` / `--log wandb`: a run's curves in a logging tool, fed through the Reporter interface.

The engine reports every optimizer step (`Reporter.iteration`: the weighted losses by name, their total, the lr)
and every epoch (`Reporter.phase_end`: the epoch's record). :class:`MetricLogReporter` passes everything on to
the CLI's reporter and writes those numbers to each backend asked for, under `runs/<id>/logs/<backend>/`:
- tensorboard: event files (`torch.utils.tensorboard.SummaryWriter`), tags `train/<loss>`, `train/lr` per step
  and `epoch/<field>`, `epoch/loss/<loss>` per epoch;
- wandb: offline by default (`WANDB_MODE` overrides it; `wandb sync` uploads later), one wandb run per kdbench
  run id, resumed with it; the same names, `train/*` against `iteration`, `epoch/*` against `epoch`.

The backends are optional extras (`pip install 'kdbench[tensorboard]'`, `'kdbench[wandb]'`), imported only when
asked for. `metrics.jsonl` stays the source of truth: a resumed run logs the epochs it recomputes again.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kdbench.core.errors import UserError, unknown_name
from kdbench.core.progress import Reporter

# backend → the module it needs (what `check_backends` looks for before a run starts).
BACKENDS = {"tensorboard": "tensorboard", "wandb": "wandb"}


def check_backends(backends: Sequence[str]) -> None:
    """A UserError for an unknown backend or one whose package is not installed (before any record is written)."""
    for name in backends:
        if name not in BACKENDS:
            raise unknown_name("--log backend", name, BACKENDS)
        if importlib.util.find_spec(BACKENDS[name]) is None:
            raise UserError(f"--log {name} needs the {BACKENDS[name]} package: pip install 'kdbench[{name}]'")


class _TensorBoard:
    def __init__(self, folder: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder))

    def iteration(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def epoch(self, epoch: int, values: dict[str, float]) -> None:
        self.iteration(epoch, values)

    def close(self) -> None:
        self.writer.close()


class _Wandb:
    def __init__(self, folder: Path, run_id: str, config: dict[str, Any]) -> None:
        os.environ.setdefault("WANDB_SILENT", "true")  # stdout carries `kdbench run --json`
        import wandb

        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "kdbench"), name=run_id, id=run_id,
                              resume="allow", dir=str(folder), config=config,
                              mode=os.environ.get("WANDB_MODE", "offline"))
        self.run.define_metric("iteration")
        self.run.define_metric("train/*", step_metric="iteration")
        self.run.define_metric("epoch")
        self.run.define_metric("epoch/*", step_metric="epoch")

    def iteration(self, step: int, values: dict[str, float]) -> None:
        self.run.log({"iteration": step, **values})

    def epoch(self, epoch: int, values: dict[str, float]) -> None:
        self.run.log({"epoch": epoch, **values})

    def close(self) -> None:
        self.run.finish()


class MetricLogReporter(Reporter):
    """Everything to `inner` (progress bars, log lines) and the run's numbers to the logging backends."""

    def __init__(self, inner: Reporter, writers: list[Any]) -> None:
        self.inner = inner
        self.writers = writers

    def phase_start(self, label: str, total: int | None = None) -> None:
        self.inner.phase_start(label, total)

    def step(self, n: int = 1, **info: Any) -> None:
        self.inner.step(n, **info)

    def iteration(self, step: int, losses: dict[str, Any], lr: float) -> None:
        self.inner.iteration(step, losses, lr)
        values = {f"train/{name}": float(value) for name, value in losses.items()}
        values["train/lr"] = float(lr)
        for writer in self.writers:
            writer.iteration(step, values)

    def phase_end(self, summary: dict[str, Any] | None = None) -> None:
        self.inner.phase_end(summary)
        if not summary or "epoch" not in summary:
            return
        values = {f"epoch/{k}": float(v) for k, v in summary.items()
                  if isinstance(v, int | float) and not isinstance(v, bool) and k != "epoch"}
        values.update({f"epoch/loss/{k}": float(v) for k, v in (summary.get("losses") or {}).items()})
        for writer in self.writers:
            writer.epoch(int(summary["epoch"]), values)

    def log(self, message: str) -> None:
        self.inner.log(message)


@contextmanager
def metric_logs(backends: Sequence[str], inner: Reporter, folder: Path, run_id: str,
                config: dict[str, Any]) -> Iterator[Reporter]:
    """The reporter to train with: `inner` itself without backends, else a MetricLogReporter writing under
    `folder/<backend>/`; the backends are closed (files flushed) when the block ends, however it ends."""
    if not backends:
        yield inner
        return
    writers: list[Any] = []
    try:
        for name in dict.fromkeys(backends):
            writers.append(_TensorBoard(folder / name) if name == "tensorboard" else _Wandb(folder / name, run_id,
                                                                                            config))
        yield MetricLogReporter(inner, writers)
    finally:
        for writer in writers:
            writer.close()
