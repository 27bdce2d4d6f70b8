"""A results folder this process cannot write (read-only, full) is one actionable line before anything trains:
exit 2, "cannot write to results dir X: <why>; pass --results-dir DIR", no traceback. Before issue #29 the run
loaded its data, then died on an OSError traceback at its first write.

Folders: a real read-only and a real full tmpfs where this process may mount (root), and a chmod-ed folder where
it is not root (root writes through permissions): each skips, with its reason, where it cannot apply."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "kdbench"]
RUN = ["run", "--method", "ce", "--student", "cifar_resnet8", "--set", "data.image_size=8", "--epochs", "1",
       "--device", "cpu"]


def _mount_tmpfs(point: Path, options: str) -> None:
    point.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], check=True,
                       capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"cannot mount a tmpfs here ({e}): needs root or CAP_SYS_ADMIN")


@pytest.fixture(params=["read-only tmpfs", "full tmpfs", "read-only folder (chmod)"])
def unwritable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    point = tmp_path / "results"
    if request.param == "read-only folder (chmod)":
        if os.geteuid() == 0:
            pytest.skip("root writes through a folder's permissions")
        point.mkdir()
        point.chmod(0o555)
        yield point, "Permission denied"
        point.chmod(0o755)
        return
    read_only = request.param == "read-only tmpfs"
    _mount_tmpfs(point, "size=64k,ro" if read_only else "size=64k")
    try:
        if not read_only:
            (point / "runs").mkdir()  # the folder exists; the disk under it is full
            with open(point / "filler", "wb", buffering=0) as f:
                try:
                    while True:
                        f.write(b"\0" * 4096)
                except OSError as e:
                    assert e.errno == errno.ENOSPC
        yield point, "Read-only file system" if read_only else "No space left on device"
    finally:
        subprocess.run(["umount", str(point)], check=False)


@pytest.mark.parametrize("nproc", ["1", "2"])
def test_an_unwritable_results_dir_is_one_line_and_exit_2_before_training(unwritable, nproc, tmp_path):
    results, why = unwritable
    proc = subprocess.run([*CLI, *RUN, "--nproc", nproc, "--results-dir", str(results), "--zoo-dir",
                           str(tmp_path / "zoo")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: cannot write to results dir {results}: {why}")
    assert "pass --results-dir DIR" in lines[0]
    assert "epoch" not in proc.stderr and not (tmp_path / "zoo").exists()  # nothing trained
