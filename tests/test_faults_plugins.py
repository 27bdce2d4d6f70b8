"""A plugin in the `kdbench.methods` entry-point group that fails to import (a missing dependency, a syntax error,
an exception at import) is one warning line naming its entry point and error, and everything else works:
`kdbench methods`, `kdbench run --method ce`, `kdbench leaderboard`. Asking for it (`--method bad_syntax`) is one
line naming the entry point and its error, exit 2. Before issue #34 one broken package broke every command.

The plugins are real installed entry points: tests/fixture_site/broken_plugins holds a `.dist-info` folder (what
pip installs) whose entry_points.txt names three modules beside it; the test puts that folder on sys.path. The
methods registry loads its plugins once per process, so each test lets it load again, as a new process would.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdbench.train.method import METHODS

BROKEN = Path(__file__).resolve().parent / "fixture_site" / "broken_plugins"
ENTRY_POINTS = {  # entry point -> what its import error says
    "needs_missing": "ModuleNotFoundError: No module named 'a_module_nobody_installed'",
    "bad_syntax": "SyntaxError: expected ':'",
    "raises_at_import": "RuntimeError: this plugin needs a GPU driver 999",
}
RUN_CE = ("run", "--method", "ce", "--student", "cifar_resnet8", "--epochs", "1", "--set", "data.image_size=8",
          "--device", "cpu", "--json")


def _install_broken_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """The broken package on sys.path, and the registry as a fresh process has it: not loaded yet."""
    monkeypatch.syspath_prepend(str(BROKEN))
    monkeypatch.setattr(METHODS, "_loaded", False)
    monkeypatch.setattr(METHODS, "_unavailable", {}, raising=False)
    monkeypatch.setattr(METHODS, "_unwarned", [], raising=False)


@pytest.fixture
def broken_plugins_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    _install_broken_plugins(monkeypatch)


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning:")]


def _one_warning_per_broken_entry_point(stderr: str) -> None:
    warned = _warnings(stderr)
    assert len(warned) == len(ENTRY_POINTS), stderr
    for name, error in ENTRY_POINTS.items():
        [line] = [w for w in warned if f"'{name} = " in w]
        assert error in line and "kdbench-broken-plugins" in line and "unavailable" in line
    assert "Traceback" not in stderr


@pytest.mark.usefixtures("broken_plugins_installed")
def test_kdbench_methods_lists_the_builtins_and_warns_once_per_broken_plugin(in_process) -> None:
    result = in_process("methods")
    assert result.returncode == 0, result.stderr
    assert "kd" in result.stdout and "crd" in result.stdout
    _one_warning_per_broken_entry_point(result.stderr)


@pytest.mark.usefixtures("broken_plugins_installed")
def test_a_ce_run_and_the_leaderboard_work_beside_a_broken_plugin(in_process, dirs) -> None:
    run = in_process(*RUN_CE)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["status"] == "completed"
    _one_warning_per_broken_entry_point(run.stderr)

    board = in_process("leaderboard", "--results-dir", str(dirs["results"]))
    assert board.returncode == 0, board.stderr
    assert "cifar_resnet8" in board.stdout
    assert not _warnings(board.stderr)  # the same process: said once, by the run


def test_the_leaderboard_of_runs_made_before_the_plugin_broke_warns_once(in_process, dirs, monkeypatch) -> None:
    assert in_process(*RUN_CE).returncode == 0
    _install_broken_plugins(monkeypatch)
    board = in_process("leaderboard", "--results-dir", str(dirs["results"]))
    assert board.returncode == 0, board.stderr
    assert "cifar_resnet8" in board.stdout
    _one_warning_per_broken_entry_point(board.stderr)


@pytest.mark.usefixtures("broken_plugins_installed")
@pytest.mark.parametrize("name", list(ENTRY_POINTS))
def test_asking_for_a_broken_plugin_is_one_line_naming_it_and_its_error(in_process, dirs, name: str) -> None:
    result = in_process("run", "--method", name, "--epochs", "1")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: method '{name}' is unavailable: plugin entry point '{name} = ")
    assert ENTRY_POINTS[name] in line
    assert not list(dirs["results"].iterdir())  # refused before anything was written
