"""`kdbench run --dry-run`: what a run would be (resolved config, run id, code fingerprint, reuse) without running it.

Nothing here opens a dataset, builds a model or trains a teacher: datasets, methods and architectures are
resolved by name, and the results store is only read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdbench.execute.resolve import RunOptions, resolve_config, with_run_teacher
from kdbench.store.fingerprint import code_fingerprint
from kdbench.store.records import RunStore


def dry_run_plan(opts: RunOptions, results_dir: str | Path | None = None, *, force: bool = False) -> dict[str, Any]:
    """`{"run_id", "config", "code", "record", "stored_status", "would_reuse", "older_code_runs"}` for `opts`.

    `would_reuse`: a completed record with this run id exists (and `force` is off), so `kdbench run` would show
    it instead of training. `older_code_runs`: completed records of the same config made by other code."""
    config = resolve_config(with_run_teacher(opts, results_dir))
    store = RunStore(results_dir)
    existing = store.load(config.run_id)
    status = existing["status"] if existing is not None else None
    return {
        "run_id": config.run_id,
        "config": config.to_dict(),
        "code": code_fingerprint(config.method),
        "record": str(store.result_path(config.run_id)),
        "stored_status": status,
        "would_reuse": status == "completed" and not force,
        "older_code_runs": store.older_code_runs(config),
    }
