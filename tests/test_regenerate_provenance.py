"""results/regenerate.sh names the code its records ran (issue #38, part 6): it refuses a tree with uncommitted
changes (records name their commit, environment.git.sha), unless ALLOW_DIRTY=1, which records the diff's sha256;
and it gives every process it starts one torch thread (the ladder's in-process runs too), as the README says."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _repo(tmp_path: Path) -> Path:
    """A git repository holding this checkout's results/regenerate.sh and one tracked source file, committed."""
    repo = tmp_path / "repo"
    (repo / "results").mkdir(parents=True)
    shutil.copy(ROOT / "results" / "regenerate.sh", repo / "results" / "regenerate.sh")
    (repo / "code.py").write_text("x = 1\n")
    (repo / "results" / "leaderboard.md").write_text("a table\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    return repo


def _regenerate(repo: Path, **env: str) -> subprocess.CompletedProcess[str]:
    # No kdbench on PATH: a run that gets past the check stops at its first command (127), before any work.
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "kdbench").exists())
    return subprocess.run(["bash", str(repo / "results" / "regenerate.sh")], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PATH": path, **env})


def test_a_dirty_tree_is_refused_unless_allowed_and_then_its_diff_is_named(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    clean = _regenerate(repo)
    assert clean.returncode == 127 and "uncommitted" not in clean.stderr  # past the check
    # The script's own outputs (tables, records) do not make the tree dirty: a resumed regeneration goes on.
    (repo / "results" / "leaderboard.md").write_text("a regenerated table\n")
    assert _regenerate(repo).returncode == 127
    (repo / "code.py").write_text("x = 2\n")
    refused = _regenerate(repo)
    assert refused.returncode == 2 and "uncommitted changes" in refused.stderr and "ALLOW_DIRTY=1" in refused.stderr
    allowed = _regenerate(repo, ALLOW_DIRTY="1")
    diff = subprocess.run(["git", "-C", str(repo), "diff", "HEAD"], capture_output=True, check=True).stdout
    assert allowed.returncode == 127 and f"diff sha256 {hashlib.sha256(diff).hexdigest()}" in allowed.stderr


def test_every_process_gets_the_threads_the_readme_states() -> None:
    script = (ROOT / "results" / "regenerate.sh").read_text()
    assert 'CPUS="${CPUS:-1}"' in script
    exported = script.index('export OMP_NUM_THREADS="$CPUS" MKL_NUM_THREADS="$CPUS"')
    assert exported < script.index("\nkdbench sweep") and exported < script.index("\nkdbench ladder")


def test_a_record_from_a_dirty_tree_names_its_diff() -> None:
    """environment.git: with uncommitted changes, diff_sha256 is `git diff HEAD | sha256sum` of this checkout."""
    from kdbench.core.environment import git_info

    git_info.cache_clear()
    info = git_info()
    if info["sha"] is None:
        return  # not a git checkout (an installed wheel): nothing to name
    diff = subprocess.run(["git", "-C", str(ROOT), "diff", "HEAD"], capture_output=True, check=True).stdout
    if info["dirty"]:
        assert info["diff_sha256"] == hashlib.sha256(diff).hexdigest()
    else:
        assert "diff_sha256" not in info
