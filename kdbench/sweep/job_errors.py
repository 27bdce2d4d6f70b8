"""The error a job died of when its run left no record: the last exception line of the job's stderr log.

A run refused before training (a model that cannot take the data, a teacher the zoo cannot store) writes no run
folder (kdbench.execute.model_probe, issue #34's convention), so `kdbench status` has no record to read the error
from; the job's log has it, as submitit's traceback ends with the exception's one line.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from submitit.core.utils import JobPaths

# Only the end of the log: a traceback's last line is there, and a log may be long.
TAIL_BYTES = 64 * 1024
# `kdbench.core.errors.UserError: --student ... does not take ...` or `AssertionError: ...`
_EXCEPTION_LINE = re.compile(r"^(?:[\w.]+\.)?(\w*(?:Error|Exception|Interrupt)): (.+)$")


def _tail(path: Path) -> str:
    """The last TAIL_BYTES of a regular file (never a link, FIFO or device: the log folder may be shared), or ""."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return ""
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return ""
    try:
        size = os.fstat(fd).st_size
        os.lseek(fd, max(0, size - TAIL_BYTES), os.SEEK_SET)
        return os.read(fd, TAIL_BYTES).decode("utf-8", errors="replace")
    finally:
        os.close(fd)


def job_error_line(folder: str | Path, job_id: str) -> str | None:
    """The last exception line in job `job_id`'s stderr log under the sweep's submitit `folder`: a UserError's
    message as the user would have read it, any other exception as `Type: message`; None when there is none."""
    found = None
    for line in _tail(JobPaths(Path(folder), job_id, task_id=0).stderr).splitlines():
        match = _EXCEPTION_LINE.match(line.strip())
        if match:
            kind, message = match.groups()
            found = message if kind == "UserError" else f"{kind}: {message}"
    return found
