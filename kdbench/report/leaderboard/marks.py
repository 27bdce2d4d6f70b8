"""The markers a label or cell carries for how its model predicts (`‡` transductive, `§` needs its teacher at
inference) and the footnotes that explain them."""

from __future__ import annotations

import pandas as pd

from kdbench.report.leaderboard.board import (
    TEACHER_AT_INFERENCE,
    TEACHER_AT_INFERENCE_WORDS,
    TRANSDUCTIVE,
    TRANSDUCTIVE_WORDS,
)
from kdbench.report.leaderboard.runs import is_flag_set, is_missing


def with_teacher_mark(label: str, needs_teacher: bool) -> str:
    return f"{label} {TEACHER_AT_INFERENCE}" if needs_teacher else label


def mark_transductive(data: pd.DataFrame) -> dict[str, str]:
    """Row label → shown label: `‡` on rows whose every cell is transductive. A row with both kinds (the student
    alone across a GNN and a CNN column) keeps its label, and its transductive cells carry the marker instead
    (`data["cell_mark"]`, set here)."""
    data["cell_mark"] = ""
    shown = {}
    for row, g in data.groupby("row", sort=False):
        filled = g[g["n"] > 0]
        every = bool(len(filled)) and bool(filled["transductive"].all())
        shown[row] = f"{row} {TRANSDUCTIVE}" if every else row
        if not every:
            data.loc[filled.index[filled["transductive"].astype(bool)], "cell_mark"] = TRANSDUCTIVE
    return shown


def transductive_footer(runs: pd.DataFrame) -> list[str]:
    """The footnote of the transductive marker, with the evaluation batch size(s) of the marked runs."""
    marked = runs[runs["transductive"].map(is_flag_set).astype(bool)]
    if not len(marked):
        return []
    sizes = sorted({int(b) for b in marked["eval.batch_size"] if not is_missing(b)}
                   | {int(r["eval_batch_size"]) for r in marked["_setting"].map(lambda s: s["recipe"])
                      if not is_missing(r.get("eval_batch_size"))})
    size = ", ".join(str(b) for b in sizes) or "not recorded"
    return [f"{TRANSDUCTIVE} {TRANSDUCTIVE_WORDS} (batch size {size})"]


def teacher_at_inference_footer(runs: pd.DataFrame) -> list[str]:
    """The footnote of the `§` marker, when a run shown needs its teacher at inference."""
    if not len(runs) or not runs["teacher_at_inference"].map(is_flag_set).any():
        return []
    return [f"{TEACHER_AT_INFERENCE} {TEACHER_AT_INFERENCE_WORDS}"]
