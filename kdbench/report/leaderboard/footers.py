"""Footer lines more than one table writes: runs left out of the averages, how a best epoch was chosen, the
column's statistical power and the test set's own binomial error."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pandas as pd

from kdbench.report.leaderboard.board import (
    DECIMALS,
    EXCLUDED_STATUSES,
    POWER,
    SELECTION_WORDS,
    SIGNIFICANCE_P,
    TEACHER_ROW,
    WELCH_MARK,
    is_best_metric,
    selection_label,
)
from kdbench.report.leaderboard.intervals import LEVEL
from kdbench.report.leaderboard.runs import is_missing


def caveats_footer(df: pd.DataFrame, metric: str) -> list[str]:
    """Footer lines about runs left out of the averages (failed, diverged, running, no metric) and missing recipes."""
    lines = []
    if len(df) and df["recipe_params"].map(is_missing).all():
        # Runs loaded without their full recipe (older load_runs): say so rather than mix recipes silently.
        lines.append("warning: the runs carry no recipe fields, so runs are told apart by recipe name only")
    counts = {s: int((df["status"] == s).sum()) for s in EXCLUDED_STATUSES}
    parts = [f"{n} {s}" for s, n in counts.items() if n]
    if parts:
        lines.append(f"not averaged: {', '.join(parts)} run(s) (`kdbench leaderboard --table runs` lists them)")
    done = df[df["status"] == "completed"]
    no_metric = int(done[metric].map(is_missing).sum()) if len(done) else 0
    if no_metric:
        lines.append(f"{no_metric} completed run(s) have no {metric} and are left out")
    return lines


def selection_footer(selections: set[str], metric: str, teacher_shown: bool = False) -> list[str]:
    """Footer lines saying how the best epoch of each selection shown was chosen (best-epoch metrics only)."""
    if not is_best_metric(metric):
        return []
    lines = [f"{selection_label(s)}: {SELECTION_WORDS[s]}" for s in sorted(selections, reverse=True)]
    if teacher_shown and "val" in selections:
        lines.append("the teacher row's best epoch is always test-selected (teachers train without a validation "
                     "split)")
    return lines


def power_footer(data: pd.DataFrame, rows: Sequence[str] = ()) -> list[str]:
    """One line: per comparison with ce (in `rows`' order, column by column), the smallest true difference its
    test detects at the family's α / m with the seeds run (the data's `mdd`, `detectable_difference`). Post-hoc:
    it rests on the spread the seeds showed."""
    tested = data[data["p_vs_ce"].map(lambda p: not is_missing(p)).astype(bool)]
    if not len(tested):
        return []
    order = {r: k for k, r in enumerate(rows)}
    parts = []
    for column, g in tested.groupby("column", sort=False):
        g = g.assign(_at=g["row"].map(lambda r: order.get(r, len(order)))).sort_values("_at", kind="stable")
        pairs = set(g.loc[g["test"] == "paired", "n_pairs"])
        seeds = f"; {pairs.pop()} pairs" if len(pairs) == 1 else ""
        m = int(g["family_m"].iloc[0])
        each = ", ".join(f"{_bare_row(r)}{WELCH_MARK if test == 'welch' else ''} "
                         f"{'—' if is_missing(v) else f'{v:.{DECIMALS}f}'}"
                         for r, v, test in zip(g["row"], g["mdd"], g["test"], strict=True))
        parts.append(f"{column} (α = {SIGNIFICANCE_P}/{m}{seeds}): {each}")
    return [f"power (post-hoc: from the spread these seeds showed, so it says what they could resolve, not what a "
            f"study planned ahead would): per comparison, the smallest true difference from ce, in points, its "
            f"test detects with {POWER:.0%} power (two-sided; the t-test's exact power, noncentral t, at that "
            "comparison's se: paired s_d/√n, Welch √(s²/n + s_ce²/n_ce)) at the family's α/m, Bonferroni's, which "
            "is Holm's first step (a difference that clears it is marked whatever the other comparisons give; "
            "Holm's later steps test at up to α, so this is the conservative figure); a smaller true gap goes "
            f"unmarked more often than not; {WELCH_MARK}: Welch's test (CSV: mdd, alpha_mdd): " + "; ".join(parts)]


def _bare_row(label: str) -> str:
    """A row label without its table marks (‡ transductive, § teacher at inference), as the footer names it."""
    return re.sub(r"( [‡§])+$", "", str(label))


def binomial_footer(data: pd.DataFrame, metric: str) -> list[str]:
    """Per dataset, the binomial standard error of one accuracy figure on its test set (`binomial_se`): what a
    single number (the teacher row, a one-seed cell) is uncertain by."""
    shown = data[(data["n"] > 0) & data["binomial_se"].map(lambda v: not is_missing(v)).astype(bool)]
    return [f"test-set error: one {metric.split('_')[0]} figure on the {int(num_test)} test images of {dataset} "
            f"has a binomial standard error of 100·√(p(1−p)/{int(num_test)}) points: {_binomial_spread(g)}; one "
            f"image is {100 / int(num_test):.{DECIMALS}f} points; {_wilson_at(g)} (per cell: the CSV's binomial_se, "
            "wilson_lo, wilson_hi); it bounds a single-seed figure (the teacher row, a one-seed cell) against the "
            "model's true accuracy, not the seed spread of a mean"
            for (dataset, num_test), g in shown.groupby(["dataset", "num_test"], sort=False)]


def _binomial_spread(cells: pd.DataFrame) -> str:
    """`±0.72 at the teacher's 97.50, ±0.70 to ±2.10 at the students' means` for one dataset's cells."""
    is_teacher = (cells["row"] == TEACHER_ROW) if "row" in cells.columns else pd.Series(False, index=cells.index)
    teacher, students = cells[is_teacher], cells[~is_teacher]
    at = []
    if len(teacher):
        t = teacher.iloc[0]
        at.append(f"±{t['binomial_se']:.{DECIMALS}f} at the teacher's {t['mean']:.{DECIMALS}f}")
    if len(students):
        lo, hi = students["binomial_se"].min(), students["binomial_se"].max()
        spread = f"±{lo:.{DECIMALS}f}" if round(lo, DECIMALS) == round(hi, DECIMALS) else \
            f"±{lo:.{DECIMALS}f} to ±{hi:.{DECIMALS}f}"
        at.append(f"{spread} at the students' means")
    return ", ".join(at)


