"""The `runs` table: one row per run record, whatever its status (failed, diverged and running ones included)."""

from __future__ import annotations

import pandas as pd

from kdbench.report.leaderboard.board import TRANSDUCTIVE, Leaderboard
from kdbench.report.leaderboard.cells import fmt_any
from kdbench.report.leaderboard.labels import label_rows, method_rank
from kdbench.report.leaderboard.marks import teacher_at_inference_footer, transductive_footer, with_teacher_mark
from kdbench.report.leaderboard.runs import is_flag_set, is_missing, selection_of

RUN_COLUMNS = ("run_id", "status", "method", "variant", "pair", "dataset", "recipe", "seed", "top1_last", "top1_best",
               "top5_last", "best_epoch", "best_selected_on", "epochs", "timing.train_s", "finished_at")


def runs_table(df: pd.DataFrame) -> Leaderboard:
    """One row per run record, any status, sorted by dataset, pair, method (paper order) and seed."""
    data = df.copy()
    labels = label_rows(data) if len(data) else {}
    data["variant"] = [labels[k][len(str(m)):].strip(" []") for k, m in zip(data["_row_key"], data["method"],
                                                                          strict=True)]
    data["_rank"] = data["method"].map(lambda m: method_rank(str(m)))
    data = data.sort_values(["dataset", "pair", "_rank", "variant", "seed"], key=_sortable, ignore_index=True)
    data["best_selected_on"] = [selection_of(s) if not is_missing(b) else None
                                for s, b in zip(data["best_selected_on"], data["top1_best"], strict=True)]
    marked = data["transductive"].map(is_flag_set).astype(bool)
    data["method"] = [f"{m} {TRANSDUCTIVE}" if t else m for m, t in zip(data["method"], marked, strict=True)]
    data["method"] = [with_teacher_mark(m, is_flag_set(t))
                      for m, t in zip(data["method"], data["teacher_at_inference"], strict=True)]
    footer_extra = transductive_footer(data) + teacher_at_inference_footer(data)
    data = data[list(RUN_COLUMNS)]
    for col in ("seed", "best_epoch", "epochs"):  # integers that NaN (runs without metrics) turned into floats
        data[col] = pd.array([None if is_missing(v) else int(v) for v in data[col]], dtype="Int64")
    display = data.astype(object).map(fmt_any)
    display.index = display.index.map(str)
    counts = data["status"].value_counts()
    footer = ["runs: " + ", ".join(f"{int(n)} {s}" for s, n in counts.items()) if len(data) else "no runs",
              "variant: the hyperparameters in which runs of the same method differ",
              "best_selected_on: the split that chose best_epoch (test: as the DKD tables; val: data.val_fraction)",
              *footer_extra]
    return Leaderboard("runs", "runs", display, data.reset_index(drop=True), footer, set())


def _sortable(col: pd.Series) -> pd.Series:
    if col.name == "_rank":
        return col
    return col.map(lambda v: "" if is_missing(v) else (f"{v:012.3f}" if isinstance(v, int | float) else str(v)))
