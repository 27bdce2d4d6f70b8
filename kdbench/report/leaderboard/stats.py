"""The numbers in a cell: mean, std and count over seeds, the teacher's own accuracy, and the best-cell marks."""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import pandas as pd

from kdbench.core.errors import unknown_name
from kdbench.report.leaderboard.board import (
    ABOVE_CE,
    ABOVE_CE_HOLM,
    BELOW_CE,
    BELOW_CE_HOLM,
    DECIMALS,
    FAMILIES,
    POWER,
    SIGNIFICANCE_P,
    TEACHER_METRIC,
    TEACHER_ROW,
    WELCH_MARK,
)
from kdbench.report.leaderboard.intervals import t_interval, wilson_interval
from kdbench.report.leaderboard.runs import is_missing


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


def best_in_groups(data: pd.DataFrame, by: Sequence[str] = ()) -> pd.Series:
    """Whether each cell has the highest mean (at the shown decimals, ties all marked) of its group (`by`'s
    columns; none: the whole table), among groups of at least 2 cells."""
    best = pd.Series(False, index=data.index)
    for _, g in (data.groupby(list(by), sort=False) if by else [(None, data)]):
        if len(g) > 1:
            shown = g["mean"].round(DECIMALS)
            best.loc[g.index[shown == shown.max()]] = True
    return best


def mark_best_and_flags(data: pd.DataFrame) -> pd.DataFrame:
    """Adds `best` (highest mean among students in its column, ties all marked; needs ≥ 2 candidates) and
    `fewer_seeds` (fewer runs than the table's most-seeded student cell)."""
    data = data.copy()
    is_student = (data["row"] != TEACHER_ROW) & (data["n"] > 0)
    max_n = int(data.loc[is_student, "n"].max()) if is_student.any() else 0
    data["fewer_seeds"] = is_student & (data["n"] < max_n)
    data["best"] = best_in_groups(data[is_student], ["column"]).reindex(data.index, fill_value=False)
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
    if len(a) < 2 or len(b) < 2 or _std(a) == _std(b) == 0:
        return math.nan
    from scipy.stats import ttest_ind

    with _quiet_precision():
        p = float(ttest_ind(a, b, equal_var=False).pvalue)
    return p if math.isfinite(p) else math.nan


def paired_p(a: Mapping[Any, float], b: Mapping[Any, float]) -> tuple[float, int]:
    """Two-sided p of the paired t-test on the per-seed differences a[seed] − b[seed], over the seeds both ran,
    and the number of pairs. NaN with fewer than 2 pairs, or when every difference is the same (no spread to
    test against, as `welch_p`)."""
    diffs = _differences(a, b)
    if len(diffs) < 2 or _std(diffs) == 0:
        return math.nan, len(diffs)
    from scipy.stats import ttest_rel

    shared = sorted(set(_present(a)) & set(_present(b)), key=str)
    with _quiet_precision():
        p = float(ttest_rel([float(a[s]) for s in shared], [float(b[s]) for s in shared]).pvalue)
    return (p if math.isfinite(p) else math.nan), len(diffs)


@contextlib.contextmanager
def _quiet_precision() -> Iterator[None]:
    """scipy warns of "precision loss ... catastrophic cancellation" when the values are nearly identical (a method
    level with ce seed by seed, its differences equal to the last few bits): the p it returns is then ~1 and right,
    and a table's reader should not get a warning line from the statistics library."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Precision loss occurred in moment calculation",
                                category=RuntimeWarning)
        yield


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the order given: the i-th smallest of m p-values becomes
    max over j ≤ i of min(1, (m − j + 1) · p_(j)). A hypothesis is rejected at family-wise level α when its
    adjusted p < α. NaN (no test) stays NaN and does not count in m."""
    order = sorted((p, i) for i, p in enumerate(pvalues) if not is_missing(p))
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p))
        out[i] = running
    return out


def detectable_difference(se: float, df: float, alpha: float = SIGNIFICANCE_P, power: float = POWER) -> float:
    """The smallest true difference δ a two-sided t-test at level `alpha` detects with probability `power`, given
    the standard error `se` of the difference and the test's degrees of freedom: the δ that solves

        P(|T| > t_{1−α/2, df}) = power,  T ~ noncentral t(df, δ / se)

    (the exact power of the t-test); close to the textbook (t_{1−α/2, df} + t_{power, df}) · se, which is a
    little small at few seeds (at df = 2 it gives 77 % power, not 80 %). Paired: se = s_d / √n, df = n − 1, s_d
    the std of the n per-seed differences; Welch: se = √(s_a²/n_a + s_b²/n_b), df by Welch–Satterthwaite."""
    if is_missing(se) or is_missing(df) or df <= 0 or se <= 0:
        return math.nan
    from scipy.optimize import brentq
    from scipy.stats import nct, t

    crit = float(t.ppf(1 - alpha / 2, df))

    def shortfall(delta: float) -> float:
        nc = delta / se
        lower = float(nct.cdf(-crit, df, nc))  # the wrong-sign tail: negligible, and NaN in scipy far out
        return float(nct.sf(crit, df, nc)) + (lower if math.isfinite(lower) else 0.0) - power

    approx = (crit + float(t.ppf(power, df))) * se
    return float(brentq(shortfall, 0.0, 4 * approx, xtol=1e-9 * se))


