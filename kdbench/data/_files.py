"""Dataset files on disk: presence checks, one bounded download attempt, and one-line errors naming the files.

Missing and unreadable are told apart: a missing file is downloaded (or named, with the URL, when that fails);
a file that is there but fails its md5 check or its reader is named as unreadable, with the format expected and
what to do.

Presence is checked first (no network when the files are there). A download is tried only for missing files,
never when KDBENCH_OFFLINE is set, and with a socket timeout so that a cluster node without internet fails in
seconds instead of hanging; any failure becomes a UserError that says which files are expected where.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from torchvision.datasets.utils import check_integrity

from kdbench.core.errors import UserError

T = TypeVar("T")

# Per socket operation (connect, each read), not for the whole transfer: a slow but live download still finishes.
DOWNLOAD_TIMEOUT_S = 15.0


def offline() -> bool:
    return os.environ.get("KDBENCH_OFFLINE", "").lower() not in ("", "0", "false", "no")


def missing_files(folder: Path, names: Iterable[str]) -> list[str]:
    return [n for n in names if not (folder / n).is_file()]


def expected_files(folder: Path, names: Iterable[str]) -> str:
    """`/data/cifar-100-python/{train,test,meta}`: the files a dataset needs, as a person would type them."""
    return f"{folder}/{{{','.join(names)}}}"


def corrupted_files(folder: Path, files_md5: Iterable[tuple[str, str]]) -> list[str]:
    return [name for name, md5 in files_md5 if not check_integrity(str(folder / name), md5)]


def try_download(
    dataset: str, expected: str, url: str, root: Path, download: Callable[[], object], missing: Iterable[str] = ()
) -> None:
    """Run `download` (torchvision's downloader) with a socket timeout; every failure is one actionable line."""
    absent = f"missing {', '.join(missing)}; " if missing else ""
    hint = f"{dataset}: {absent}expected {expected} (download {url} and extract it in {root})"
    if offline():
        raise UserError(f"{hint}; KDBENCH_OFFLINE is set, so no download was tried")
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        download()
    except Exception as e:  # noqa: BLE001 — any failure (DNS, timeout, HTTP, bad archive) gets the same advice
        reason = " ".join(f"{type(e).__name__}: {e}".split())
        raise UserError(f"{hint}; the automatic download failed ({reason})") from None
    finally:
        socket.setdefaulttimeout(previous)


def open_verified(
    dataset: str,
    root: Path,
    folder: Path,
    files_md5: list[tuple[str, str]],
    url: str,
    construct: Callable[[], T],
    download: Callable[[], object],
    file_format: str = "the files of the official archive",
    read_file: Callable[[Path], object] | None = None,
) -> T:
    """`construct()` a torchvision dataset whose reader checks `files_md5` itself: missing files are downloaded
    once (bounded, see :func:`try_download`); a failed md5 check names the bad files instead of torchvision's
    "Dataset not found or corrupted"; a reader failure on files that passed it (only possible with patched
    checksums) names the file `read_file` cannot read. Both say `file_format`, the format expected."""
    names = [name for name, _ in files_md5]
    absent = missing_files(folder, names)
    if absent:
        try_download(dataset, expected_files(folder, names), url, root, download, missing=absent)
    advice = f"delete {folder} and run again to download it afresh, or extract {url} in {root}"
    try:
        return construct()
    except RuntimeError:
        bad = corrupted_files(folder, files_md5)
        if not bad:
            raise
        listed = ", ".join(str(folder / name) for name in bad)
        raise UserError(
            f"{dataset}: {listed} failed the md5 check: the file is there but unreadable (a corrupted or partial "
            f"copy; expected {file_format}); {advice}"
        ) from None
    except Exception as e:  # noqa: BLE001 — the reader choked on a file: say which one, and what it should be
        culprit = next((folder / n for n in names if read_file and _unreadable(read_file, folder / n)), None)
        what = str(culprit) if culprit else expected_files(folder, names)
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:160]
        raise UserError(f"{dataset}: {what} is unreadable ({reason}); expected {file_format}; {advice}") from None


def _unreadable(read_file: Callable[[Path], object], path: Path) -> bool:
    try:
        read_file(path)
    except Exception:  # noqa: BLE001 — any failure means this is the file the reader cannot read
        return True
    return False
