"""Run records: `<results-dir>/runs/<run_id>/` with `result.json`, `metrics.jsonl` and `checkpoint.pt`.

`result.json` is the source of truth for a run's state (running / completed / failed / diverged); a
leaderboard or a sweep's status is a pure function of these files. Every write is atomic. A record is never
overwritten by a different config: the run id is the config's hash, and a mismatch is refused loudly.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kdbench.core import distributed
from kdbench.core.errors import UserError
from kdbench.core.storage import atomic_write_json, atomic_write_text, inside, read_regular_bytes
from kdbench.spec.config import RunConfig
from kdbench.store.migrations import BadRecord, upgrade

# A record is a few kilobytes; a larger `result.json` is not one (and a device is never read).
MAX_RECORD_BYTES = 64 << 20
# `interrupted`: stopped by the scheduler (time limit, preemption, scancel); it resumes from its checkpoint.
STATUSES = ("running", "completed", "failed", "diverged", "interrupted")


def default_results_dir() -> Path:
    return Path(os.environ.get("KDBENCH_RESULTS", "results")).expanduser()


@dataclass(frozen=True)
class UnreadableRecord:
    """A `result.json` that is not a readable record (truncated, not JSON, not a record)."""

    run_id: str
    path: Path
    reason: str

    def describe(self) -> str:
        return f"run {self.run_id}: {self.path} is unreadable ({self.reason})"


def _check_folder(root: Path) -> None:
    """A results dir that is (or lies under) a file is a one-line UserError, not an OSError later."""
    for folder in (root, *root.parents):
        if folder.exists():
            if not folder.is_dir():
                what = "is a file" if folder == root else f"lies under {folder}, which is a file"
                raise UserError(f"results dir {root} {what}, not a folder: pass --results-dir a folder "
                                "(it is created if missing)")
            return


class RunStore:
    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_results_dir()
        _check_folder(self.root)

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    def result_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "result.json"

    def checkpoint_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "checkpoint.pt"

    def metrics_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "metrics.jsonl"

    def check_own(self, run_id: str) -> None:
        """A UserError unless the run's folder and everything in it lie in the results folder: a colleague's
        folder may hold a symlink to anywhere, and kdbench never writes through one (nor reads a record from one).
        Called by every writer of a run folder before it writes."""
        runs, run_dir = self.root / "runs", self.run_dir(run_id)
        entries = [run_dir]
        if run_dir.is_dir() and inside(runs, run_dir):
            entries += sorted(run_dir.iterdir())
        for path in entries:
            if (path.exists() or path.is_symlink()) and not inside(runs, path):
                raise UserError(f"run {run_id}: {path} is a symlink out of the results folder {self.root} "
                                f"(to {_target(path)}); kdbench never writes through one: remove the link")

    def load(self, run_id: str) -> dict[str, Any] | None:
        """The run's record at the current schema; None if it has none. An unreadable record (or one reached
        through a symlink out of the results folder) is a UserError naming the file."""
        path = self.result_path(run_id)
        if not (path.exists() or path.is_symlink()):
            return None
        self.check_own(run_id)
        record = _read_record(path, self.root / "runs")
        if isinstance(record, str):
            raise UserError(f"run {run_id}: {path} is unreadable ({record}); delete {path.parent} to run it afresh")
        return record

    def status(self, run_id: str) -> str | None:
        record = self.load(run_id)
        return record["status"] if record else None

    def write(self, record: dict[str, Any]) -> None:
        if not distributed.is_main():  # a data-parallel run's record is rank 0's to write
            return
        run_id = record["run_id"]
        self.check_own(run_id)
        existing = self.load(run_id)
        if existing is not None and existing.get("config") != record.get("config"):
            raise UserError(
                f"refusing to overwrite run {run_id}: {self.result_path(run_id)} holds a different config"
            )
        atomic_write_json(self.result_path(run_id), record)

    def older_code_runs(self, config: RunConfig) -> list[str]:
        """Run ids of completed records of `config` made by other code (the same config but for its `code`)."""
        if not config.code:
            return []
        same = config.without_code().to_dict()
        out = []
        for record in self.iter_records():
            try:
                other = RunConfig.from_dict(record["config"])
            except (TypeError, KeyError, ValueError):  # not a config this version can read
                continue
            if record["status"] == "completed" and other.code != config.code and other.without_code().to_dict() == same:
                out.append(record["run_id"])
        return out

    def write_metrics(self, run_id: str, history: list[Any]) -> None:
        # Rewritten whole from the engine's history, so a resumed run never duplicates epochs.
        if not distributed.is_main():
            return
        self.check_own(run_id)
        lines = [json.dumps(asdict(r) if not isinstance(r, dict) else r, sort_keys=True) for r in history]
        atomic_write_text(self.metrics_path(run_id), "".join(line + "\n" for line in lines))

    def read_history(self, run_id: str) -> list[dict[str, Any]]:
        """The run's per-epoch records (`metrics.jsonl`); [] when it has none yet. UnreadableHistory (an
        OSError) for a file reached through a link out of the results folder, not a regular file, or holding a
        line that is not an epoch's record."""
        path = self.metrics_path(run_id)
        if not (path.exists() or path.is_symlink()):
            return []
        if not inside(self.root / "runs", path):
            raise UnreadableHistory(f"run {run_id}: {path} is a symlink out of the results folder, to {_target(path)}")
        try:
            text = read_regular_bytes(path, MAX_RECORD_BYTES).decode()
        except (OSError, UnicodeDecodeError) as e:
            raise UnreadableHistory(f"run {run_id}: {path} is unreadable ({type(e).__name__}: {e})") from None
        history = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    epoch = json.loads(line)
                except (ValueError, RecursionError):
                    epoch = None
                if not _is_epoch(epoch):
                    raise UnreadableHistory(f"run {run_id}: line {number} of {path} is not an epoch's record "
                                            f"({line[:40]!r})")
                history.append(epoch)
        return history

    def iter_records(self) -> list[dict[str, Any]]:
        """Every readable record (see :meth:`scan` for the unreadable ones)."""
        return self.scan()[0]

    def scan(self) -> tuple[list[dict[str, Any]], list[UnreadableRecord]]:
        """Every record under `runs/`, and every `result.json` that could not be read (with the reason)."""
        runs = self.root / "runs"
        if not runs.is_dir():
            return [], []
        records, unreadable = [], []
        for path in sorted(runs.glob("*/result.json")):
            record = _read_record(path, runs)
            if isinstance(record, str):
                unreadable.append(UnreadableRecord(path.parent.name, path, record))
            else:
                records.append(record)
        return records, unreadable


