"""Leaderboards: pure functions from the runs DataFrame (`kdbench.report.results.load_runs`) to paper-like tables.

Tables (the kinds of comparison the CNN2GNN paper makes):
- `methods`: rows = teacher, student alone (`ce`), each KD method; columns = dataset · teacher → student · recipe;
  cells = mean ± std over seeds (seed count), best student per column marked; each method tested against the
  column's `ce` (paired t-test by seed, Welch's where the seeds differ; Holm across the table's comparisons, or
  each column's with `family="column"`), with each comparison's difference and its 95 % interval, its post-hoc
  smallest detectable difference and the test set's binomial error and Wilson interval (`stats`, `intervals`).
- `ladder`: the models of the depth ladder trained alone (`ce`) and the distilled GNN side by side: layers,
  parameters, accuracy, inference time per image at a stated batch size, training time.
- `runs`: one row per run record, whatever its status.
- `ablation`: one method's hyperparameter variants (e.g. CNN2GNN's k and graph mode) beside the student alone.
- `variance`: which variance dominates each method's accuracy in a nested sweep (teacher seeds ⊃ subset draws ⊃
  student seeds; `variance`, its arithmetic in `nested`), with the paired difference from ce and a cluster-bootstrap
  interval; runs differing only in teacher seed and subset draw are pooled there, kept apart everywhere else;
- `pivot`: a hyperparameter grid as a grid of cells (`rows=["kd.temperature"], cols=["kd.w_kd"]`), the view of a
  sweep's `--grid`; runs must agree on everything else but the seed.

Rules every table keeps, because they are where published comparisons go wrong:
- only completed runs are averaged; failed, diverged, interrupted and running ones are counted in the footer;
- runs that differ in anything but their seeds never share a cell: recipe (all its fields, not just its name),
  data parameters, teacher source and numerics (AMP, channels_last) split columns; method and student
  hyperparameters split rows, labelled by the values that differ;
- the footer says which metric is shown (last-epoch as in the CRD tables, best-epoch as in the DKD tables).

- only runs of the current code are averaged (`code`): records of older code are counted in the footer, or with
  `all_code` shown as rows of their own (`kd @3f2a1c`);

One job per module: `board` (kinds, metrics, the Leaderboard), `runs` (prepare and filter), `code` (current code
or all), `labels`, `stats` (tests, Holm over a family, power), `intervals` (the 95 % intervals: t, Wilson), `cells`
(display strings), `marks` (the `‡` / `§` markers and their footnotes),
`footers` (footer lines several tables write), `layout` (the step the grid tables share: a cell's numbers from its
runs, then cells placed on rows × columns with their marks, as a frozen `GridOptions` says), one module per table
(`methods` with `ablation`, `ladder`, `pivot`, `records` for `runs`), `compare` (ours beside the published numbers
of `kdbench.report.published`) and `render` (output formats).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from kdbench.core.errors import unknown_name
from kdbench.report.leaderboard.board import FAMILIES, METRICS, TABLES, Leaderboard
from kdbench.report.leaderboard.cells import format_cell
from kdbench.report.leaderboard.code import select_code
from kdbench.report.leaderboard.compare import published_table
from kdbench.report.leaderboard.labels import distinguish
from kdbench.report.leaderboard.ladder import ladder_table
from kdbench.report.leaderboard.methods import ablation_table, methods_table
from kdbench.report.leaderboard.pivot import pivot_table
from kdbench.report.leaderboard.records import runs_table
from kdbench.report.leaderboard.render import (
    FORMATS,
    format_for_path,
    latex_escape,
    render,
    to_html,
    to_latex,
    to_markdown,
    to_text,
)
from kdbench.report.leaderboard.runs import is_missing, pair_label, prepare_runs
from kdbench.report.leaderboard.variance import variance_table
from kdbench.report.leaderboard.where import filter_runs, parse_where

__all__ = [
    "FAMILIES", "FORMATS", "Leaderboard", "METRICS", "TABLES", "ablation_table", "build", "build_published",
    "distinguish",
    "filter_runs", "format_cell", "format_for_path", "is_missing", "ladder_table", "latex_escape", "leaderboard",
    "methods_table", "pair_label", "parse_where", "pivot_table", "prepare_runs", "published_table", "render",
    "runs_table", "to_html", "to_latex", "to_markdown", "to_text", "variance_table",
]


def leaderboard(
    runs: pd.DataFrame | str | Path | None = None,
    table: str = "methods",
    metric: str = "top1_last",
    where: str | None = None,
    *,
    distilled: Sequence[str] = ("cnn2gnn",),
    method: str = "cnn2gnn",
    all_code: bool = False,
    rows: Sequence[str] = (),
    cols: Sequence[str] = (),
    family: str = "table",
    ci: bool = False,
) -> pd.DataFrame:
    """A leaderboard as a DataFrame of display cells (`df.attrs` holds title, footer and best cells).

    `runs` is the DataFrame of `kdbench.load_runs()` or a results folder (default ./results or
    $KDBENCH_RESULTS). `where` filters runs first (`"method=kd,dataset=digits"`); `all_code` shows the runs of
    older code too, as rows of their own (by default they are left out and counted). For the numbers behind the
    cells, or to render markdown / LaTeX / HTML / CSV, use :func:`build` and :func:`render`.

    >>> import kdbench
    >>> kdbench.leaderboard("results", table="methods", metric="top1_best")
    """
    board = build(runs, table, metric, where, distilled=distilled, method=method, all_code=all_code, rows=rows,
                  cols=cols, family=family, ci=ci)
    out = board.table.copy()
    out.attrs = {"title": board.title, "footer": list(board.footer), "best": sorted(board.bold)}
    return out


def build(
    runs: pd.DataFrame | str | Path | None = None,
    table: str = "methods",
    metric: str = "top1_last",
    where: str | None = None,
    *,
    distilled: Sequence[str] = ("cnn2gnn",),
    method: str = "cnn2gnn",
    all_code: bool = False,
    rows: Sequence[str] = (),
    cols: Sequence[str] = (),
    family: str = "table",
    ci: bool = False,
) -> Leaderboard:
    """Build one table from the runs DataFrame (or a results folder); see the module docstring. `rows` and
    `cols` are the pivot table's keys (`SCOPE.KEY`, e.g. `kd.temperature`). `family` (FAMILIES: "table", "column")
    is what Holm's correction runs across in the methods and ablation tables; `ci` shows each cell's intervals
    (the difference from ce, the test set's Wilson interval) in the cells, not only in the CSV."""
    if table not in TABLES:
        raise unknown_name("table", table, TABLES)
    if family not in FAMILIES:
        raise unknown_name("family", family, FAMILIES)
    if metric not in METRICS:
        raise unknown_name("metric", metric, METRICS)
    # An ablation compares evaluation batch sizes (CNN2GNN's batch graph depends on them) as rows, not columns.
    row_fields = ("eval_batch_size",) if table == "ablation" else ()
    df, code_lines = select_code(filter_runs(prepare_runs(_as_runs(runs), row_recipe_fields=row_fields), where),
                                 all_code)
    if table == "methods":
        board = methods_table(df, metric, family=family, ci=ci)
    elif table == "ladder":
        board = ladder_table(df, metric, distilled)
    elif table == "runs":
        board = runs_table(df)
    elif table == "pivot":
        board = pivot_table(df, metric, rows, cols)
    elif table == "variance":
        board = variance_table(df, metric)
    else:
        board = ablation_table(df, metric, method, family=family, ci=ci)
    board.footer += code_lines
    return board


def build_published(
    runs: pd.DataFrame | str | Path | None = None, where: str | None = None, paper: str | None = None,
    all_code: bool = False,
) -> Leaderboard:
    """Our runs beside the published numbers of `paper` (default: every paper in `kdbench.report.published`), each at
    the paper's epoch convention; see :mod:`kdbench.report.leaderboard.compare`."""
    from kdbench.report.published import load_published

    published = load_published(paper)
    df, code_lines = select_code(filter_runs(prepare_runs(_as_runs(runs)), where), all_code)
    board = published_table(df, published)
    board.footer += code_lines
    return board


def _as_runs(runs: pd.DataFrame | str | Path | None) -> pd.DataFrame:
    if isinstance(runs, pd.DataFrame):
        return runs
    from kdbench.report.results import load_runs

    return load_runs(runs)
