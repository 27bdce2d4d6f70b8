"""A disk that fills up mid-run: one line saying what to do (exit 2, no traceback), a whole `failed` record, no
temp file left, and the same command completes the run once there is space. On a real full filesystem (a small
tmpfs), so root only."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")


@pytest.fixture
def small_disk(tmp_path: Path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192k", "tmpfs", str(disk)]).returncode != 0:
        pytest.skip("this machine cannot mount a tmpfs")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_mid_run_is_one_line_and_the_rerun_completes(small_disk: Path, dirs, in_process) -> None:
    results = small_disk / "results"
    run = ("run", "--method", "ce", "--student", "cifar_resnet8", "--epochs", "1", "--set", "data.image_size=8",
           "--results-dir", str(results), "--json")
    full = in_process(*run)
    assert full.returncode == 2 and "Traceback" not in full.stderr
    error = [line for line in full.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "No space left on device" in error[0] and "run the same command again" in error[0]
    [record_file] = results.glob("runs/*/result.json")
    record = json.loads(record_file.read_text())  # whole: written atomically, or not at all
    assert record["status"] == "failed" and "No space left on device" in record["error"]
    assert not [p for p in results.rglob("*") if p.name.endswith(".tmp")]

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    done = in_process(*run)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "completed"
    assert json.loads(record_file.read_text())["status"] == "completed"
