"""Run records a colleague hands over (issue #34, cases 2 and 10): a run folder or file that is a symlink out of the
results folder is never listed, read or written through; a record whose blocks have the wrong type, a record of a
newer schema and a garbage line in metrics.jsonl are one warning line each (one error line under --strict), never
a traceback; a result.json linked to /dev/zero never hangs a command."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
from test_leaderboard import make_config, write_run

from kdbench.store.records import RunStore

RUN = ("run", "--method", "ce", "--epochs", "1", "--set", "data.image_size=8")
BAD_BLOCKS = [("metrics-list", {"metrics": []}, "`metrics` is a list"),
              ("metrics-text", {"metrics": "x"}, "`metrics` is text"),
              ("config-number", {"config": 5}, "`config` is int"),
              ("metric-text", {"metrics": {"top1_last": "high"}}, "`metrics.top1_last` is text")]


def _two_runs(root: Path) -> tuple[str, str]:
    """Two completed runs (ce alone, seeds 0 and 1) under `root`."""
    return (write_run(root, make_config("ce", seed=0), 80.0), write_run(root, make_config("ce", seed=1), 82.0))


def _edit(root: Path, run_id: str, **fields: object) -> None:
    """Change a stored record by hand, as a colleague's tool or a hand edit would (no kdbench writer)."""
    path = RunStore(root).result_path(run_id)
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


def _link_out(root: Path, elsewhere: Path, run_id: str) -> Path:
    """`root/runs/RUN_ID` made a symlink to the same run's folder under `elsewhere`; the linked result.json."""
    link = RunStore(root).run_dir(run_id)
    shutil.rmtree(link)
    link.symlink_to(RunStore(elsewhere).run_dir(run_id))
    return RunStore(elsewhere).result_path(run_id)


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def test_a_run_folder_linked_out_of_the_results_folder_is_skipped_with_one_warning(dirs, tmp_path, in_process):
    root, elsewhere = dirs["results"], tmp_path / "elsewhere"
    kept, linked = _two_runs(root)
    _two_runs(elsewhere)
    _link_out(root, elsewhere, linked)
    res = in_process("leaderboard", "--table", "runs", "--format", "csv", "--results-dir", str(root))
    assert res.returncode == 0, res.stderr
    assert kept in res.stdout and linked not in res.stdout
    (line,) = _warnings(res.stderr)
    assert f"run {linked}" in line and "a symlink out of the results folder" in line and "Traceback" not in line
    strict = in_process("leaderboard", "--strict", "--results-dir", str(root))
    assert strict.returncode == 2 and len(_warnings(strict.stderr)) == 1 and "symlink out of" in strict.stderr


def test_eval_never_rewrites_a_record_through_a_link(dirs, tmp_path, in_process):
    """A real completed run (with its student export) whose folder a colleague's results folder links to: before
    issue #34, `kdbench eval` through the link rewrote its result.json."""
    root, elsewhere = dirs["results"], tmp_path / "elsewhere"
    trained = in_process(*RUN, "--results-dir", str(elsewhere))
    assert trained.returncode == 0, trained.stderr
    (record,) = RunStore(elsewhere).iter_records()
    (root / "runs").mkdir()
    RunStore(root).run_dir(record["run_id"]).symlink_to(RunStore(elsewhere).run_dir(record["run_id"]))
    target = RunStore(elsewhere).result_path(record["run_id"])
    before = target.read_bytes()
    res = in_process("eval", record["run_id"], "--batch-sizes", "1", "--results-dir", str(root))
    assert res.returncode == 2, res.stderr
    (line,) = _warnings(res.stderr)
    assert "a symlink out of the results folder" in line and "never writes through one" in line
    assert target.read_bytes() == before


def test_a_run_never_writes_into_a_run_folder_linked_out(dirs, tmp_path, in_process):
    root, elsewhere = dirs["results"], tmp_path / "elsewhere"
    args = RUN
    plan = json.loads(in_process(*args, "--dry-run", "--json", "--results-dir", str(elsewhere)).stdout)
    target = RunStore(elsewhere).run_dir(plan["run_id"])
    target.mkdir(parents=True)
    (target / "result.json").write_text('{"colleague": "keeps this"}\n')
    (root / "runs").mkdir()
    RunStore(root).run_dir(plan["run_id"]).symlink_to(target)
    res = in_process(*args, "--results-dir", str(root))
    assert res.returncode == 2, res.stderr
    assert "a symlink out of the results folder" in _warnings(res.stderr)[-1]
    assert sorted(p.name for p in target.iterdir()) == ["result.json"]  # no lock, checkpoint or record written
    assert (target / "result.json").read_text() == '{"colleague": "keeps this"}\n'


