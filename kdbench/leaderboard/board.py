"""What a leaderboard is: the table kinds and metrics it knows, and the `Leaderboard` it builds (display cells,
the numbers behind them, the best cells and the footer)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

TABLES = ("methods", "ladder", "runs", "ablation", "pivot")
METRICS = ("top1_last", "top1_best", "top5_last", "top5_best")

# The teacher's own accuracy, as the run record's teacher_metrics (flattened with a `teacher_` prefix) holds it.
TEACHER_METRIC = {"top1_last": "teacher_top1", "top1_best": "teacher_top1_best", "top5_last": "teacher_top5",
                  "top5_best": "teacher_top5_best"}

METRIC_WORDS = {
    "top1_last": "top-1 (%) at the last epoch (as the CRD tables report)",
    "top1_best": "top-1 (%) at the best epoch (as the DKD tables report)",
    "top5_last": "top-5 (%) at the last epoch",
    "top5_best": "top-5 (%) at the best epoch",
}
TEACHER_ROW = "teacher"
FEWER_SEEDS = "†"
EXCLUDED_STATUSES = ("failed", "diverged", "running")
DECIMALS = 2


@dataclass
class Leaderboard:
    """One rendered-to-be table: display cells, the numbers behind them, the marked cells and the footer."""

    kind: str
    title: str
    table: pd.DataFrame  # display strings; the index (when named) is the row label column
    data: pd.DataFrame  # tidy numbers behind the cells (what CSV writes)
    footer: list[str] = field(default_factory=list)
    bold: set[tuple[str, str]] = field(default_factory=set)  # (row label, column label) of the best cells

    def render(self, fmt: str = "markdown") -> str:
        from .render import render  # render imports this module

        return render(self, fmt)
