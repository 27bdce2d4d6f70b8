"""benchmarks/engine_overhead.py compares like with like: the engine and the two hand-written loops train the same
weights, bit for bit, and the `bare` loop computes the engine record's numbers (losses to float32 rounding,
accuracies exactly); a loop that drew other random numbers, or computed another number, stops the benchmark.
Timings are not asserted here (the machines are shared): the benchmark reports them."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "engine_overhead.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("engine_overhead", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CPU = torch.device("cpu")


@pytest.mark.parametrize("student", ["tiny", "gnn2"])
def test_the_engine_and_both_loops_do_the_same_work(bench, student, capsys):
    runs = bench.measure(student, 1, 8, CPU)
    assert "trained the same weights and agree on their numbers" in capsys.readouterr().out
    assert runs["steps"] == 22 and all(len(runs[k]) == 1 and runs[k][0] > 0 for k in runs if k != "steps")
    engine_s, train_ratio, per_step = bench.ratios(runs, "bare")
    assert engine_s > 0 and train_ratio > 0 and isinstance(per_step, float)


def test_other_random_draws_in_a_loop_stop_the_benchmark(bench, monkeypatch):
    # gnn2 has dropout: a loop seeded otherwise trains other weights.
    monkeypatch.setattr(bench, "epoch_seed", lambda seed, epoch: 12345)
    with pytest.raises(SystemExit, match="gnn2: the engine and the bare loop computed different weights"):
        bench.measure("gnn2", 0, 8, CPU)


def test_a_number_the_loop_computes_otherwise_stops_the_benchmark(bench, monkeypatch):
    real = bench.bare_epoch

    def off_by_one_hit(*args, **kwargs):
        seconds, numbers = real(*args, **kwargs)
        if "top5" in numbers:
            numbers["top5"] += 100.0 / 360
        return seconds, numbers

    monkeypatch.setattr(bench, "bare_epoch", off_by_one_hit)
    with pytest.raises(SystemExit, match="tiny: the engine and the bare loop computed different top5"):
        bench.measure("tiny", 0, 8, CPU)


def test_processes_report_the_median_over_fresh_processes():
    done = subprocess.run([sys.executable, str(BENCH), "--reps", "1", "--students", "tiny", "--image-size", "8",
                           "--processes", "2"], capture_output=True, text=True, timeout=300, check=True)
    per_process = [float(m) for m in re.findall(r"^process \d/2: tiny ([\d.]+)$", done.stdout, re.M)]
    assert len(per_process) == 2, done.stdout
    row = next(line for line in done.stdout.splitlines() if line.startswith("tiny "))
    epoch_ratio, spread = float(row.split()[3]), row.split()[-1]
    assert epoch_ratio == pytest.approx(sum(per_process) / 2, abs=6e-4)  # the median of two is their mean
    assert spread == f"{min(per_process):.3f}–{max(per_process):.3f}"
