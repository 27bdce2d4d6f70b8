"""SLURM packing: the same four runs as one job array, one task at a time vs two at once, on the local cluster.

Task: `ce` resnet18 on digits (seeds 0-3), submitted with `kdbench sweep --executor slurm` and no
`--cpus-per-task`, so kdbench's default applies: the node's CPUs shared by the tasks that may run at once
(2 CPUs → 2 threads per task at `--array-parallelism 1`, 1 thread each at 2). Before that default, two tasks
each ran as many torch threads as the node had cores, and two at once were ~8x slower per epoch than one
alone. Wall time is the time during which at least one of the array's tasks ran (sacct start/end), so time
spent waiting for other users' jobs (before the array, or between its tasks) does not count.
Target: ratio (parallelism 2 / parallelism 1) <= 1.

    eval "$(bash slurm/up.sh)"; python benchmarks/slurm_packing.py [--epochs 3] [--image-size 16] [--reps 1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def sweep_wall_s(parallelism: int, args: argparse.Namespace, root: Path) -> tuple[float, list[int]]:
    """(seconds from the first task's start to the last one's end, torch threads each run used)."""
    from kdbench.store.records import RunStore
    from kdbench.sweep.saved_sweep import load_saved_sweep

    results = root / f"p{parallelism}"
    cmd = [sys.executable, "-m", "kdbench", "sweep", "--methods", "ce", "--students", "resnet18", "--seeds", "0-3",
           "--epochs", str(args.epochs), "--batch-size", "128", "--set", f"data.image_size={args.image_size}",
           "--executor", "slurm", "--array-parallelism", str(parallelism), "--timeout-min", "30",
           "--results-dir", str(results), "--zoo-dir", str(root / "zoo"), "--wait"]
    subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "KDBENCH_POLL_S": "1"})
    sweep = load_saved_sweep(results)
    array = sweep["submissions"][-1]["array_job"]
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,Start,End", "-j", array], capture_output=True,
                         text=True, check=True).stdout
    rows = [line.split("|") for line in out.strip().splitlines() if "_" in line.split("|")[0]]
    spans = [(dt.datetime.fromisoformat(r[1]), dt.datetime.fromisoformat(r[2])) for r in rows]
    store = RunStore(results)
    threads = [store.load(e["run_id"])["threads"]["torch_threads"] for e in sweep["runs"]]
    return busy_s(spans), threads


def busy_s(spans: list[tuple[dt.datetime, dt.datetime]]) -> float:
    """Seconds during which at least one task ran: the array's wall time without the gaps in which other
    users' jobs held the node (on a shared cluster they come between tasks at parallelism 1)."""
    total, end = 0.0, None
    for start, stop in sorted(spans):
        if end is None or start > end:
            total += (stop - start).total_seconds()
            end = stop
        elif stop > end:
            total += (stop - end).total_seconds()
            end = stop
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--reps", type=int, default=1, help="Alternating repetitions (noise hits both alike).")
    args = parser.parse_args()
    if not os.environ.get("SLURM_CONF"):
        sys.exit('SLURM_CONF is not set: eval "$(bash slurm/up.sh)" first')

    walls: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="slurm-packing-") as tmp:
        for rep in range(args.reps):
            for parallelism in (1, 2):
                root = Path(tmp) / f"rep{rep}"
                t0 = time.perf_counter()
                wall, threads = sweep_wall_s(parallelism, args, root)
                walls[parallelism].append(wall)
                print(f"rep {rep} parallelism {parallelism}: array wall {wall:.0f}s (torch threads per run "
                      f"{threads}; command {time.perf_counter() - t0:.0f}s)", flush=True)
    p1, p2 = min(walls[1]), min(walls[2])
    print(f"4 runs x {args.epochs} epochs, digits {args.image_size}px: parallelism 1 {p1:.0f}s, "
          f"parallelism 2 {p2:.0f}s, ratio {p2 / p1:.2f} (target <= 1)")


if __name__ == "__main__":
    main()
