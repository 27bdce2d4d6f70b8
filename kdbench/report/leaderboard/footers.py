"""Footer lines more than one table writes: runs left out of the averages, how a best epoch was chosen, the
column's statistical power and the test set's own binomial error."""

from __future__ import annotations

import pandas as pd

from kdbench.report.leaderboard.board import (
    DECIMALS,
    EXCLUDED_STATUSES,
    POWER,
    SELECTION_WORDS,
    SIGNIFICANCE_P,
    TEACHER_ROW,
    is_best_metric,
    selection_label,
)
from kdbench.report.leaderboard.runs import is_missing
from kdbench.report.leaderboard.stats import column_power


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


def power_footer(data: pd.DataFrame) -> list[str]:
    """One line: per column, the smallest difference from `ce` its test detects at the seeds run (see
    `kdbench.report.leaderboard.stats.detectable_difference` and `column_power`)."""
    power = column_power(data)
    if not power:
        return []
    parts = [f"{column}: {'—' if is_missing(mdd) else f'{mdd:.{DECIMALS}f}'} points ({test}, {n} "
             f"{'pairs' if test == 'paired' else 'seeds a side'})"
             for column, (mdd, test, n) in power.items()]
    return [f"power: the smallest true difference from ce a column's test detects with {POWER:.0%} power at "
            f"α = {SIGNIFICANCE_P} (two-sided) with the seeds run (the t-test's exact power, noncentral t; about "
            f"(t_{{1−α/2, df}} + t_{{{POWER}, df}}) · se), se the standard error of a difference (paired: s_d/√n; "
            "Welch: √(s²/n + s_ce²/n_ce)) pooled over the column's comparisons (each one's: the CSV's mdd); a "
            "smaller true gap goes unmarked more often than not: "
            + "; ".join(parts)]


def binomial_footer(data: pd.DataFrame, metric: str) -> list[str]:
    """Per dataset, the binomial standard error of one accuracy figure on its test set (`binomial_se`): what a
    single number (the teacher row, a one-seed cell) is uncertain by."""
    shown = data[(data["n"] > 0) & data["binomial_se"].map(lambda v: not is_missing(v)).astype(bool)]
    return [f"test-set error: one {metric.split('_')[0]} figure on the {int(num_test)} test images of {dataset} "
            f"has a binomial standard error of 100·√(p(1−p)/{int(num_test)}) points: {_binomial_spread(g)} (per "
            "cell: the CSV's binomial_se); it bounds a single-seed figure (the teacher row, a one-seed cell) "
            "against the model's true accuracy, not the seed spread of a mean"
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
