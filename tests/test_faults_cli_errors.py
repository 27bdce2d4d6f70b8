"""The CLI prints an error's text literally: text from elsewhere (a path, a name the user typed, a gloo error
like `[/__w/.../pair.cc:561] Connection closed`) is never read as rich markup. Before issue #29 such a message
lost its brackets, or crashed the error printer itself (MarkupError, exit 1 with a traceback)."""

from __future__ import annotations

import sys

import pytest

from kdbench.cli.app import main


@pytest.mark.parametrize("name", ["[bold]kd[/] [1, 2]", "[/__w/gloo/pair.cc:561] closed"])
def test_an_error_message_with_brackets_prints_literally_on_one_line(name, monkeypatch, capsys):
    # The CLI's entry point in process (`python -m kdbench` is main(); a subprocess spent ~5 s importing): a
    # crash of the error printer would escape as its own exception, not SystemExit(2).
    monkeypatch.setattr(sys, "argv", ["kdbench", "run", "--method", name])
    with pytest.raises(SystemExit) as done:
        main()
    stderr = capsys.readouterr().err
    assert done.value.code == 2, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown method")
    assert f"'{name}'" in lines[0]


def test_a_path_with_brackets_prints_literally_in_an_ordinary_line(tmp_path, in_process):
    # Not only errors: every line that carries a path or a label prints it as it is (`[bold]` here is a folder
    # name, not markup).
    folder = tmp_path / "[bold]cache"
    folder.mkdir()
    done = in_process("cache", "clear", "--cache-dir", str(folder))
    assert done.returncode == 0, done.stderr
    # rich may wrap a long line anywhere (mid-word, as a terminal would): compare without whitespace
    assert f"removed0entriesfrom{folder}" in "".join(done.stderr.split())
