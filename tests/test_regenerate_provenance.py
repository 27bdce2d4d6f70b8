"""results/regenerate.sh names the code its records ran (issue #38, part 6): it refuses a tree with uncommitted
changes (records name their commit, environment.git.sha), unless ALLOW_DIRTY=1, which records the diff's sha256;
and it gives every process it starts one torch thread (the ladder's in-process runs too), as the README says."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from kdbench.core.environment import OUTPUT_PATHSPECS, checkout_info

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
    diff = subprocess.run(["git", "-C", str(repo), "diff", "HEAD", "--", ".", *OUTPUT_PATHSPECS], capture_output=True,
                          check=True).stdout
    assert allowed.returncode == 127 and f"diff sha256 {hashlib.sha256(diff).hexdigest()}" in allowed.stderr


def test_every_process_gets_the_threads_the_readme_states() -> None:
    script = (ROOT / "results" / "regenerate.sh").read_text()
    assert 'CPUS="${CPUS:-1}"' in script
    exported = script.index('export OMP_NUM_THREADS="$CPUS" MKL_NUM_THREADS="$CPUS"')
    assert exported < script.index("\nkdbench sweep") and exported < script.index("\nkdbench ladder")


def test_a_record_names_the_code_it_ran_not_the_records_being_rewritten(tmp_path: Path) -> None:
    """environment.git (kdbench.core.environment.checkout_info): a regeneration rewriting results/reference and the
    tables leaves its records clean (the version-4 records were all marked dirty by the records they replaced);
    a change to code is dirty, with diff_sha256 the sha256 of that diff, which names exactly the code change."""
    repo = _repo(tmp_path)
    (repo / "results" / "reference").mkdir()
    (repo / "results" / "reference" / "old.json").write_text("{}\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "a record"], check=True)
    subprocess.run([*git, "rm", "-q", "results/reference/old.json"], check=True)  # the old records, staged away
    (repo / "results" / "leaderboard.md").write_text("a regenerated table\n")
    info = checkout_info(repo)
    assert info["sha"] and info["dirty"] is False and "diff_sha256" not in info
    (repo / "code.py").write_text("x = 2\n")
    info = checkout_info(repo)
    diff = subprocess.run(["git", "-C", str(repo), "diff", "HEAD", "--", "code.py"], capture_output=True,
                          check=True).stdout
    assert info["dirty"] is True and info["diff_sha256"] == hashlib.sha256(diff).hexdigest()
    assert checkout_info(tmp_path / "not-a-repo") == {"sha": None, "dirty": None}


def test_the_committed_records_name_one_clean_commit_and_one_thread() -> None:
    """What the README says of results/reference: one regeneration, from a clean tree (the version-4 records were all
    dirty), each run with one torch thread (9 version-4 ladder records ran with 2), the canaries too."""
    import json

    records = [json.loads(p.read_text()) for p in (ROOT / "results" / "reference").glob("**/runs/*/result.json")]
    assert len(records) > 100
    gits = {json.dumps(r["environment"]["git"], sort_keys=True) for r in records}
    assert len(gits) == 1 and json.loads(gits.pop())["dirty"] is False
    assert {r["threads"]["torch_threads"] for r in records} == {1}


def test_regenerate_sh_and_the_records_leave_out_the_same_outputs() -> None:
    """results/regenerate.sh's clean-tree check (bash) and a record's dirty check (kdbench.core.environment) must
    name the same outputs, or a regeneration could pass one check and fail the other."""
    import re

    script = (ROOT / "results" / "regenerate.sh").read_text()
    outputs = re.search(r"^OUTPUTS=\((.*)\)$", script, flags=re.M).group(1)
    assert tuple(re.findall(r"'([^']+)'", outputs)) == OUTPUT_PATHSPECS
