"""The repository stands alone: no tracked file sends a reader to notes that only exist outside it."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Built from parts so that this file does not match itself.
OUTSIDE = ("../" + "shared", "/work/" + "shared")


def test_no_tracked_file_refers_to_notes_outside_the_repository():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert files, "git ls-files listed nothing"
    offenders = []
    for name in files:
        path = ROOT / name
        if not path.is_file():
            continue
        text = path.read_bytes().decode("utf-8", errors="ignore")
        offenders += [f"{name}: {ref}" for ref in OUTSIDE if ref in text]
    assert not offenders, f"tracked files refer to paths outside the repository: {offenders}"


def test_the_docs_the_readme_and_the_cli_point_to_exist():
    for doc in ("docs/methods.md", "docs/cnn2gnn.md"):
        assert (ROOT / doc).is_file()
        assert doc in (ROOT / "README.md").read_text()
