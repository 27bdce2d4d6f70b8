"""benchmarks/gpu_check.sh: its CPU dry run (every check of the GPU validation, on CPU at toy sizes) runs end to
end and prints the one table; a CUDA run on a machine without CUDA, and a spent budget, fail as documented.
The CUDA run itself needs a GPU machine (run it by hand there: README, "GPU check")."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
ROWS = ["ce", "kd", "teacher cache", "crd", "cnn2gnn", "ddp", "images/s"]
ROW = re.compile(r"^\| (?P<check>[^|]+?) \| (?P<status>\w+) \| (?P<seconds>[\d.]+) \| (?P<figure>.*) \|$")


def gpu_check(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}  # the interpreter kdbench is installed in
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=env)


def table(stdout: str) -> tuple[str, dict[str, dict[str, str]]]:
    """(the header line, rows by check) of the one table the script prints."""
    lines = stdout.strip().splitlines()
    header = [line for line in lines if line.startswith("# GPU check")]
    rows = [m.groupdict() for m in map(ROW.match, lines) if m and m["check"] != "check"]
    assert len(header) == 1, stdout
    return header[0], {r["check"]: r for r in rows}


def number(text: str) -> float:
    return float(text.replace(",", ""))


def records(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("runs/*/result.json"))]


def test_the_cpu_dry_run_runs_every_check_and_prints_one_table(tmp_path):
    work = tmp_path / "work"
    res = gpu_check("--cpu-dry-run", "--workdir", str(work))
    assert res.returncode == 0, res.stdout + res.stderr
    header, rows = table(res.stdout)
    assert header.startswith("# GPU check, CPU dry run: CPU (") and "cifar100 fixture 64 / 8 images" in header
    assert list(rows) == ROWS, res.stdout
    for row in rows.values():
        assert row["status"] == "ok", row
        assert float(row["seconds"]) > 0, row

    # Each figure states what its check measured, in numbers that parse.
    ce = re.search(r"cifar_resnet8 top-1 ([\d.]+), ([\d,]+) img/s, amp bf16, channels_last", rows["ce"]["figure"])
    assert ce and 0 <= float(ce[1]) <= 100 and number(ce[2]) > 0, rows["ce"]
    kd = re.search(r"teacher cifar_resnet14 trained in [\d.]+ s; (\d+) batches into the cache", rows["kd"]["figure"])
    assert kd and int(kd[1]) == 8, rows["kd"]  # 64 images, batch 16, 2 epochs
    cache = re.search(r"hits (\d+) / misses (\d+) batches", rows["teacher cache"]["figure"])
    assert cache and (int(cache[1]), int(cache[2])) == (8, 0), rows["teacher cache"]
    assert re.search(r"^gnn2 top-1 [\d.]+, [\d,]+ img/s", rows["cnn2gnn"]["figure"]), rows["cnn2gnn"]
    assert re.search(r"^2 × gloo, no SyncBN \(CPU\), 8 per rank, [\d,]+ img/s$", rows["ddp"]["figure"]), rows["ddp"]
    speed = re.search(r"engine ([\d,]+) vs bare loop ([\d,]+) img/s = ([\d.]+)×", rows["images/s"]["figure"])
    assert speed and abs(number(speed[1]) / number(speed[2]) - float(speed[3])) < 0.01, rows["images/s"]

    # What the table says is what the records (kept in --workdir) hold.
    runs = {r["method"]: r for r in records(work / "results")}
    assert set(runs) == {"ce", "kd", "crd", "cnn2gnn"}
    (cached,), (ddp,) = records(work / "results-cache"), records(work / "results-ddp")
    for r in [*runs.values(), cached, ddp]:
        assert r["status"] == "completed" and r["environment"]["device"]["type"] == "cpu"
        assert r["config"]["amp"] is True and r["config"]["channels_last"] is True
        assert r["dataset"] == "cifar100" and r["data"]["num_train"] == 64  # the fixture, read
    assert cached["run_id"] == runs["kd"]["run_id"] and cached["teacher_cache"]["hits"] == int(cache[1])
    assert ddp["distributed"]["world_size"] == 2 and ddp["distributed"]["backend"] == "gloo"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the script would run the GPU checks")
def test_without_cuda_the_gpu_run_stops_at_once_and_points_to_the_dry_run():
    res = gpu_check(timeout=300)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "no CUDA device" in res.stderr and "--cpu-dry-run" in res.stderr and "| check |" not in res.stdout


def test_a_spent_budget_fails_every_check_and_the_exit_code(tmp_path):
    res = gpu_check("--cpu-dry-run", "--budget-s", "0", "--workdir", str(tmp_path / "work"), timeout=300)
    assert res.returncode == 1, res.stdout + res.stderr
    _, rows = table(res.stdout)
    assert list(rows) == ROWS and {r["status"] for r in rows.values()} == {"fail"}, res.stdout
    assert "budget of 0 s is spent" in rows["ce"]["figure"]
    assert not (tmp_path / "work" / "results").exists()  # nothing ran
