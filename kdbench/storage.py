"""Atomic file writes (temp file in the same folder + rename): a reader never sees a half-written file, and a
crash mid-write leaves the previous version intact.

Modes: `tempfile.mkstemp` creates its file 0600 whatever the umask, so each file gets the mode a plain `open()`
would have given it (0666 minus the umask: 0644 under umask 022, 0664 under 002, for a group sharing a results
folder), and never the world-writable bit, even under umask 000: a record or checkpoint that anyone can rewrite
is one anyone can forge.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def current_umask() -> int:
    """The process's umask, read without changing it where Linux shows it (`os.umask` can only swap it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o077)  # elsewhere: swap and restore at once
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode of a new file: what `open()` gives under the current umask, never world-writable."""
    return 0o666 & ~current_umask() & ~0o002


def _atomic_replace(path: Path, write: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):  # POSIX (Windows before Python 3.13 has none, nor modes to fix)
                os.fchmod(f.fileno(), file_mode())  # mkstemp made it 0600
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic_replace(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_torch_save(obj: Any, path: Path) -> None:
    _atomic_replace(path, lambda f: torch.save(obj, f))


def check_writable(folder: Path, what: str, option: str) -> None:
    """A one-line UserError about `what` (e.g. "results dir X"), naming `option`, the way to pick another
    folder, unless this process can create files in `folder` (created if missing): a read-only or full disk is
    found before a run trains, not as an OSError traceback at its first write."""
    from .errors import UserError

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe.", suffix=".tmp")
        try:
            os.write(fd, bytes(4096))  # a block: an empty file is created on a full disk too
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise UserError(f"cannot write to {what}: {e.strerror or e} ({e.filename or folder}); pass {option} DIR, "
                        "a folder you can write") from None


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
