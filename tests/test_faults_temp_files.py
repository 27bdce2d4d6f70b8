"""Temp files of atomic writes never pile up (issue #29: 45 MB of `.tmp` files in a zoo, never cleaned):
- a write that fails removes its temp file (the zoo's weights went through a temp file no one removed);
- a writer killed mid-write leaves one, which the next write into that folder removes once no live writer
  holds its lock and it is STALE_TMP_AGE_S old; a live writer's temp file is never taken, however old.

The killed writer is a real process (SIGKILL mid-write); "old" is its file's modification time set back, the
only stand-in for waiting a minute."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from kdbench.core import storage

# A writer that stops mid-write: it writes part of a file through storage's atomic write, says so, then sleeps.
_SLOW_WRITER = """
import sys, time
from kdbench.core import storage
def write(f):
    f.write(b"half of a checkpoint")
    f.flush()
    print("writing", flush=True)
    time.sleep(600)
storage._atomic_replace(sys.argv[1], write)
"""


def _temps(folder: Path) -> list[Path]:
    return sorted(folder.glob(f".*{storage.TMP_SUFFIX}"))


def _age(paths: list[Path], seconds: float) -> None:
    then = time.time() - seconds
    for p in paths:
        os.utime(p, (then, then))


def test_a_killed_writers_temp_file_is_removed_by_the_next_write_a_live_ones_never(tmp_path):
    target = tmp_path / "checkpoint.pt"
    writer = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        (left,) = _temps(tmp_path)
        _age([left], 3600)  # an hour without a byte: still its writer's while it lives (it holds the lock)
        storage.atomic_write_json(tmp_path / "result.json", {"status": "running"})
        assert left.exists()
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=60)
    assert left.exists() and not target.exists()  # what a killed writer leaves
    _age([left], 0)
    storage.atomic_write_json(tmp_path / "result.json", {"status": "running"})
    assert left.exists(), "a temp file younger than STALE_TMP_AGE_S is kept (its writer may have just made it)"
    _age([left], storage.STALE_TMP_AGE_S + 1)
    storage.atomic_write_json(tmp_path / "result.json", {"status": "completed"})
    assert _temps(tmp_path) == [] and (tmp_path / "result.json").exists()


def test_a_failed_write_leaves_no_temp_file(tmp_path):
    def full_disk(f):
        f.write(b"part")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        storage._atomic_replace(tmp_path / "record.json", full_disk)
    weights = {"w": torch.zeros(4)}
    with pytest.raises(OSError), storage.atomic_path(tmp_path / "model.safetensors") as tmp:
        save_file(weights, str(tmp))
        raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_a_zoo_entry_keeps_no_temp_file_of_a_process_killed_training_it(tmp_path):
    from kdbench.execute.create_teacher import create_teacher
    from kdbench.execute.resolve import resolve_teacher
    from kdbench.teachers.zoo import TeacherZoo

    tiny = {"epochs": 1, "sets": ["data.image_size=8"], "device": "cpu"}
    entry = TeacherZoo(tmp_path).entry_dir(resolve_teacher("cifar_resnet8", "digits", epochs=1, sets=tiny["sets"]))
    # What a process killed while saving the teacher's weights, or its checkpoint, left behind a minute ago.
    (entry / "work").mkdir(parents=True)
    left = [entry / f".model.safetensors.dead{storage.TMP_SUFFIX}",
            entry / "work" / f".checkpoint.pt.dead{storage.TMP_SUFFIX}"]
    for p in left:
        p.write_bytes(b"\0" * 1024)
    _age(left, storage.STALE_TMP_AGE_S + 1)
    # One a second ago: in the work folder only a process training this entry writes, under the entry's lock,
    # so the process that trains it now removes it whatever its age.
    (entry / "work" / f".checkpoint.pt.just-killed{storage.TMP_SUFFIX}").write_bytes(b"\0")
    _, card = create_teacher("cifar_resnet8", zoo_dir=tmp_path, **tiny)
    assert Path(card["path"]) == entry and (entry / "model.safetensors").exists()
    assert list(tmp_path.rglob(f"*{storage.TMP_SUFFIX}")) == []