def _wilson_at(cells: pd.DataFrame) -> str:
    """`its 95 % Wilson interval at the teacher's 98.89: [97.24, 99.55]` (else at the first student cell's mean)."""
    is_teacher = (cells["row"] == TEACHER_ROW) if "row" in cells.columns else pd.Series(False, index=cells.index)
    c = (cells[is_teacher] if is_teacher.any() else cells).iloc[0]
    name = c["row"] if "row" in cells.columns else c.get("model", "the first cell")
    whose = "the teacher's" if is_teacher.any() else f"{_bare_row(name)}'s"
    return (f"its {LEVEL:.0%} Wilson interval at {whose} {c['mean']:.{DECIMALS}f}: "
            f"[{c['wilson_lo']:.{DECIMALS}f}, {c['wilson_hi']:.{DECIMALS}f}]")


def intervals_footer(data: pd.DataFrame) -> list[str]:
    """The line that explains what `--ci` adds to the cells."""
    return [f"Δ d [lo, hi]: the cell's mean minus ce's, with its {LEVEL:.0%} interval (t on the per-seed "
            "differences where the test is paired, Welch's interval where it is Welch's; each interval on its own, "
            f"not corrected for the family); W [lo, hi]: the {LEVEL:.0%} Wilson interval of the cell's mean on its "
            "test set (the test set's own error, not the seeds')"]
