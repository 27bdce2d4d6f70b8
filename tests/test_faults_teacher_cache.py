"""The teacher-output cache is optional, and says what it does about trouble (issue #29):
- damaged entries are recomputed, and the run says so once (before, silently);
- a disk that refuses the cache's writes (full, read-only, not a folder) is said once, and the run goes on without
  storing to it, with the numbers of a run without the cache (before, the run failed).

Disks: "not a folder" (the cache dir under a regular file) and "full" by ENOSPC raised at the storage boundary
(kdbench.core.storage's atomic write, the one call the cache writes its entries through) run everywhere: a real full
disk cannot be made portably. Where this process may mount (root), a real read-only and a real full tmpfs are
tested too, else those two skip."""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kdbench.core.progress import Reporter
from kdbench.execute.api import run
from kdbench.teachers import cache_entry
from kdbench.teachers import output_cache as teacher_cache

TINY = dict(dataset="digits", student="cifar_resnet8", epochs=2, teacher_epochs=1, device="cpu",
            sets=["data.image_size=8"], infer_batch_size=8)


class Collect(Reporter):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


def _kd(dirs: dict[str, Path], cache: Path, results: str, mode: str = "on", **kw) -> dict:
    return run("kd", "cifar_resnet8", **TINY, results_dir=dirs["results"] / results, zoo_dir=dirs["zoo"],
               teacher_cache=mode, cache_dir=cache, **kw)


def _numbers(record: dict) -> tuple:
    return record["metrics"]["top1_last"], record["metrics"]["top1_best"], record["metrics"]["top5_last"]


def test_damaged_entries_are_recomputed_and_said_once(dirs, tmp_path):
    cache = tmp_path / "cache"
    first = _kd(dirs, cache, "a")
    damaged = sorted(cache.glob(f"*/*-logits{cache_entry.SUFFIX}"))
    assert len(damaged) == 2  # logits of epochs 1 and 2
    for entry in damaged:
        entry.write_bytes(entry.read_bytes()[:100])  # truncated, as by a full disk or a killed copy
    log = Collect()
    second = _kd(dirs, cache, "b", reporter=log)
    said = [line for line in log.lines if "is damaged" in line]
    assert len(said) == 1 and "recomputing" in said[0] and str(damaged[0]) in said[0]
    assert second["teacher_cache"]["corrupt_entries_recomputed"] == 2
    assert _numbers(second) == _numbers(first)


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", str(args[0]))


def _unwritable_cache(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    if kind == "not a folder":
        (tmp_path / "a-file").write_text("")
        return tmp_path / "a-file" / "cache"
    if kind == "full (ENOSPC)":
        monkeypatch.setattr(teacher_cache, "atomic_write_bytes", _enospc)
        return tmp_path / "cache"
    return _mounted(kind, tmp_path)


_MOUNTS: list[Path] = []


def _mounted(kind: str, tmp_path: Path) -> Path:
    point = tmp_path / "mnt"
    point.mkdir()
    options = "size=64k,ro" if kind == "read-only tmpfs" else "size=64k"
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], check=True,
                       capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"cannot mount a tmpfs here ({e}): needs root or CAP_SYS_ADMIN")
    _MOUNTS.append(point)
    if kind == "full tmpfs":
        with open(point / "filler", "wb", buffering=0) as f:  # fill it to the last byte
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError as e:
                assert e.errno == errno.ENOSPC
    return point / "cache"


@pytest.fixture(autouse=True)
def _unmount() -> Iterator[None]:
    yield
    while _MOUNTS:
        subprocess.run(["umount", str(_MOUNTS.pop())], check=False)


@pytest.mark.parametrize("kind", ["not a folder", "full (ENOSPC)", "read-only tmpfs", "full tmpfs"])
def test_a_cache_disk_that_refuses_writes_is_said_once_and_the_run_goes_on(kind, dirs, tmp_path, monkeypatch):
    cache = _unwritable_cache(kind, tmp_path, monkeypatch)
    log = Collect()
    record = _kd(dirs, cache, "refused", reporter=log)
    off = _kd(dirs, tmp_path / "unused", "off", mode="off")
    assert record["status"] == "completed" and _numbers(record) == _numbers(off)
    said = [line for line in log.lines if "cannot be written" in line]
    assert len(said) == 1 and "going on without" in said[0], log.lines
    tc = record["teacher_cache"]
    assert tc["mode"] == "on" and tc["unwritable"] and tc["bytes_written"] == 0
    assert not list(tmp_path.rglob("*.tmp"))  # no half-written entry left behind