class UnreadableHistory(OSError):
    """A `metrics.jsonl` kdbench will not read; the message names the run and the file."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_epoch(epoch: Any) -> bool:
    """An epoch's record as the engine writes it, as far as a reader relies on it."""
    return (isinstance(epoch, dict) and isinstance(epoch.get("epoch"), int) and _is_number(epoch.get("top1"))
            and isinstance(epoch.get("losses", {}), dict)
            and all(_is_number(v) for v in epoch.get("losses", {}).values()))


def _target(path: Path) -> str:
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):  # a symlink loop
        return "a symlink loop"


def _read_record(path: Path, runs: Path) -> dict[str, Any] | str:
    """The record in `path` at the current schema (kdbench.store.migrations), or why it cannot be read. Records
    are written atomically, so an unreadable one was damaged by something else (a full disk on a copy, a hand
    edit, a sync tool), written by a newer kdbench, or is a link out of the results folder (`runs`)."""
    if not inside(runs, path):
        return f"a symlink out of the results folder, to {_target(path)}"
    try:
        record = json.loads(read_regular_bytes(path, MAX_RECORD_BYTES))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:  # UnsafeFile is an OSError
        return " ".join(f"{type(e).__name__}: {e}".split())[:200]
    if not isinstance(record, dict) or not isinstance(record.get("run_id"), str) or "status" not in record:
        return "not a run record (no run_id or status)"
    try:
        return upgrade(record)
    except BadRecord as e:
        return str(e)
