"""95 % intervals a table reports beside its marks: the difference from `ce` (t, on the same standard error and
degrees of freedom as the test that marks the cell) and the test set's own (Wilson's score interval of one accuracy
on N test images)."""

from __future__ import annotations

import math
from typing import Any

from kdbench.report.leaderboard.runs import is_missing

LEVEL = 0.95  # the confidence of every interval a table shows


def t_interval(diff: float, se: float, df: float, level: float = LEVEL) -> tuple[float, float]:
    """`diff` ± t_{(1+level)/2, df} · se: the paired t-interval of the mean per-seed difference (se = s_d/√n,
    df = n − 1) or Welch's interval of a difference of means (Welch's se and df). NaN where there is no se."""
    if is_missing(diff) or is_missing(se) or is_missing(df) or df <= 0:
        return math.nan, math.nan
    from scipy.stats import t

    half = float(t.ppf((1 + level) / 2, df)) * se
    return diff - half, diff + half


def wilson_interval(top1: float, num_test: Any, level: float = LEVEL) -> tuple[float, float]:
    """Wilson's score interval (%, at `level`) of an accuracy of `top1` % on `num_test` test images: where the
    model's true accuracy may lie given a finite test set. Unlike p ± z·se it stays inside [0, 100] and does not
    collapse to a point at 100 % (a saturated cell)."""
    if is_missing(top1) or is_missing(num_test) or int(num_test) <= 0:
        return math.nan, math.nan
    from scipy.stats import norm

    z, n = float(norm.ppf((1 + level) / 2)), int(num_test)
    p = min(max(float(top1) / 100, 0.0), 1.0)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return 100 * (centre - half), 100 * (centre + half)


def signed(x: float, decimals: int = 2) -> str:
    """`+2.94`, `−2.28` (a true minus sign, as the docs write it)."""
    return f"{x:+.{decimals}f}".replace("-", "−")


def bracket(lo: float, hi: float, decimals: int = 2) -> str:
    """`[2.01, 3.88]`, `[−5.17, 0.61]`."""
    return f"[{lo:.{decimals}f}, {hi:.{decimals}f}]".replace("-", "−")


def interval_text(cell: dict[str, Any], decimals: int = 2) -> str:
    """What `--ci` appends to a cell: ` Δ +2.94 [2.01, 3.88]` (the difference from ce and its interval) where the
    cell was compared, and ` W [91.25, 96.15]` (the Wilson interval of its mean on the test set) where it has one."""
    out = ""
    if not is_missing(cell.get("diff_lo")):
        out += f" Δ {signed(cell['diff'], decimals)} {bracket(cell['diff_lo'], cell['diff_hi'], decimals)}"
    if not is_missing(cell.get("wilson_lo")):
        out += f" W {bracket(cell['wilson_lo'], cell['wilson_hi'], decimals)}"
    return out
