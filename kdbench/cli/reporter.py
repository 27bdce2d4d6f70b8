"""Rich rendering of library progress: bars on a terminal, one plain line per epoch otherwise (logs, SLURM)."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kdbench.core.progress import Reporter, epoch_line

# Results (tables, records) go to stdout so they can be piped; progress, logs and errors go to stderr.
# Piped (a file, a test, a SLURM log) rich would wrap tables at 80 columns and cut cells: render them wide.
out = Console(width=None if sys.stdout.isatty() else 200)
console = Console(stderr=True)


class RichReporter(Reporter):
    def __init__(self, enabled: bool | None = None) -> None:
        self.live = sys.stderr.isatty() if enabled is None else enabled
        self._progress: Progress | None = None
        self._task: Any = None
        self._label = ""

    def phase_start(self, label: str, total: int | None = None) -> None:
        self._label = label
        if not self.live:
            return
        if self._progress is None:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console, transient=True,
            )
            self._progress.start()
        self._task = self._progress.add_task(escape(label), total=total, info="")

    def step(self, n: int = 1, **info: Any) -> None:
        if self._progress is not None and self._task is not None:
            text = " ".join(f"{k}={float(v):.3f}" for k, v in info.items())
            self._progress.update(self._task, advance=n, info=text)

    def phase_end(self, summary: dict[str, Any] | None = None) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None
        if summary and "top1" in summary:
            console.print(escape(epoch_line(self._label, summary)), highlight=False)

    def log(self, message: str) -> None:
        # Messages carry user text (paths, run labels like `cnn2gnn [k=0]`): never read as rich markup.
        console.print(f"[dim]›[/dim] {escape(message)}", highlight=False)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
