"""Where a run's pieces live on disk: results, the teacher zoo, datasets and the teacher-output cache.

One class for both a single run (kdbench.execute.runner) and a sweep's jobs (kdbench.sweep), so a folder given on
the command line reaches every run by the same name. None: each folder's default (the store's, the zoo's, the
dataset's own, $KDBENCH_CACHE).

:func:`check_folder` is how a command finds out, before it trains or writes a run folder, that a folder it must
create cannot be: one line naming the folder and the option that picks another (issue #34).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdbench.core.errors import UserError
from kdbench.core.storage import check_writable


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


def check_folder(folder: str | Path, what: str, option: str) -> None:
    """A one-line UserError naming `what` (e.g. "zoo dir X") and `option` unless `folder` can be created (if
    missing) and written: a file where it or a folder above it should be (`--zoo-dir /tmp/a-file/zoo`), a
    read-only mount or a full disk is found here, not as a traceback (or a half-made run) at the first write."""
    folder = Path(folder).expanduser()
    blocker = _file_in_the_way(folder)
    if blocker is not None:
        where = "is a file" if blocker == folder else f"lies under {blocker}, which is a file"
        raise UserError(f"{what} {where}, not a folder: pass {option} a folder (it is created if missing)")
    check_writable(folder, what, option)


def _file_in_the_way(folder: Path) -> Path | None:
    """`folder`, or the nearest folder above it that exists, when that is not a folder (a file, a dangling
    symlink); None when it is one, or cannot be looked at (check_writable then says why)."""
    try:
        for above in (folder, *folder.parents):
            if above.is_dir():
                return None
            if above.exists() or above.is_symlink():
                return above
    except OSError:  # e.g. a folder above that this user may not look into
        return None
    return None
