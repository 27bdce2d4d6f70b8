"""Our runs beside the published numbers (`kdbench leaderboard --published`).

A published row (`kdbench.report.published`) is joined with our cells of the `methods` table on dataset, teacher,
student
and method, at the epoch convention the paper used: a last-epoch number is compared with our `top1_last`, a
best-epoch number with our `top1_best`, and a number whose convention the paper does not state with neither.
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

from kdbench.report.leaderboard.board import DECIMALS, TEACHER_ROW, Leaderboard
from kdbench.report.leaderboard.cells import format_cell, published_cell
from kdbench.report.leaderboard.footers import caveats_footer
from kdbench.report.leaderboard.methods import methods_table
from kdbench.report.leaderboard.runs import clean, is_missing
from kdbench.report.published import EPOCH_METRIC, EPOCH_WORDS

# The spread of re-runs users of the papers' own code report (DKD and CRD repositories' issues).
NOISE = 0.5
CE_ROW = "ce"
# Logit standardization is a switch of a method, not a method: a published `M+ls` row is compared with our `M` runs
# that have it on (row label `M [logit_std=True]`), a plain `M` row with those that have it off.
LS_SUFFIX = "+ls"
_LS_ON = re.compile(r"\blogit_std=true\b", re.IGNORECASE)
# DOT is a recipe setting, not a method: a published `M+dot` row is compared with our `M` cells whose runs trained
# with `recipe.dot_delta` > 0 (their column), a plain `M` row only with cells trained without it.
DOT_SUFFIX = "+dot"
DATA_COLUMNS = ["paper", "table", "dataset", "teacher", "student", "method", "row", "epoch", "published_top1",
                "published_std", "published_runs", "metric", "mean", "std", "n", "delta", "setting", "run_ids"]


def _dot_runs(df: pd.DataFrame) -> set[str]:
    """The run ids of `df` trained with DOT (`recipe.dot_delta` > 0)."""
    if not len(df):
        return set()
    return {str(run_id) for run_id, recipe in zip(df["run_id"], df["recipe_params"], strict=True)
            if isinstance(clean(recipe), dict) and float(clean(recipe).get("dot_delta") or 0.0) > 0}


def _ours_for(cells: pd.DataFrame, row: dict[str, Any], dot_runs: set[str]) -> pd.DataFrame:
    """Our cells (of one metric's methods table) that match a published row: same dataset, student and method
    (with the `+ls` / `+dot` settings on exactly when the row names them), and same teacher. The student alone has
    no teacher: it is taken from whichever pair column shows it."""
    method = str(row["method"])
    dot = method.endswith(DOT_SUFFIX)
    method = method.removesuffix(DOT_SUFFIX)
    ls = method.endswith(LS_SUFFIX)
    same = cells[(cells["dataset"] == row["dataset"]) & (cells["student"] == row["student"])
                 & (cells["method"] == method.removesuffix(LS_SUFFIX)) & (cells["n"] > 0)]
    same = same[same["row"].map(lambda label: _LS_ON.search(str(label)) is not None) == ls]
    # A cell's runs share their column's recipe: one DOT run makes it a DOT cell.
    same = same[same["run_ids"].map(lambda ids: bool(set(str(ids).split()) & dot_runs)) == dot]
    exact = same[same["teacher"] == row["teacher"]]
    if len(exact) or row["method"] != CE_ROW:
        return exact
    return same.drop_duplicates("run_ids")


def _setting(column: str) -> str:
    """The recipe part of a methods-table column label ("dataset · pair · recipe [settings]")."""
    return column.split(" · ", 2)[-1]


def _delta(value: float) -> str:
    return "—" if is_missing(value) else f"{value:+.{DECIMALS}f}"


def published_table(df: pd.DataFrame, published: pd.DataFrame) -> Leaderboard:
    """One row per (published number, matching cell of ours): the published value, ours at the paper's epoch
    convention (mean ± std over seeds), Δ = ours − published. Published rows without a matching run are counted
    in the footer, not shown."""
    cells = {metric: methods_table(df, metric).data for metric in EPOCH_METRIC.values()}
    records, unmatched = [], 0
    dot_runs = _dot_runs(df)
    for p in published.to_dict("records"):
        metric = EPOCH_METRIC.get(p["epoch"])
        # Unstated convention: show that we have runs, but compare with neither metric.
        ours = _ours_for(cells[metric or "top1_last"], p, dot_runs)
        if not len(ours):
            unmatched += 1
        records += [_beside(p, o, metric) for o in ours.to_dict("records")]
    data = pd.DataFrame.from_records(records, columns=DATA_COLUMNS)
    return Leaderboard("published", "ours beside the published results", _display(data), data,
                       _footer(df, data, unmatched))


def _beside(p: dict[str, Any], o: dict[str, Any], metric: str | None) -> dict[str, Any]:
    """One published number beside one cell of ours; with no `metric` (the paper's convention unstated), ours
    is not compared."""
    compared = metric is not None
    mean = o["mean"] if compared else float("nan")
    return {
        "paper": p["paper"], "table": p["table"], "dataset": p["dataset"], "teacher": p["teacher"],
        "student": p["student"], "method": p["method"], "row": o["row"], "epoch": p["epoch"],
        "published_top1": p["top1"], "published_std": p["std"], "published_runs": p["runs"],
        "metric": metric, "mean": mean, "std": o["std"] if compared else float("nan"),
        "n": int(o["n"]) if compared else 0, "delta": mean - p["top1"], "setting": _setting(o["column"]),
        "run_ids": o["run_ids"] if compared else "",
    }


def _display(data: pd.DataFrame) -> pd.DataFrame:
    display = pd.DataFrame({
        "paper": [f"{p} {t}" for p, t in zip(data["paper"], data["table"], strict=True)],
        "dataset": data["dataset"],
        "teacher → student": [f"{t} → {s}" for t, s in zip(data["teacher"], data["student"], strict=True)],
        "method": data["row"],
        "epoch": data["epoch"],
        "published": [published_cell(m, s, n) for m, s, n in
                      zip(data["published_top1"], data["published_std"], data["published_runs"], strict=True)],
        "ours": [format_cell(m, s, n) for m, s, n in zip(data["mean"], data["std"], data["n"], strict=True)],
        "Δ": data["delta"].map(_delta),
        "our setting": data["setting"],
    }, dtype=object)
    display.index = display.index.map(str)
    return display


def _footer(df: pd.DataFrame, data: pd.DataFrame, unmatched: int) -> list[str]:
    footer = ["published: the paper's top-1 (%) ± std where given (runs, where given); ours: mean ± std over seeds "
              "(number of seeds) of completed runs, at the paper's epoch convention: "
              + "; ".join(f"{e} → {m}" for e, m in EPOCH_METRIC.items()),
              f"Δ = ours − published; re-runs of the papers' own code spread by about ±{NOISE} (their repositories' "
              "issues), so a |Δ| within that is within the noise the papers themselves show"]
    if (data["epoch"] == "unstated").any():
        papers = ", ".join(sorted(set(data.loc[data["epoch"] == "unstated", "paper"])))
        footer.append(f"{papers}: {EPOCH_WORDS['unstated']}, so ours is not compared (—); "
                      "`kdbench leaderboard --metric top1_last|top1_best` shows both")
    if {TEACHER_ROW, CE_ROW} & set(data["method"]):
        footer.append("teacher: the teacher alone (ours: distinct teacher checkpoints); ce: the student trained alone")
    if unmatched:
        footer.append(f"{unmatched} published number(s) have no matching completed run (`kdbench published` lists "
                      "them all)")
    return footer + caveats_footer(df, "top1_last")
