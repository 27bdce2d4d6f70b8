"""Preparing and filtering the runs DataFrame: the columns every table reads and the keys that decide which runs
may share a cell (everything that changes numbers except the seed)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pandas as pd

from kdbench.core.errors import UserError
from kdbench.data.splits import SUBSET_SEED_KEY
from kdbench.report.results import COLUMNS
from kdbench.spec.config import without_added_method_params


def is_missing(value: Any) -> bool:
    """None or NaN (a cell pandas left empty); a dict or list is never missing."""
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # dicts, lists
        return False


def clean(value: Any) -> Any:
    """The value, or None when it is missing."""
    return None if is_missing(value) else value


def canon(value: Any) -> str:
    """A canonical string of a value (sorted-key JSON): equal settings give equal keys."""
    return json.dumps(clean(value), sort_keys=True, default=str)


def pair_label(teacher: Any, student: Any) -> str:
    """"resnet152 → gnn2" for a distilled run; just the student for one trained alone."""
    return str(student) if is_missing(teacher) else f"{teacher} → {student}"


def prepare_runs(runs: pd.DataFrame, row_recipe_fields: Sequence[str] = ()) -> pd.DataFrame:
    """The runs (kdbench.report.results.load_runs: every column a table reads is there) plus derived columns:
    `pair`, the setting keys that decide which runs may share a cell, and `variant` (hyperparameters as a dict).

    `row_recipe_fields` moves those recipe fields from the column setting to the row variant (`recipe.KEY`)."""
    missing = [c for c in COLUMNS if c not in runs.columns]
    if missing:  # a frame made some other way than load_runs (which gives every row these columns)
        raise UserError(f"the runs table lacks the column(s) {', '.join(missing[:6])}"
                        f"{', …' if len(missing) > 6 else ''}: make it with kdbench.load_runs()")
    df = runs.copy().reset_index(drop=True)
    df = df.astype({c: object for c in df.columns})
    df["pair"] = [pair_label(t, s) for t, s in zip(df["teacher"], df["student"], strict=True)]
    records = df.to_dict("records")
    settings = [_setting(r) for r in records]
    variants = [_variant(r) for r in records]
    for s, v in zip(settings, variants, strict=True):
        for key in row_recipe_fields:
            if key in s["recipe"]:
                v[f"recipe.{key}"] = s["recipe"].pop(key)
    df["_setting"] = settings
    # Which runs may share a cell: everything that changes numbers except the seeds. The `_pool_*` keys leave out
    # the teacher seed and the subset draw too: the nested design the variance table pools (kdbench.report.
    # leaderboard.variance); every other table keeps those runs apart.
    rows = df.to_dict("records")
    df["_student_key"] = [_student_key(r, s) for r, s in zip(rows, settings, strict=True)]
    df["_col_key"] = [_col_key(sk, r, s) for sk, r, s in zip(df["_student_key"], rows, settings, strict=True)]
    df["_pool_student_key"] = [_student_key(r, s, pooled=True) for r, s in zip(rows, settings, strict=True)]
    df["_pool_col_key"] = [_col_key(sk, r, s, pooled=True)
                           for sk, r, s in zip(df["_pool_student_key"], rows, settings, strict=True)]
    df["variant"] = variants
    df["_row_key"] = [canon([m, v]) for m, v in zip(df["method"], df["variant"], strict=True)]
    return df


def _student_key(r: dict[str, Any], s: dict[str, Any], pooled: bool = False) -> str:
    data = {k: v for k, v in s["data"].items() if not (pooled and k == SUBSET_SEED_KEY)}
    return canon([r["dataset"], r["student"], data, s["recipe"], s["amp"], s["channels_last"], s["best_on"]])


def _col_key(student_key: str, r: dict[str, Any], s: dict[str, Any], pooled: bool = False) -> str:
    # The teacher seed joins the key only away from 0, so the keys (and labels) of one-teacher tables stay.
    seed = [{"teacher_seed": s["teacher_seed"]}] if s["teacher_seed"] and not pooled else []
    return canon([student_key, r["teacher"], s["teacher_recipe"], s["teacher_ckpt"], s["teacher_params"],
                  *([s["teacher_data"]] if s["teacher_data"] else []), *seed])


def teacher_seed_of(r: dict[str, Any]) -> int:
    """The seed of a run's zoo teacher (0 for a run without one, and for records from before it was recorded)."""
    if is_missing(r.get("teacher")):
        return 0
    value = clean(r.get("teacher_seed"))
    return int(value) if value is not None else 0


def selection_of(value: Any) -> str:
    """A record's `best_selected_on`; records from before validation splits chose on test."""
    return "val" if clean(value) == "val" else "test"


def is_flag_set(value: Any) -> bool:
    """A yes/no cell of the runs DataFrame (`transductive`, see kdbench.train.transductive; `teacher_at_inference`, see
    kdbench.report.results); missing (older records) = False."""
    return bool(clean(value) or False)


def _setting(r: dict[str, Any]) -> dict[str, Any]:
    recipe = dict(clean(r.get("recipe_params")) or {"name": clean(r.get("recipe"))})  # a copy: may be edited
    return {
        "data": clean(r.get("data_params")) or {},
        "recipe": recipe,
        "teacher_recipe": clean(r.get("teacher_recipe_params")),
        "teacher_ckpt": clean(r.get("teacher_ckpt_sha256")),
        "teacher_params": clean(r.get("teacher_params")) or {},
        # What the zoo teacher trained on (kdbench.report.results.teacher_data_of): the control column is told apart.
        "teacher_data": clean(r.get("teacher_data")) or {},
        # Which of the architecture's zoo teachers (one per seed): runs of two teachers never share a cell.
        "teacher_seed": teacher_seed_of(r),
        "param_groups": clean(r.get("param_groups")) or {},
        "amp": bool(clean(r.get("amp")) or False),
        "channels_last": bool(clean(r.get("channels_last")) or False),
        # The split that chose the best epoch is part of what a cell means: never average across it.
        "best_on": selection_of(r.get("best_selected_on")),
    }


def _variant(r: dict[str, Any]) -> dict[str, Any]:
    # A setting added after the first records is left out of newer ones at its default: group old and new alike.
    out = without_added_method_params(clean(r.get("method_params")) or {})
    out.update({f"student.{k}": v for k, v in (clean(r.get("student_params")) or {}).items()})
    return out
