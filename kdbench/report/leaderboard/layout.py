"""The step the grid tables (`methods`, `ablation`, `pivot`) share, and the numbers every table's cell is made of.

`cell_numbers` turns the runs of one cell into its numbers (mean, std and count over seeds, run ids, how the model
predicts); `best_in_groups` (in `stats`) marks the best cells; `layout` places each cell's `mean ± std (n)` and
its marks on the table's rows × columns, bolds the best and returns the `Leaderboard`. What a table decides for
itself (which runs form a cell, the row and column labels and their order, its marks, its footer) comes in as a
frozen `GridOptions`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from kdbench.report.leaderboard.board import Leaderboard
from kdbench.report.leaderboard.cells import format_cell
from kdbench.report.leaderboard.runs import is_flag_set
from kdbench.report.leaderboard.stats import first_present, summarize

Cell = dict[str, Any]  # one row of a table's data (its numbers), as `DataFrame.to_dict("records")` gives it


@dataclass(frozen=True)
class GridOptions:
    """How one grid table is laid out: its kind and title, the row header, the row and column labels in order,
    where each cell goes and what follows its `mean ± std (n)` (`†`, `‡`, `⇑`…)."""

    kind: str
    title: str
    index_name: str
    rows: Sequence[str]
    cols: Sequence[str]
    place: Callable[[Cell], tuple[str, str]]  # a cell's (row label, column label)
    marks: Callable[[Cell], str] = lambda cell: ""


def cell_numbers(runs: pd.DataFrame, metric: str) -> dict[str, Any]:
    """The numbers of one cell from its completed runs: mean, std and count over seeds, the run ids, the test
    set's size and whether the model is transductive or needs its teacher at inference."""
    mean, std, n = summarize(runs[metric])
    return {"mean": mean, "std": std, "n": n, "run_ids": " ".join(sorted(runs["run_id"])),
            "transductive": bool(runs["transductive"].map(is_flag_set).any()),
            "teacher_at_inference": bool(runs["teacher_at_inference"].map(is_flag_set).any()),
            "num_test": first_present(runs["data.num_test"])}


def layout(data: pd.DataFrame, options: GridOptions, footer: list[str]) -> Leaderboard:
    """The `Leaderboard` of a grid table: each cell of `data` (with its `best` mark) formatted in its place,
    `—` where no cell is, the best cells bold."""
    table = pd.DataFrame("—", index=pd.Index(list(options.rows), name=options.index_name),
                         columns=list(options.cols), dtype=object)
    bold = set()
    for cell in data.to_dict("records"):
        row, col = options.place(cell)
        table.loc[row, col] = format_cell(cell["mean"], cell["std"], cell["n"], options.marks(cell))
        if cell["best"]:
            bold.add((row, col))
    return Leaderboard(options.kind, options.title, table, data, footer, bold)
