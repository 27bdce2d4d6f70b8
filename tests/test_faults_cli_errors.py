"""The CLI prints an error's text literally: text from elsewhere (a path, a name the user typed, a gloo error
like `[/__w/.../pair.cc:561] Connection closed`) is never read as rich markup. Before issue #29 such a message
lost its brackets, or crashed the error printer itself (MarkupError, exit 1 with a traceback)."""

from __future__ import annotations

import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "kdbench"]


@pytest.mark.parametrize("name", ["[bold]kd[/] [1, 2]", "[/__w/gloo/pair.cc:561] closed"])
def test_an_error_message_with_brackets_prints_literally_on_one_line(name):
    proc = subprocess.run([*CLI, "run", "--method", name], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown method")
    assert f"'{name}'" in lines[0]
