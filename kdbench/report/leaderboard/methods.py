"""The `methods` table (teacher, student alone and every KD method per dataset · pair · recipe) and the `ablation`
table (one method's variants beside the student alone), laid out by `layout`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from kdbench.core.errors import UserError
from kdbench.report.leaderboard.board import (
    FEWER_SEEDS,
    METRIC_WORDS,
    TEACHER_ROW,
    TEST_WORDS,
    Leaderboard,
    is_best_metric,
    significance_words,
)
from kdbench.report.leaderboard.footers import (
    binomial_footer,
    caveats_footer,
    intervals_footer,
    power_footer,
    selection_footer,
)
from kdbench.report.leaderboard.intervals import interval_text
from kdbench.report.leaderboard.labels import label_columns, label_rows, method_rank, natural_key
from kdbench.report.leaderboard.layout import Cell, GridOptions, cell_numbers, layout
from kdbench.report.leaderboard.marks import (
    mark_transductive,
    teacher_at_inference_footer,
    transductive_footer,
    with_teacher_mark,
)
from kdbench.report.leaderboard.runs import clean, is_missing
from kdbench.report.leaderboard.stats import (
    completed,
    family_sizes,
    first_present,
    mark_best_and_flags,
    mark_significance,
    per_seed,
    teacher_stats,
    with_test_set_error,
)

DATA_COLUMNS = ["row", "method", "column", "dataset", "teacher", "student", "recipe", "transductive",
                "teacher_at_inference", "mean", "std", "n", "run_ids", "num_test"]


@dataclass(frozen=True)
class Columns:
    """The table's columns: one run standing for each (`frame`, keyed by `_col_key`), which columns each student
    setting's runs without a teacher join (`attach`), and how many student-alone columns went to the ladder."""

    frame: pd.DataFrame
    attach: dict[str, list[str]]
    ladder_only: int


def methods_table(df: pd.DataFrame, metric: str = "top1_last", methods: Sequence[str] | None = None,
                  title: str | None = None, *, family: str = "table", ci: bool = False) -> Leaderboard:
    """The KD-method comparison: teacher, student alone (ce) and every method, per dataset · pair · recipe.
    `family` is what Holm corrects across (`mark_significance`); `ci` adds the intervals to the cells."""
    scope = df if methods is None else df[df["method"].isin(list(methods))]
    done = completed(scope, metric)
    columns = _columns(done)
    data = _with_marks(*_cells(scope, done, columns, metric), metric, family)
    rows = sorted(data["row"].unique(), key=lambda r: (*method_rank(data.loc[data["row"] == r, "method"].iloc[0]),
                                                       natural_key(r)))
    # Teacher → student pairs first, then students that were only trained alone.
    lone_cols = set(data.loc[data["teacher"].map(is_missing).astype(bool), "column"])
    cols = sorted(data["column"].unique(), key=lambda c: (c in lone_cols, c))
    options = GridOptions("methods", title or f"KD methods ({metric})", "method", rows, cols,
                          place=lambda cell: (cell["row"], cell["column"]),
                          marks=_cell_marks_with_intervals if ci else _cell_marks)
    return layout(data, options, _footer(scope, done, data, columns, options, metric, family, ci))


def ablation_table(df: pd.DataFrame, metric: str = "top1_last", method: str = "cnn2gnn", *, family: str = "table",
                   ci: bool = False) -> Leaderboard:
    """One method's variants (rows labelled by the hyperparameters that differ) beside the student alone."""
    if method not in set(df["method"]):
        present = sorted({str(m) for m in df["method"] if not is_missing(m)})
        raise UserError(f"no runs of method '{method}' to ablate; methods with runs: {', '.join(present) or 'none'}")
    students = set(df.loc[df["method"] == method, "student"])
    scope = df[(df["method"] == method) | ((df["method"] == "ce") & df["student"].isin(list(students)))]
    board = methods_table(scope, metric, title=f"{method} ablation ({metric})", family=family, ci=ci)
    board.kind = "ablation"
    return board


def _columns(done: pd.DataFrame) -> Columns:
    """A column per teacher → student setting; a run without a teacher joins every pair column with the same
    student setting, else it makes a column of its own."""
    kd_cols = done[~done["teacher"].map(is_missing).astype(bool)].drop_duplicates("_col_key")
    ce_only = done[done["teacher"].map(is_missing).astype(bool)]
    attach: dict[str, list[str]] = {}
    for r in kd_cols.to_dict("records"):
        attach.setdefault(r["_student_key"], []).append(r["_col_key"])
    lone = ce_only[~ce_only["_student_key"].isin(list(attach))].drop_duplicates("_student_key")
    # Columns that would hold only the student alone (the depth ladder's models) compare no methods: they belong
    # to the ladder table. They stay only when no method was run at all (a table of nothing but `ce`).
    ladder_only = len(lone) if len(kd_cols) else 0
    if ladder_only:
        lone = lone.iloc[0:0]
    for key in lone["_student_key"]:
        attach[key] = [key]
    frame = pd.concat([kd_cols, lone.assign(_col_key=lone["_student_key"])], ignore_index=True)
    return Columns(frame, attach, ladder_only)


