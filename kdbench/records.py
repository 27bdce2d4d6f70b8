"""Run records: `<results-dir>/runs/<run_id>/` with `result.json`, `metrics.jsonl` and `checkpoint.pt`.

`result.json` is the source of truth for a run's state (running / completed / failed / diverged); a
leaderboard or a sweep's status is a pure function of these files. Every write is atomic. A record is never
overwritten by a different config: the run id is the config's hash, and a mismatch is refused loudly.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .config import RunConfig
from .errors import UserError
from .storage import atomic_write_json, atomic_write_text

SCHEMA_VERSION = 1
# `interrupted`: stopped by the scheduler (time limit, preemption, scancel); it resumes from its checkpoint.
STATUSES = ("running", "completed", "failed", "diverged", "interrupted")


def default_results_dir() -> Path:
    return Path(os.environ.get("KDBENCH_RESULTS", "results")).expanduser()


class RunStore:
    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_results_dir()

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    def result_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "result.json"

    def checkpoint_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "checkpoint.pt"

    def metrics_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "metrics.jsonl"

    def load(self, run_id: str) -> dict[str, Any] | None:
        path = self.result_path(run_id)
        if not path.exists():
            return None
        return json.loads(path.read_text())

    def status(self, run_id: str) -> str | None:
        record = self.load(run_id)
        return record["status"] if record else None

    def write(self, record: dict[str, Any]) -> None:
        run_id = record["run_id"]
        existing = self.load(run_id)
        if existing is not None and existing.get("config") != record.get("config"):
            raise UserError(
                f"refusing to overwrite run {run_id}: {self.result_path(run_id)} holds a different config"
            )
        atomic_write_json(self.result_path(run_id), record)

    def write_metrics(self, run_id: str, history: list[Any]) -> None:
        # Rewritten whole from the engine's history, so a resumed run never duplicates epochs.
        lines = [json.dumps(asdict(r) if not isinstance(r, dict) else r, sort_keys=True) for r in history]
        atomic_write_text(self.metrics_path(run_id), "".join(line + "\n" for line in lines))

    def iter_records(self) -> list[dict[str, Any]]:
        runs = self.root / "runs"
        if not runs.is_dir():
            return []
        out = []
        for path in sorted(runs.glob("*/result.json")):
            try:
                out.append(json.loads(path.read_text()))
            except json.JSONDecodeError:  # only possible for files written by something else
                continue
        return out


def new_record(config: RunConfig) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "run_id": config.run_id,
        "status": "running",
        "method": config.method,
        "teacher": config.teacher,
        "student": config.student,
        "dataset": config.dataset,
        "seed": config.seed,
        "recipe": config.recipe.name,
        "config": config.to_dict(),
        "metrics": None,
        "teacher_metrics": None,
    }
