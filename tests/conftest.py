"""Shared fixtures: isolated results/zoo/data folders per test, so tests never touch ~/.cache or ./results."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NamedTuple

# One torch thread per test process (and per CLI subprocess, through the environment): the tiny tensors of the
# test suite gain nothing from a second thread, and on a shared 2-core machine (or beside SLURM jobs) two threads
# per process oversubscribe the cores and run 10-20x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _teacher_cache_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The teacher-output cache of every test (and CLI subprocess) is a session temp folder, never ~/.cache."""
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "teacher-cache"))


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Fresh results, zoo and data folders, also exported as KDBENCH_* for code that reads the defaults."""
    d = {name: tmp_path / name for name in ("results", "zoo", "data")}
    for path in d.values():
        path.mkdir()
    monkeypatch.setenv("KDBENCH_RESULTS", str(d["results"]))
    monkeypatch.setenv("KDBENCH_ZOO", str(d["zoo"]))
    monkeypatch.setenv("KDBENCH_DATA", str(d["data"]))
    return d


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (the default in pyproject) starts one worker per core plus one: the SLURM group's worker spends
    most of its time waiting on SLURM (time limits of a minute at least, requeues) while the jobs run in slurmd, so
    one worker per core left a core idle for minutes (measured on the 2-core CI machine: 668 s with 2 workers, 603 s
    with 3 and one SLURM group)."""
    return (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1) + 1


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`-n auto --dist loadgroup`, the default in pyproject), every SLURM test runs on one
    worker: they share the single-node cluster, whose few CPU slots two workers' jobs would contend for (and time
    out on). They are collected first, so that worker starts on them at once while the others take the rest;
    collected last, they were the suite's tail (~10 minutes on one worker). (Splitting the two tests that wait out
    SLURM's time limit into a group of their own gained nothing: 603 s either way with 3 workers, the preemption
    tests' jobs slower by the contention.)"""
    for item in items:
        if item.get_closest_marker("slurm") is not None:
            item.add_marker(pytest.mark.xdist_group("slurm"))
    items.sort(key=lambda item: item.get_closest_marker("slurm") is None)  # stable: file order otherwise kept


class CliResult(NamedTuple):
    """What `kdbench ARGS` did, named as subprocess.CompletedProcess names it."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """`kdbench ARGS` through the CLI's entry point in this process (`python -m kdbench` is the same main(); the
    end-to-end tests run it as a subprocess): a CliResult. A subprocess per command spent ~5 s importing."""
    from kdbench.cli.app import main

    def invoke(*args: str) -> CliResult:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["kdbench", *args])
        code = 0
        try:
            main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out = capsys.readouterr()
        return CliResult(code, out.out, out.err)

    return invoke
