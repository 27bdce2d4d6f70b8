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
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

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


# A writer's temp file: `.<name>.<random>.tmp` beside its target, locked (flock) by the writer from creation to
# rename. A writer killed mid-write (SIGKILL, OOM, a node lost) leaves it behind: the next write into the folder
# removes such files once nobody holds their lock and they are STALE_TMP_AGE_S old (the age covers the instant
# between a writer creating its file and locking it, and filesystems where locks are advisory at best).
TMP_SUFFIX = ".tmp"
STALE_TMP_AGE_S = 60.0


def _lock_exclusive(fd: int, *, wait: bool) -> bool:
    """Lock the open file `fd` (released when every descriptor of it is closed, e.g. by the writer's death).
    Whether the lock was taken; True where the OS has no flock (Windows: the age alone decides)."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


def remove_stale_temps(folder: Path, min_age_s: float = STALE_TMP_AGE_S) -> int:
    """Remove the temp files of killed writers in `folder` (see TMP_SUFFIX): only those no live writer holds
    locked and not modified for `min_age_s` (a day where the OS has no file locks). The number removed."""
    if fcntl is None:
        min_age_s = max(min_age_s, 86400.0)
    removed = 0
    now = time.time()
    try:
        candidates = [e for e in os.scandir(folder) if e.name.startswith(".") and e.name.endswith(TMP_SUFFIX)]
    except OSError:
        return 0
    for entry in candidates:
        try:
            if not entry.is_file(follow_symlinks=False) or now - entry.stat().st_mtime < min_age_s:
                continue
            fd = os.open(entry.path, os.O_RDONLY)
        except OSError:  # gone meanwhile (renamed by its writer), or not ours to open
            continue
        try:
            # Locked: its writer is alive. Taken: it died; the name must still be that file (not renamed away).
            if _lock_exclusive(fd, wait=False) and os.stat(entry.path).st_ino == os.fstat(fd).st_ino:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A locked temp path beside `path` to write; renamed onto `path` when the block ends without an error,
    removed when it raises. For writers that take a path (safetensors' save_file); the mode is open()'s under
    the umask, never world-writable."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    if fcntl is None:  # no lock to hold (Windows), and an open file cannot be renamed there
        os.close(fd)
        fd = -1
    try:
        _lock_exclusive(fd, wait=True)  # held until the rename: a sweeper never takes a live writer's file
        yield Path(tmp)
        if os.name == "posix":
            os.chmod(tmp, file_mode())  # mkstemp made it 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        if fd >= 0:
            os.close(fd)


def _atomic_replace(path: Path, write: Any) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


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
    from kdbench.core.errors import UserError

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(folder)  # a probe of a process killed right here
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe.", suffix=TMP_SUFFIX)
        try:
            os.write(fd, bytes(4096))  # a block: an empty file is created on a full disk too
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise UserError(f"cannot write to {what}: {e.strerror or e} ({e.filename or folder}); pass {option} DIR, "
                        "a folder you can write") from None


class UnsafeFile(OSError):
    """A file kdbench will not read: not a regular file (a device, a FIFO: /dev/zero never ends, a FIFO never
    answers), larger than its header or card declares, or reached through a symlink out of kdbench's folder."""


def inside(root: Path, path: Path) -> bool:
    """Whether `path`, every symlink resolved, lies in `root` (resolved too). A colleague's shared folder may
    hold a symlink to anywhere: kdbench reads and writes only what really lies in its own folders."""
    try:
        return Path(path).resolve().is_relative_to(Path(root).resolve())
    except (OSError, RuntimeError):  # a symlink loop
        return False


def _open_regular(path: Path, max_bytes: int | None) -> tuple[Any, int]:
    """`path` opened for reading with its size, refused (UnsafeFile) unless it is a regular file of at most
    `max_bytes`. The size is read from the open file, so a file swapped after the check is still bounded."""
    # O_NONBLOCK: a plain open() of a FIFO waits for a writer that may never come, before any check could run.
    # It changes nothing for a regular file, and the flag is cleared before the bytes are read.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    f = os.fdopen(fd, "rb")
    try:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(f"not a regular file: {path}")
        if max_bytes is not None and st.st_size > max_bytes:
            raise UnsafeFile(f"{path} holds {st.st_size} bytes, more than the {max_bytes} declared")
    except BaseException:
        f.close()
        raise
    return f, st.st_size


def read_regular_bytes(path: Path, max_bytes: int | None = None) -> bytes:
    """The bytes of the regular file `path`, never more than its size when opened (nor `max_bytes`):
    a device or FIFO raises UnsafeFile instead of hanging or filling memory."""
    f, size = _open_regular(path, max_bytes)
    with f:
        return f.read(size)


def sha256_file(path: Path, chunk: int = 1 << 20, *, max_bytes: int | None = None) -> str:
    """The sha256 of the regular file `path`, reading no more than its size when opened (UnsafeFile for a
    device, a FIFO or a file over `max_bytes`: a symlink to /dev/zero would otherwise be read forever)."""
    h = hashlib.sha256()
    f, left = _open_regular(path, max_bytes)
    with f:
        while left > 0 and (block := f.read(min(chunk, left))):
            h.update(block)
            left -= len(block)
    return h.hexdigest()
