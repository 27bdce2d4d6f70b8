"""`--where`: filtering the runs DataFrame before a table is built, by any of its columns, a setting as `--set` names
it (`recipe.dot_delta=0|none`), or `setting` (what sets a run's method away from its registered defaults)."""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

from kdbench.core.errors import UserError, unknown_name
from kdbench.report.leaderboard.labels import setting_text
from kdbench.report.leaderboard.pivot import SECTIONS
from kdbench.report.leaderboard.runs import clean, is_missing


def parse_where(text: str | None) -> list[tuple[str, bool, list[str]]]:
    """`"method=kd|crd,dataset!=fake"` → [(column, equal?, values)]; comma = AND, `|` = OR within a column."""
    out = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"([^=!]+?)\s*(!=|=)\s*(.*)", part)
        if not m:
            raise UserError(f"--where expects COLUMN=VALUE[,COLUMN=VALUE…] (e.g. method=kd,dataset=digits), "
                            f"got '{part}'")
        out.append((m.group(1).strip(), m.group(2) == "=", [v.strip() for v in m.group(3).split("|")]))
    return out


def _matches(cell: Any, values: list[str]) -> bool:
    for v in values:
        if is_missing(cell):
            if v.lower() in ("", "none", "null"):
                return True
            continue
        if str(cell) == v:
            return True
        if isinstance(cell, int | float) and not isinstance(cell, bool):
            try:
                if float(v) == float(cell):
                    return True
            except ValueError:
                pass
    return False


# `setting`: what sets a run's method away from its registered defaults (the bracket of its row label,
# `at [w_at=250]`); missing for a run at its method's defaults, so `setting=none` keeps exactly those.
SETTING_COLUMN = "setting"


def _scoped_values(runs: pd.DataFrame, col: str) -> pd.Series | None:
    """`--where` reaches into a run's settings as `--set` (and the pivot table) name them (`recipe.dot_delta`,
    `data.subset_seed`, `teacher_data.train_fraction`): the column of that dict in the runs DataFrame (the pivot's
    SECTIONS). A key a record leaves out (at its default) is missing there, and `KEY=none` matches it."""
    scope, dot, key = col.partition(".")
    source = SECTIONS.get(scope) if dot and key else None
    if source is None or source not in runs.columns:
        return None
    return runs[source].map(lambda d, key=key: clean(d).get(key) if isinstance(clean(d), dict) else None)


def _setting_values(runs: pd.DataFrame) -> pd.Series:
    return pd.Series([setting_text(r) or None for r in runs.to_dict("records")], index=runs.index, dtype=object)


def filter_runs(runs: pd.DataFrame, where: str | None) -> pd.DataFrame:
    """The runs matching every `COLUMN=VALUE` clause of `where`: any column of the runs DataFrame, a setting as
    `--set` names it (`recipe.dot_delta=0|none`), or `setting` (SETTING_COLUMN)."""
    clauses = parse_where(where)
    if not clauses:
        return runs
    columns = [c for c in runs.columns if not c.startswith("_")]
    keep = pd.Series(True, index=runs.index)
    for col, equal, values in clauses:
        if col in columns:
            cells = runs[col]
        elif col == SETTING_COLUMN and "variant" in runs.columns:
            cells = _setting_values(runs)
        elif (scoped := _scoped_values(runs, col)) is not None:
            cells = scoped
        else:
            raise unknown_name("--where column", col, [*columns, SETTING_COLUMN,
                                                      *(f"{s}.KEY" for s in SECTIONS)], max_listed=70)
        hit = cells.map(lambda cell, values=values: _matches(cell, values)).astype(bool)
        keep &= hit if equal else ~hit
    return runs[keep]