def _cells(scope: pd.DataFrame, done: pd.DataFrame, columns: Columns,
           metric: str) -> tuple[pd.DataFrame, list[dict]]:
    """The numbers of every cell, column by column (the teacher first), and each cell's seed → value (for the
    t-tests against ce; the teacher's: none)."""
    col_labels = label_columns(columns.frame, best=is_best_metric(metric)) if len(columns.frame) else {}
    row_labels = label_rows(done) if len(done) else {}
    records, seeds = [], []
    for r in columns.frame.to_dict("records"):
        info = {"column": col_labels[r["_col_key"]], "dataset": r["dataset"], "teacher": clean(r["teacher"]),
                "student": r["student"], "recipe": r["_setting"]["recipe"].get("name")}
        if not is_missing(r["teacher"]):
            in_column = scope[scope["_col_key"] == r["_col_key"]]
            records.append({"row": TEACHER_ROW, "method": TEACHER_ROW, **info, "transductive": False,
                            "teacher_at_inference": False, **teacher_stats(in_column, metric),
                            # The teacher is tested on the same test split as its students.
                            "num_test": first_present(in_column["data.num_test"])})
            seeds.append({})
        for key, g in _members(done, r["_col_key"], columns.attach).groupby("_row_key", sort=False):
            records.append({"row": row_labels[key], "method": g["method"].iloc[0], **info, **cell_numbers(g, metric)})
            seeds.append(per_seed(list(g["seed"]), list(g[metric])))
    return pd.DataFrame.from_records(records, columns=DATA_COLUMNS), seeds


def _members(done: pd.DataFrame, col_key: str, attach: dict[str, list[str]]) -> pd.DataFrame:
    """The runs of one column: its own, and those without a teacher attached to it."""
    attached = done["_student_key"].map(lambda k: col_key in attach.get(k, [])).astype(bool)
    return done[attached & ((done["_col_key"] == col_key) | done["teacher"].map(is_missing).astype(bool))]


def _with_marks(data: pd.DataFrame, seeds: list[dict], metric: str, family: str) -> pd.DataFrame:
    """The cells with their best, fewer-seeds and significance marks, the binomial error and the row labels'
    markers (`‡`, `§`)."""
    data = mark_best_and_flags(data) if len(data) else data.assign(best=False, fewer_seeds=False)
    data = with_test_set_error(mark_significance(data, seeds, family))
    data.insert(7, "metric", metric)
    shown = mark_transductive(data)
    # A row is one method and variant, so its runs agree on whether the teacher runs at inference.
    needs_teacher = set(data.loc[data["teacher_at_inference"].astype(bool), "row"])
    data["row"] = [with_teacher_mark(shown[r], r in needs_teacher) for r in data["row"]]
    return data


def _cell_marks(cell: Cell) -> str:
    return (FEWER_SEEDS if cell["fewer_seeds"] else "") + cell["cell_mark"] + cell["vs_ce"]


def _cell_marks_with_intervals(cell: Cell) -> str:
    return _cell_marks(cell) + interval_text(cell)


def _footer(scope: pd.DataFrame, done: pd.DataFrame, data: pd.DataFrame, columns: Columns, options: GridOptions,
            metric: str, family: str, ci: bool) -> list[str]:
    footer = [f"cells: {METRIC_WORDS[metric]}, mean ± std over seeds (number of seeds); bold = best student in "
              "its column", *_legend(data, options, metric, family, ci)]
    footer += teacher_at_inference_footer(done)
    shown = done[done["_col_key"].isin(list(columns.frame["_col_key"])) | done["_student_key"].isin(
        list(columns.attach))]
    footer += transductive_footer(shown) if len(done) else []
    footer += selection_footer({s["best_on"] for s in columns.frame["_setting"]} if len(columns.frame) else set(),
                               metric, TEACHER_ROW in options.rows)
    if columns.ladder_only:
        footer.append(f"{columns.ladder_only} column(s) of students trained only alone (no method to compare) are "
                      "in the ladder table: `kdbench leaderboard --table ladder`")
    footer += caveats_footer(scope, metric)
    if not len(data):
        footer.append("no completed runs to show")
    return footer


def _legend(data: pd.DataFrame, options: GridOptions, metric: str, family: str, ci: bool) -> list[str]:
    """The footer lines that explain what the cells show: rows, marks, tests and errors."""
    lines = []
    if TEACHER_ROW in options.rows:
        lines.append("teacher: the teacher's own test accuracy (number = distinct teacher checkpoints)")
    if "ce" in set(data["method"]):
        lines.append("ce: the student trained alone, without a teacher (for gnn2: the GNN alone)")
    if data["fewer_seeds"].any():
        lines.append(f"{FEWER_SEEDS} fewer seeds than the table's most-seeded cell ({data.attrs.get('max_n')})")
    if data["vs_ce"].astype(bool).any():
        lines.append(significance_words(family, family_sizes(data, options.cols)))
    if data["test"].astype(bool).any():
        lines.append(TEST_WORDS)
        lines += power_footer(data, options.rows)
    if ci:
        lines += intervals_footer(data)
    lines += binomial_footer(data, metric)
    if any("[" in r for r in options.rows) or any("[" in c for c in options.cols):
        lines.append("[k=v]: settings that differ between rows or columns of the same name; never averaged together")
    return lines
