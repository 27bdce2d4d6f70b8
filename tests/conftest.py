"""Shared fixtures: isolated results/zoo/data folders per test, so tests never touch ~/.cache or ./results."""

from __future__ import annotations

from pathlib import Path

import pytest


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


# Tiny settings that exercise the whole path in seconds: 2 epochs, 8 px digits, a small timm CNN.
TINY = {"epochs": 1, "teacher_epochs": 1, "sets": ["data.image_size=8"]}
