"""The sweep file `<results>/sweeps/<sweep_id>.json`: what a submitted sweep remembers.

It holds the grid, options, every run's config and the job ids of each submission (a `--resume` appends one);
`status`, `--wait` and `--resume` read it back. (The sweep file a user writes, YAML with the grid's keys, is
read by kdbench.sweep.grid.)
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from pathlib import Path
from typing import Any

from kdbench.core.errors import UserError
from kdbench.core.storage import atomic_write_json
from kdbench.spec.paths import Paths
from kdbench.store.records import default_results_dir
from kdbench.sweep.grid import Grid, JobSettings, Resources, SweepRun

SCHEMA_VERSION = 1


def sweeps_dir(results_dir: str | Path | None) -> Path:
    return Path(results_dir if results_dir is not None else default_results_dir()) / "sweeps"


def sweep_path(results_dir: str | Path | None, sweep_id: str) -> Path:
    return sweeps_dir(results_dir) / f"{sweep_id}.json"


def new_sweep_id() -> str:
    # Sorts by time; the suffix keeps two sweeps started in the same second apart.
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def run_entry(run: SweepRun) -> dict[str, Any]:
    c = run.config
    return {"run_id": run.run_id, "method": c.method, "teacher": c.teacher, "student": c.student,
            "dataset": c.dataset, "seed": c.seed, "teacher_digest": run.teacher.digest if run.teacher else None,
            "config": c.to_dict()}


def new_sweep(grid: Grid, paths: Paths, resources: Resources, executor: str, reason: str,
              runs: list[SweepRun], jobs: JobSettings | None = None) -> dict[str, Any]:
    """A sweep not yet submitted (saved by its first submission)."""
    sweep_id = new_sweep_id()
    return {
        "schema": SCHEMA_VERSION,
        "sweep_id": sweep_id,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "created_ts": time.time(),
        "executor": executor,
        "executor_reason": reason,
        "folder": str(Path(paths.results_dir or ".") / "submitit" / sweep_id),
        "grid": grid.to_dict(),
        # Each job is handed this dict (kdbench.sweep.jobs): its folders and how it runs, in one place.
        "paths": {**paths.to_dict(), **dataclasses.asdict(jobs or JobSettings())},
        "resources": dataclasses.asdict(resources),
        "runs": [run_entry(r) for r in runs],
        "submissions": [],
    }


def save_sweep(sweep: dict[str, Any]) -> Path:
    path = sweep_path(sweep["paths"]["results_dir"], sweep["sweep_id"])
    atomic_write_json(path, sweep)
    return path


def load_saved_sweep(results_dir: str | Path | None, sweep_id: str | None = None) -> dict[str, Any]:
    """The submitted sweep `sweep_id` as its sweep file saved it, or the latest one (by submission time) when
    None."""
    folder = sweeps_dir(results_dir)
    if sweep_id is None:
        files = sorted(folder.glob("*.json")) if folder.is_dir() else []
        if not files:
            raise UserError(f"no sweep in {folder}: start one with `kdbench sweep`")
        sweeps = [json.loads(p.read_text()) for p in files]
        return max(sweeps, key=lambda s: s.get("created_ts", 0.0))
    path = folder / f"{sweep_id}.json"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
        raise UserError(f"no sweep '{sweep_id}' in {folder}. Known: {', '.join(known[-10:]) or '(none)'}")
    return json.loads(path.read_text())


def latest_jobs(sweep: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """(run id → job id, teacher digest → job id) of the latest submission that included each."""
    runs: dict[str, str] = {}
    teachers: dict[str, str] = {}
    for sub in sweep["submissions"]:
        runs.update(sub["tasks"])
        teachers.update({d: t["job_id"] for d, t in sub["teacher_jobs"].items()})
    return runs, teachers
