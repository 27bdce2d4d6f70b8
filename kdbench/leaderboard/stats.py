"""The numbers in a cell: mean, std and count over seeds, the teacher's own accuracy, and the best-cell marks."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from .board import ABOVE_CE, BELOW_CE, DECIMALS, SIGNIFICANCE_P, TEACHER_METRIC, TEACHER_ROW
from .runs import is_missing


def summarize(values: Iterable[float]) -> tuple[float, float, int]:
    vals = [float(v) for v in values if not is_missing(v)]
    n = len(vals)
    if n == 0:
        return math.nan, math.nan, 0
    mean = sum(vals) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else math.nan
    return mean, std, n


def mean_of(values: pd.Series) -> float:
    return summarize(values)[0]


def first_present(values: pd.Series) -> Any:
    vals = [v for v in values if not is_missing(v)]
    return vals[0] if vals else None


def completed(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    done = df[df["status"] == "completed"]
    return done[~done[metric].map(is_missing).astype(bool)]


def mark_best_and_flags(data: pd.DataFrame) -> pd.DataFrame:
    """Adds `best` (highest mean among students in its column, ties all marked; needs ≥ 2 candidates) and
    `fewer_seeds` (fewer runs than the table's most-seeded student cell)."""
    data = data.copy()
    students = data[(data["row"] != TEACHER_ROW) & (data["n"] > 0)]
    max_n = int(students["n"].max()) if len(students) else 0
    data["fewer_seeds"] = (data["row"] != TEACHER_ROW) & (data["n"] > 0) & (data["n"] < max_n)
    data["best"] = False
    for _, g in students.groupby("column", sort=False):
        if len(g) < 2:
            continue
        top = g["mean"].round(DECIMALS).max()
        data.loc[g.index[g["mean"].round(DECIMALS) == top], "best"] = True
    data.attrs["max_n"] = max_n
    return data


def teacher_stats(runs: pd.DataFrame, metric: str) -> dict[str, Any]:
    col = TEACHER_METRIC[metric]
    have = runs[~runs[col].map(is_missing).astype(bool)]
    # One value per teacher checkpoint: many students share one teacher, which must count once.
    ident = [sha if not is_missing(sha) else f"seed:{seed}"
             for sha, seed in zip(have["teacher_sha256"], have["teacher_seed"], strict=True)]
    per_teacher = have.assign(_teacher=ident).drop_duplicates("_teacher")
    mean, std, n = summarize(per_teacher[col])
    return {"mean": mean, "std": std, "n": n, "run_ids": ""}


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p of Welch's t-test (unequal variances) between two sets of seeds; NaN when either has fewer
    than 2 values or both are constant (no spread to test against)."""
    a = [float(v) for v in a if not is_missing(v)]
    b = [float(v) for v in b if not is_missing(v)]
    if len(a) < 2 or len(b) < 2:
        return math.nan
    from scipy.stats import ttest_ind

    p = float(ttest_ind(a, b, equal_var=False).pvalue)
    return p if math.isfinite(p) else math.nan


def mark_significance(data: pd.DataFrame, values: Sequence[Sequence[float]]) -> pd.DataFrame:
    """Adds `p_vs_ce` (Welch's p of each method's cell against the student alone in its column; `values` holds
    each row's per-seed numbers) and `vs_ce` (ABOVE_CE / BELOW_CE when p < SIGNIFICANCE_P, else "").

    A column compares against its one `ce` row; a column with none, or with several `ce` variants (no single
    baseline), gets no p-values. The teacher and `ce` rows themselves are never marked."""
    data = data.assign(p_vs_ce=math.nan, vs_ce="")
    seeds = dict(zip(data.index, values, strict=True))
    for _, g in data.groupby("column", sort=False):
        ce = g[(g["method"] == "ce") & (g["n"] > 0)]
        if len(ce) != 1:
            continue
        base = seeds[ce.index[0]]
        for i in g.index[(g["method"] != "ce") & (g["row"] != TEACHER_ROW) & (g["n"] > 0)]:
            p = welch_p(seeds[i], base)
            data.loc[i, "p_vs_ce"] = p
            if p < SIGNIFICANCE_P:
                data.loc[i, "vs_ce"] = ABOVE_CE if data.loc[i, "mean"] > ce["mean"].iloc[0] else BELOW_CE
    return data
