"""The `variance` table (issue #38.4): which variance dominates a method's accuracy, teacher seeds, subset draws or
student seeds, from a nested sweep (`kdbench sweep --teacher-seeds 0,1,2 --grid data.subset_seed=0,1,2 --seeds
0-2 --set data.train_fraction=0.1`).

Pooling. Runs that differ only in their zoo teacher's seed and their `data.subset_seed` (and the student seed)
are pooled here: one row per method (and variant) per column `dataset · teacher → student · recipe`, whose runs
form the nested design teacher seed ⊃ subset draw ⊃ student seed. The `methods` table keeps them apart instead (a
column per teacher seed and per draw, labelled `teacher_seed=1`, `data.subset_seed=2`), because its tests pair
seeds with ce's under one teacher and one subset. A run's draw is its `data.subset_seed`, or the dataset's
`split_seed` where it sets none (the same subset as `subset_seed` = `split_seed`).

Per row (formulas: kdbench.report.leaderboard.nested): the variance components σ²_teacher, σ²_draw (within
teacher) and σ²_seed (within draw) of the metric by the method of moments, clipped at 0, with their shares of the
total; the level with the largest component is the row's `dominant`. A method without a teacher (ce) has no
teacher level. Nothing here is a test of a component being above 0: with 2 or 3 units per level, the moment
estimates are rough, and the footer says so.

The paired difference from ce: each run is paired with ce's run of the same column on the same subset draw and
student seed (same data, same initialisation and data order), and the differences form the same nested design;
their mean (of teachers' means of draws' means) with a 95 % interval from the two-stage cluster bootstrap over
teachers and draws within teachers (nested.cluster_bootstrap), which keeps the teacher-to-teacher and
draw-to-draw spread in the interval. The draws are in fact the same subsets under every teacher (crossed, not
nested): the nested model's "draw within teacher" then holds the draw's own effect and its interaction with the
teacher, which is what a reader of one teacher's table is exposed to.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import pandas as pd

from kdbench.data.splits import SUBSET_SEED_KEY
from kdbench.report.leaderboard.board import DECIMALS, METRIC_WORDS, Leaderboard
from kdbench.report.leaderboard.footers import caveats_footer
from kdbench.report.leaderboard.intervals import LEVEL, bracket, signed
from kdbench.report.leaderboard.labels import label_columns, label_rows, method_rank
from kdbench.report.leaderboard.nested import BOOTSTRAP_RESAMPLES, LEVELS, cluster_bootstrap, nested_components
from kdbench.report.leaderboard.runs import is_missing, teacher_seed_of
from kdbench.report.leaderboard.stats import completed

BASELINE = "ce"
LEVEL_WORDS = {"teacher": "teacher seed", "draw": "subset draw", "seed": "student seed"}
DATA_COLUMNS = ["row", "method", "column", "dataset", "teacher", "student", "recipe", "metric", "n_teachers",
                "n_draws", "n_runs", "mean", *(f"var_{lv}" for lv in LEVELS), *(f"share_{lv}" for lv in LEVELS),
                *(f"ms_{lv}" for lv in LEVELS), *(f"df_{lv}" for lv in LEVELS), "dominant", "diff", "diff_lo",
                "diff_hi", "n_pairs", "run_ids"]


def draw_of(run: dict[str, Any]) -> int:
    """The subset draw a run trained on: its `data.subset_seed`, else its dataset's `split_seed` (0 if none)."""
    data = run["_setting"]["data"]
    return int(data.get(SUBSET_SEED_KEY, data.get("split_seed", 0)))


