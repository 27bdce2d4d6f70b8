"""Where a run's pieces live on disk: results, the teacher zoo, datasets and the teacher-output cache.

One class for both a single run (kdbench.execute.runner) and a sweep's jobs (kdbench.sweep), so a folder given on
the command line reaches every run by the same name. None: each folder's default (the store's, the zoo's, the
dataset's own, $KDBENCH_CACHE).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Paths:
    results_dir: str | Path | None = None
    zoo_dir: str | Path | None = None
    data_root: str | Path | None = None
    cache_dir: str | Path | None = None  # the teacher-output cache (kdbench.teachers.output_cache)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Paths:
        """The folders named in `d`; its other keys are ignored (a sweep's stored `paths` also holds how its jobs
        run: kdbench.sweep.grid.JobSettings)."""
        return cls(**{f.name: d.get(f.name) for f in dataclasses.fields(cls)})

    def to_dict(self) -> dict[str, str | None]:
        """The folders as text (a sweep stores them in its JSON file)."""
        return {f.name: None if getattr(self, f.name) is None else str(getattr(self, f.name))
                for f in dataclasses.fields(self)}