def paired_se(a: Mapping[Any, float], b: Mapping[Any, float]) -> tuple[float, float]:
    """(se, df) of the mean per-seed difference over the seeds both ran: s_d / √n, n − 1."""
    diffs = _differences(a, b)
    if len(diffs) < 2:
        return math.nan, math.nan
    return _std(diffs) / math.sqrt(len(diffs)), len(diffs) - 1


def welch_se(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(se, df) of the difference of two independent means: √(s_a²/n_a + s_b²/n_b), Welch–Satterthwaite df."""
    a = [float(v) for v in a if not is_missing(v)]
    b = [float(v) for v in b if not is_missing(v)]
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan
    va, vb = _std(a) ** 2 / len(a), _std(b) ** 2 / len(b)
    if va + vb == 0:
        return 0.0, math.nan
    return math.sqrt(va + vb), (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))


def binomial_se(top1: float, num_test: Any) -> float:
    """The standard error, in points, of one accuracy figure (%) measured on `num_test` test images:
    100 · √(p(1 − p) / N), p = top1 / 100. It is how far one figure may sit from the model's true accuracy
    because the test set is finite: what a single-seed number (the teacher's, a one-seed cell) carries."""
    if is_missing(top1) or is_missing(num_test) or int(num_test) <= 0:
        return math.nan
    p = min(max(float(top1) / 100, 0.0), 1.0)
    return 100 * math.sqrt(p * (1 - p) / int(num_test))


def _present(values: Mapping[Any, float]) -> dict[Any, float]:
    return {k: float(v) for k, v in values.items() if not is_missing(v)}


def _differences(a: Mapping[Any, float], b: Mapping[Any, float]) -> list[float]:
    a, b = _present(a), _present(b)
    return [a[s] - b[s] for s in sorted(set(a) & set(b), key=str)]


def _std(values: Sequence[float]) -> float:
    return summarize(values)[1]


def per_seed(seeds: Sequence[Any], values: Sequence[float]) -> dict[Any, float]:
    """Seed → value of one cell's runs (the mean where one seed ran twice, e.g. two code versions' rows never
    share a cell, but a seed listed twice must still pair once)."""
    by_seed: dict[Any, list[float]] = {}
    for seed, v in zip(seeds, values, strict=True):
        if not is_missing(v) and not is_missing(seed):
            by_seed.setdefault(int(seed), []).append(float(v))
    return {s: sum(vs) / len(vs) for s, vs in by_seed.items()}


def mark_significance(data: pd.DataFrame, values: Sequence[Mapping[Any, float]],
                      family: str = "table") -> pd.DataFrame:
    """Each method's cell against the student alone (`ce`) of its column; `values` holds each row's seed → value.

    Adds `test` ("paired" where both cells ran the same seeds, at least 2: seeds share initialisation and data
    order, so the per-seed differences are tested; else "welch"), `p_vs_ce` (that test's two-sided p),
    `p_paired` and `n_pairs` (over the seeds both ran), `p_welch`, `p_holm` (Holm-adjusted across the family),
    `family_m` (how many comparisons the family holds), `diff` with `diff_lo` / `diff_hi` (the difference from ce
    and its 95 % interval, on the test's own se and df: `t_interval`), `mdd` (the smallest difference this
    comparison detects at the family's α / m: `detectable_difference`), `alpha_mdd` (that α), `se_diff` and
    `df_diff` (behind both), and `vs_ce`: ⇑ / ⇓ when the Holm-adjusted p < SIGNIFICANCE_P, ↑ / ↓ when only the
    uncorrected p is, plus `ʷ` when the mark comes from Welch's test.

    `family` (FAMILIES) is the set Holm corrects across: "table" (default), every comparison of the table, which
    is what a sentence about the table claims; "column", each column's comparisons with its ce alone.

    A column compares against its one `ce` row; a column with none, or with several `ce` variants (no single
    baseline), gets no p-values. The teacher and `ce` rows themselves are never marked."""
    if family not in FAMILIES:
        raise unknown_name("family", family, FAMILIES)
    data = data.assign(test="", p_vs_ce=math.nan, p_paired=math.nan, n_pairs=0, p_welch=math.nan,
                       p_holm=math.nan, family_m=0, diff=math.nan, diff_lo=math.nan, diff_hi=math.nan,
                       mdd=math.nan, alpha_mdd=math.nan, se_diff=math.nan, df_diff=math.nan, vs_ce="")
    seeds = dict(zip(data.index, values, strict=True))
    families: list[list[Any]] = []
    for _, g in data.groupby("column", sort=False):
        ce = g[(g["method"] == "ce") & (g["n"] > 0)]
        if len(ce) != 1:
            continue
        base = seeds[ce.index[0]]
        compared = list(g.index[(g["method"] != "ce") & (g["row"] != TEACHER_ROW) & (g["n"] > 0)])
        for i in compared:
            mine = seeds[i]
            p_pair, pairs = paired_p(mine, base)
            p_welch = welch_p(list(mine.values()), list(base.values()))
            paired = set(_present(mine)) == set(_present(base)) and pairs >= 2
            se, df = paired_se(mine, base) if paired else welch_se(list(mine.values()), list(base.values()))
            # Paired over the same seeds, the mean difference is the difference of the two means.
            diff = float(data.loc[i, "mean"] - ce["mean"].iloc[0])
            data.loc[i, ["p_paired", "n_pairs", "p_welch"]] = [p_pair, pairs, p_welch]
            data.loc[i, "test"] = "paired" if paired else "welch"
            data.loc[i, "p_vs_ce"] = p_pair if paired else p_welch
            data.loc[i, ["se_diff", "df_diff", "diff"]] = [se, df, diff]
            data.loc[i, ["diff_lo", "diff_hi"]] = list(t_interval(diff, se, df))
        if family == "column" or not families:
            families.append([])
        families[-1] += compared
    for members in families:
        tested = [i for i in members if not is_missing(data.loc[i, "p_vs_ce"])]
        for i, p_holm in zip(members, holm(list(data.loc[members, "p_vs_ce"])), strict=True):
            data.loc[i, ["p_holm", "family_m"]] = [p_holm, len(tested)]
            # At Bonferroni's α / m, Holm's first step: a difference detected there is rejected by Holm whatever
            # the other comparisons give (later steps test at more, up to α, so this is the conservative figure).
            alpha = SIGNIFICANCE_P / max(len(tested), 1)
            data.loc[i, ["alpha_mdd", "mdd"]] = [alpha, detectable_difference(data.loc[i, "se_diff"],
                                                                             data.loc[i, "df_diff"], alpha)]
            p = data.loc[i, "p_vs_ce"]
            if is_missing(p) or p >= SIGNIFICANCE_P:
                continue
            above = data.loc[i, "diff"] > 0
            if p_holm < SIGNIFICANCE_P:
                mark = ABOVE_CE_HOLM if above else BELOW_CE_HOLM
            else:
                mark = ABOVE_CE if above else BELOW_CE
            data.loc[i, "vs_ce"] = mark + (WELCH_MARK if data.loc[i, "test"] == "welch" else "")
    data["n_pairs"] = data["n_pairs"].astype(int)
    data["family_m"] = data["family_m"].astype(int)
    return data


def family_sizes(data: pd.DataFrame, columns: Sequence[str] = ()) -> list[int]:
    """The sizes of the families Holm corrected across, in `columns`' order (the table's; one size for a table
    family)."""
    tested = data[data["family_m"] > 0]
    if not len(tested):
        return []
    if tested["family_m"].nunique() == 1 and tested["family_m"].iloc[0] == len(tested):
        return [len(tested)]
    order = {c: k for k, c in enumerate(columns)}
    by_column = tested.groupby("column", sort=False)["family_m"].first()
    return [int(m) for _, m in sorted(by_column.items(), key=lambda cm: order.get(cm[0], len(order)))]


def with_test_set_error(data: pd.DataFrame) -> pd.DataFrame:
    """Adds each cell's test-set error at its mean: `binomial_se`, and `wilson_lo` / `wilson_hi`, its 95 %
    Wilson interval on the cell's `num_test` images (`wilson_interval`)."""
    pairs = list(zip(data["mean"], data["num_test"], strict=True))
    wilson = [wilson_interval(m, t) for m, t in pairs]
    return data.assign(binomial_se=[binomial_se(m, t) for m, t in pairs], wilson_lo=[lo for lo, _ in wilson],
                       wilson_hi=[hi for _, hi in wilson])