def nest(runs: list[dict[str, Any]], metric: str) -> list[list[list[float]]]:
    """The runs' metric as teachers ⊃ draws ⊃ seeds (sorted by teacher seed, then draw, then seed)."""
    tree: dict[int, dict[int, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        tree[teacher_seed_of(r)][draw_of(r)].append((int(r["seed"]), float(r[metric])))
    return [[[v for _, v in sorted(tree[t][d])] for d in sorted(tree[t])] for t in sorted(tree)]


def paired_differences(runs: list[dict[str, Any]], baseline: list[dict[str, Any]],
                       metric: str) -> list[list[list[float]]]:
    """Each run's metric minus the baseline run's on the same subset draw and student seed, nested as `nest`."""
    base = {(draw_of(r), int(r["seed"])): float(r[metric]) for r in baseline}
    tree: dict[int, dict[int, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        key = (draw_of(r), int(r["seed"]))
        if key in base:
            tree[teacher_seed_of(r)][key[0]].append((key[1], float(r[metric]) - base[key]))
    return [[[v for _, v in sorted(tree[t][d])] for d in sorted(tree[t])] for t in sorted(tree)]


def variance_table(df: pd.DataFrame, metric: str = "top1_last") -> Leaderboard:
    """The variance components per method and pooled column, and each method's paired difference from ce."""
    done = completed(df, metric)
    records = []
    if len(done):
        pooled = done.assign(_col_key=done["_pool_col_key"], _student_key=done["_pool_student_key"],
                             _label_setting=[_pooled_setting(s) for s in done["_setting"]])
        col_labels = label_columns(pooled.drop_duplicates("_col_key").assign(_setting=lambda f: f["_label_setting"]))
        row_labels = label_rows(pooled)
        alone = pooled["teacher"].map(is_missing).astype(bool)
        taught = set(pooled.loc[~alone, "_student_key"])
        # A run without a teacher joins each teacher's column of its student; alone only where there is none.
        shown = pooled[~alone | ~pooled["_student_key"].isin(list(taught))]
        for col_key, column in shown.groupby("_col_key", sort=False):
            records += _column_records(column, pooled[alone], col_labels[col_key], row_labels, metric)
    data = pd.DataFrame.from_records(records, columns=DATA_COLUMNS)
    data = data.sort_values(["column", "method"], key=_sort_key, kind="stable", ignore_index=True)
    return Leaderboard("variance", f"variance components ({metric})", _display(data), data,
                       _footer(df, data, metric), set())


def _pooled_setting(setting: dict[str, Any]) -> dict[str, Any]:
    """A run's setting without what the pooled design varies (its column's label names neither)."""
    data = {k: v for k, v in setting["data"].items() if k != SUBSET_SEED_KEY}
    return {**setting, "data": data, "teacher_seed": 0}


def _column_records(column: pd.DataFrame, alone: pd.DataFrame, label: str, row_labels: dict[str, str],
                    metric: str) -> list[dict[str, Any]]:
    """The rows of one pooled column: its own runs' methods, and the runs without a teacher (ce) of the same
    student setting (`alone`: every run without a teacher)."""
    has_teacher = ~column["teacher"].map(is_missing).astype(bool)
    same_student = alone[alone["_student_key"] == column["_student_key"].iloc[0]]
    members = pd.concat([column[has_teacher], same_student]) if has_teacher.any() else column
    first = members.iloc[0]
    baseline = members[members["method"] == BASELINE]
    if baseline["_row_key"].nunique() > 1:  # ce variants (`--set student.…`): pair with the most-run one
        baseline = baseline[baseline["_row_key"] == baseline["_row_key"].value_counts().index[0]]
    base_runs = baseline.to_dict("records")
    info = {"column": label, "dataset": first["dataset"], "teacher": column.loc[has_teacher, "teacher"].iloc[0]
            if has_teacher.any() else None, "student": first["student"],
            "recipe": first["_setting"]["recipe"].get("name"), "metric": metric}
    out = []
    for row_key, g in members.groupby("_row_key", sort=False):
        runs = g.to_dict("records")
        comp = nested_components(nest(runs, metric))
        cell = {"row": row_labels[row_key], "method": g["method"].iloc[0], **info,
                "n_teachers": len({teacher_seed_of(r) for r in runs if not is_missing(r["teacher"])}),
                "n_draws": len({draw_of(r) for r in runs}), "n_runs": len(runs), "mean": comp.mean,
                **{f"var_{lv}": comp.variance[lv] for lv in LEVELS},
                **{f"share_{lv}": comp.share(lv) for lv in LEVELS},
                **{f"ms_{lv}": comp.mean_square[lv] for lv in LEVELS},
                **{f"df_{lv}": comp.df[lv] for lv in LEVELS},
                "dominant": comp.dominant(), "run_ids": " ".join(sorted(g["run_id"]))}
        diffs = paired_differences(runs, base_runs, metric) if cell["method"] != BASELINE and base_runs else []
        estimate, lo, hi = cluster_bootstrap(diffs)
        cell.update(diff=estimate, diff_lo=lo, diff_hi=hi, n_pairs=sum(len(d) for t in diffs for d in t))
        out.append(cell)
    return out


def _sort_key(col: pd.Series) -> pd.Series:
    if col.name == "method":
        return col.map(lambda m: method_rank(str(m)))
    return col


def _component(value: float, share: float) -> str:
    """`0.52 (31 %)`; `—` for a level the design does not have."""
    if math.isnan(value):
        return "—"
    return f"{value:.{DECIMALS}f} ({share * 100:.0f} %)" if not math.isnan(share) else f"{value:.{DECIMALS}f}"


def _display(data: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for c in data.to_dict("records"):
        teachers = str(c["n_teachers"]) if c["n_teachers"] else "—"
        diff = "—" if math.isnan(c["diff"]) else signed(c["diff"], DECIMALS) + (
            "" if math.isnan(c["diff_lo"]) else f" {bracket(c['diff_lo'], c['diff_hi'], DECIMALS)}")
        rows.append({"column": c["column"], "teachers × draws, runs": f"{teachers} × {c['n_draws']}, {c['n_runs']}",
                     "mean": f"{c['mean']:.{DECIMALS}f}",
                     **{f"σ² {LEVEL_WORDS[lv]}": _component(c[f"var_{lv}"], c[f"share_{lv}"]) for lv in LEVELS},
                     "dominant": LEVEL_WORDS.get(c["dominant"], "—"), f"Δ vs {BASELINE} [95 %]": diff})
    columns = ["column", "teachers × draws, runs", "mean", *(f"σ² {LEVEL_WORDS[lv]}" for lv in LEVELS), "dominant",
               f"Δ vs {BASELINE} [95 %]"]
    table = pd.DataFrame(rows, columns=columns, dtype=object)
    table.index = pd.Index(list(data["row"]), name="method")
    return table


def _footer(df: pd.DataFrame, data: pd.DataFrame, metric: str) -> list[str]:
    lines = [f"metric: {METRIC_WORDS[metric]}; runs that differ only in the teacher seed and the subset draw "
             "(data.subset_seed) are pooled per method, the nested design teacher seed ⊃ subset draw ⊃ student "
             "seed (the methods table keeps them apart)",
             "σ²: variance components by the method of moments of the nested random-effects ANOVA (teacher seed; "
             "subset draw within teacher; student seed within draw), in squared points, clipped at 0, with their "
             "share of the total; — where the design has one unit at that level (ce: no teacher)",
             f"Δ vs {BASELINE}: mean of the paired differences (same subset draw and student seed as {BASELINE}), "
             f"with its {LEVEL:.0%} percentile interval from a two-stage cluster bootstrap over teacher seeds and the "
             f"draws within them ({BOOTSTRAP_RESAMPLES} resamples, seeded; with one teacher and one draw, over the "
             "student seeds: at a few seeds narrower than the methods table's t-interval); with 2 or 3 units per "
             "level the intervals and components are rough"]
    lines += _dominance_lines(data)
    lines += caveats_footer(df, metric)
    if not len(data):
        lines.append("no completed runs to show")
    return lines


def _dominance_lines(data: pd.DataFrame) -> list[str]:
    """Which variance dominates: per source, the rows it dominates; pooled over rows, the largest mean share."""
    if not len(data):
        return []
    # A row of one teacher and one draw sampled the student seed alone: it says nothing of teachers or subsets.
    seeds_only = (data["n_teachers"] <= 1) & (data["n_draws"] <= 1)
    alone = ", ".join(map(str, data.loc[seeds_only, "row"]))
    lines = [f"only student seeds sampled (one teacher, one subset draw) in {alone}: the table says which variance "
             "dominates only where teacher seeds or draws vary"] if seeds_only.any() else []
    data = data[~seeds_only]
    if not len(data):
        return lines
    by_level: dict[str, list[str]] = defaultdict(list)
    for row, level in zip(data["row"], data["dominant"], strict=True):
        by_level[level if isinstance(level, str) else "none"].append(str(row))
    parts = [f"{LEVEL_WORDS.get(level, 'no positive component')} in {', '.join(rows)}"
             for level, rows in by_level.items()]
    shares = {lv: data[f"share_{lv}"].mean(skipna=True) for lv in LEVELS}
    shares = {lv: s for lv, s in shares.items() if not math.isnan(s)}
    overall = max(shares, key=lambda lv: shares[lv]) if shares else None
    line = f"dominant variance: {'; '.join(parts)}"
    if overall:
        line += (f"; over these rows the {LEVEL_WORDS[overall]} holds the largest mean share "
                 f"({shares[overall] * 100:.0f} %)")
    return [*lines, line]
