"""Run records → one pandas DataFrame (a leaderboard is a pure function of it)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pandas as pd

from kdbench.core.errors import UserError
from kdbench.store.records import RunStore
from kdbench.train.transductive import is_transductive

IDENTITY = ("run_id", "status", "method", "teacher", "student", "dataset", "seed", "recipe")
# Every row has these columns (None where its record has no such value: a run not completed, a block a record of
# its kind does not hold), so every table builds from any mix of records without a fallback of its own.
COLUMNS = (
    *IDENTITY, "top1_last", "top1_best", "top5_last", "top5_best", "best_epoch", "epochs", "best_selected_on",
    "val_top1_best", "teacher_top1", "teacher_top1_best", "teacher_top5", "teacher_top5_best", "teacher_sha256",
    "timing.train_s", "inference.s_per_image", "inference.batch_size", "inference.device", "student_info.params",
    "student_info.layers", "eval.batch_size", "data.num_train", "data.num_test", "method_params", "student_params",
    "data_params", "recipe_params", "teacher_recipe_params", "teacher_params", "teacher_data", "teacher_seed",
    "teacher_ckpt_sha256", "param_groups", "amp", "channels_last", "finished_at", "code_fingerprint",
    "transductive", "teacher_at_inference",
)


def flatten_record(record: dict[str, Any]) -> dict[str, Any]:
    """One row per run (a record loaded by RunStore: at the current schema, its blocks of the right types): identity
    columns, metrics, teacher metrics (prefixed `teacher_`), timing, sizes; at least :data:`COLUMNS`."""
    row: dict[str, Any] = {**dict.fromkeys(COLUMNS), **{k: record.get(k) for k in IDENTITY}}
    for k, v in (record.get("metrics") or {}).items():
        row[k] = v
    for k, v in (record.get("teacher_metrics") or {}).items():
        if isinstance(v, int | float | str | bool) or v is None:
            row[f"teacher_{k}"] = v
    for section in ("timing", "inference", "memory", "student_info", "eval"):
        for k, v in (record.get(section) or {}).items():
            row[f"{section}.{k}"] = v
    # The test-set size behind an accuracy figure (its binomial error in the leaderboards' footers).
    for k in ("num_train", "num_test"):
        row[f"data.{k}"] = (record.get("data") or {}).get(k)
    config = record["config"]
    row["method_params"] = config.get("method_params")
    row["student_params"] = config.get("student_params")
    row["data_params"] = config.get("data_params")
    # The rest of the run's identity, so that a table never averages runs that differ in more than their seed.
    row["recipe_params"] = config.get("recipe")
    row["teacher_recipe_params"] = config.get("teacher_recipe")
    row["teacher_params"] = config.get("teacher_params")
    row["teacher_data"] = teacher_data_of(config)
    row["teacher_seed"] = config.get("teacher_seed")
    row["teacher_ckpt_sha256"] = config.get("teacher_ckpt_sha256")
    row["param_groups"] = config.get("param_groups")  # `--set group.*` (kdbench.train.optim)
    row["amp"] = config.get("amp")
    row["channels_last"] = config.get("channels_last")
    row["finished_at"] = record.get("finished_at")
    # The code that made the numbers (kdbench.store.fingerprint); None for records made before fingerprints.
    row["code_fingerprint"] = (record.get("code") or {}).get("fingerprint")
    row["transductive"] = is_transductive(record)
    # A student whose predictions need its teacher's forward pass (cnn2gnn.graph_features=teacher): not a
    # standalone model, marked in every table.
    row["teacher_at_inference"] = bool((record.get("method_info") or {}).get("inference_needs_teacher"))
    return row


def teacher_data_of(config: dict[str, Any]) -> dict[str, Any] | None:
    """What a run's zoo teacher trained on, as a setting: {"train_fraction": F} (1: the full training split; the
    information-matched control `teacher_data.train_fraction` otherwise); None for a teacher the zoo did not train
    (a user's file, a run's student, an imported one), or no teacher."""
    recipe = config.get("teacher_recipe")
    if not recipe or recipe.get("name") == "imported":
        return None
    return {"train_fraction": 1.0, **(config.get("teacher_data") or {})}


def load_runs(results_dir: str | Path | None = None, *, strict: bool = False) -> pd.DataFrame:
    """Every run record under `results_dir` (default ./results or $KDBENCH_RESULTS) as a DataFrame.

    An unreadable record (e.g. a truncated `result.json`) is never dropped silently: each is reported on stderr
    (run id and reason) and the others load; with `strict` they are a UserError instead."""
    records, unreadable = RunStore(results_dir).scan()
    if unreadable and strict:
        listed = "; ".join(u.describe() for u in unreadable)
        raise UserError(f"{len(unreadable)} unreadable run record(s): {listed} (fix or delete them, or drop --strict)")
    for u in unreadable:
        print(f"warning: {u.describe()}; skipped", file=sys.stderr)
    rows = [flatten_record(r) for r in records]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=list(COLUMNS))