def test_a_result_json_linked_to_dev_zero_does_not_hang_the_leaderboard(dirs, in_process):
    root = dirs["results"]
    kept, zero = _two_runs(root)
    path = RunStore(root).result_path(zero)
    path.unlink()
    path.symlink_to("/dev/zero")
    done: list = []
    worker = threading.Thread(target=lambda: done.append(in_process("leaderboard", "--table", "runs", "--format",
                                                                    "csv", "--results-dir", str(root))), daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "the leaderboard read /dev/zero without end"
    assert done[0].returncode == 0 and kept in done[0].stdout and f"run {zero}" in done[0].stderr


@pytest.mark.parametrize(("fields", "reason"), [c[1:] for c in BAD_BLOCKS], ids=[c[0] for c in BAD_BLOCKS])
@pytest.mark.parametrize("command", ["leaderboard", "plot"])
def test_a_record_with_a_block_of_the_wrong_type_is_one_warning_or_one_error_with_strict(
        dirs, tmp_path, in_process, command, fields, reason):
    root = dirs["results"]
    kept, bad = _two_runs(root)
    _edit(root, bad, **fields)
    extra = ["--out-dir", str(tmp_path / "plots")] if command == "plot" else []
    res = in_process(command, *extra, "--results-dir", str(root))
    assert res.returncode == 0, res.stderr
    (line,) = _warnings(res.stderr)
    assert f"run {bad}" in line and reason in line and "skipped" in line
    strict = in_process(command, *extra, "--strict", "--results-dir", str(root))
    assert strict.returncode == 2
    (line,) = _warnings(strict.stderr)
    assert reason in line and "Traceback" not in strict.stderr


def test_a_record_of_a_newer_schema_says_to_upgrade_kdbench(dirs, in_process):
    root = dirs["results"]
    _, newer = _two_runs(root)
    _edit(root, newer, schema=99)
    res = in_process("leaderboard", "--strict", "--results-dir", str(root))
    assert res.returncode == 2
    (line,) = _warnings(res.stderr)
    assert "schema 99" in line and "upgrade kdbench" in line


def test_plot_skips_a_metrics_file_with_a_garbage_line(dirs, tmp_path, in_process):
    root = dirs["results"]
    good, bad = _two_runs(root)
    epoch = {"epoch": 1, "top1": 80.0, "top5": 99.0, "losses": {"total": 1.0}}
    store = RunStore(root)
    store.write_metrics(good, [epoch])
    store.metrics_path(bad).write_text(json.dumps(epoch) + "\ngarbage{\n")
    out = tmp_path / "plots"
    res = in_process("plot", "--runs", f"{good},{bad}", "--formats", "png", "--out-dir", str(out),
                     "--results-dir", str(root))
    assert res.returncode == 0, res.stderr
    (line,) = _warnings(res.stderr)
    assert f"run {bad}" in line and "line 2" in line and "garbage{" in line
    assert (out / "training_curves.png").is_file()
    strict = in_process("plot", "--runs", f"{good},{bad}", "--formats", "png", "--out-dir", str(out), "--strict",
                        "--results-dir", str(root))
    assert strict.returncode == 2 and len(_warnings(strict.stderr)) == 1 and "line 2" in strict.stderr


def test_plot_never_reads_a_metrics_file_linked_out(dirs, tmp_path, in_process):
    root = dirs["results"]
    good, linked = _two_runs(root)
    epoch = {"epoch": 1, "top1": 80.0, "top5": 99.0, "losses": {"total": 1.0}}
    store = RunStore(root)
    store.write_metrics(good, [epoch])
    outside = tmp_path / "colleague.jsonl"
    outside.write_text(json.dumps(epoch) + "\n")
    store.metrics_path(linked).symlink_to(outside)
    res = in_process("plot", "--runs", f"{good},{linked}", "--formats", "png", "--out-dir", str(tmp_path / "plots"),
                     "--results-dir", str(root))
    assert res.returncode == 0, res.stderr
    (line,) = _warnings(res.stderr)
    assert f"run {linked}" in line and "a symlink out of the results folder" in line
