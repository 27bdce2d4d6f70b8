"""The teacher-output cache folder as a whole: its entries, least-recently-used eviction, `kdbench cache list|clear`.

A shared cache folder may hold a colleague's symlinks to anywhere (issue #34): kdbench counts, evicts and clears
only what really lies in it. A namespace folder or an entry that is a symlink is never listed, never followed by
eviction, and `clear` removes the link itself, never the files it points to.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any

from kdbench.teachers.cache_entry import SUFFIX, read_cache_file

_MAX_KEY_BYTES = 1 << 16  # a namespace's key.json: a few hundred bytes of JSON


def namespaces(root: Path) -> list[Path]:
    """The namespace folders really in `root`: folders, not symlinks (to a folder anywhere)."""
    try:
        children = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return []
    return [Path(e.path) for e in children if e.is_dir(follow_symlinks=False)]


def _own_entries(ns: Path) -> list[tuple[Path, os.stat_result]]:
    """The regular entry files of one namespace folder with their stat, symlinks and devices left out."""
    out = []
    try:
        children = list(os.scandir(ns))
    except OSError:
        return out
    for e in children:
        if not e.name.endswith(SUFFIX):
            continue
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:  # removed by another process meanwhile
            continue
        if stat.S_ISREG(st.st_mode):
            out.append((Path(e.path), st))
    return out


def entries(root: Path) -> list[Path]:
    """Every entry file that really lies in `root`."""
    return sorted(path for ns in namespaces(root) for path, _ in _own_entries(ns))


def evict(root: Path, cap: int, keep: set[Path] = frozenset()) -> int:
    """Remove least-recently-used entries (oldest modification time first) until the cache holds ≤ `cap`
    bytes, never removing those in `keep` (the entries just written). The number removed."""
    files = [(st.st_mtime, st.st_size, path) for ns in namespaces(root) for path, st in _own_entries(ns)]
    total = sum(size for _, size, _ in files)
    removed = 0
    for _, size, path in sorted(files):
        if total <= cap:
            break
        if path in keep:
            continue
        path.unlink(missing_ok=True)
        total -= size
        removed += 1
    return removed


def _key(ns: Path) -> dict[str, Any]:
    try:
        key = json.loads(read_cache_file(ns.parent, ns / "key.json", _MAX_KEY_BYTES))
    except (OSError, ValueError):  # BadEntry is a ValueError: a key that is not the cache's own is not shown
        return {}
    return key if isinstance(key, dict) else {}


def list_namespaces(root: Path) -> list[dict[str, Any]]:
    """One row per namespace: its key, entries, bytes and last use."""
    rows = []
    for ns in namespaces(root):
        files = _own_entries(ns)
        try:
            last = max((st.st_mtime for _, st in files), default=ns.stat().st_mtime)
        except OSError:  # removed meanwhile
            continue
        rows.append({"namespace": ns.name, "key": _key(ns), "entries": len(files),
                     "bytes": sum(st.st_size for _, st in files),
                     "last_used": time.strftime("%Y-%m-%d %H:%M", time.localtime(last))})
    return rows


def clear(root: Path) -> int:
    """Remove every namespace under `root` (a symlink among them: the link, never what it points to); the number
    of entries removed."""
    n = len(entries(root))
    try:
        children = list(os.scandir(root))
    except OSError:
        return 0
    for e in children:
        if e.is_symlink():
            Path(e.path).unlink(missing_ok=True)
        elif e.is_dir(follow_symlinks=False):
            shutil.rmtree(e.path, ignore_errors=True)  # removes the links inside as links
    return n
