"""`--portable`: what it costs, and whether it keeps its promise (the same bits on any x86 CPU).

Cost: `kdbench run` of ce and of kd (teacher resnet18 trained in the run, the methods' default students) on
digits, native vs `--portable`, each a fresh process (portable mode must start before torch computes anything),
alternating so that machine noise hits both alike; the ratio of median wall times (teacher + distillation) per
method is printed.

Promise: the canary's tiny kd run (a cifar_resnet8 teacher and student, 2 epochs each, 8×8 digits) on "other
CPUs" simulated here by capping every kernel library's instruction set at the levels this CPU has (ATen by
ATEN_CPU_CAPABILITY, MKL by MKL_ENABLE_INSTRUCTIONS, oneDNN by ONEDNN_MAX_CPU_ISA), native and portable: the
portable runs must be bit-identical (epoch curves, teacher and student weights), the native ones are shown to differ.
Exit status 1 when the portable runs differ.

    python benchmarks/cpu_portable.py [--epochs 1] [--reps 1]      # ~8 min on a quiet 2-core machine
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

EPOCH_FIELDS = ("losses", "lr", "top1", "top5", "eval_loss", "train_top1")
# A CPU whose best level is the key, as each kernel library would see it (the last: an x86-64 without AVX).
SIMULATED = {
    "AVX512": {},
    "AVX2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "DEFAULT": {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41"},
}
TINY = ["--student", "cifar_resnet8", "--teacher", "cifar_resnet8", "--epochs", "2", "--teacher-epochs", "2",
        "--set", "data.image_size=8"]


def kdbench_run(args: list[str], env: dict[str, str], portable: bool) -> tuple[dict[str, Any], Path]:
    """One `kdbench run` in a fresh process with fresh results and zoo folders (the teacher is trained in it)."""
    work = Path(tempfile.mkdtemp(prefix="kdbench-portable-"))
    cmd = [sys.executable, "-m", "kdbench", "run", *args, "--device", "cpu", "--json", "--results-dir",
           str(work / "results"), "--zoo-dir", str(work / "zoo"), *(["--portable"] if portable else [])]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1",
                                                                    "MKL_NUM_THREADS": "1", **env})
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    run_dir = work / "results" / "runs" / json.loads(done.stdout)["run_id"]
    # The record as stored (its key order), so that `bits` digests what a committed record holds (the canary's).
    return json.loads((run_dir / "result.json").read_text()), run_dir


def bits(record: dict[str, Any], run_dir: Path) -> str:
    """A digest of everything the canary compares: epoch curves, metrics, teacher and student weights."""
    epochs = [{k: e.get(k) for k in EPOCH_FIELDS} for e in map(json.loads, (run_dir / "metrics.jsonl").open())]
    student = hashlib.sha256((run_dir / "student.safetensors").read_bytes()).hexdigest()
    payload = json.dumps([epochs, record["metrics"], (record.get("teacher_metrics") or {}).get("sha256"), student])
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def cost(epochs: int, reps: int) -> None:
    runs = {"ce": ["--method", "ce"], "kd": ["--method", "kd", "--teacher", "resnet18"]}
    print(f"\nCost: digits, default students, {epochs} epoch(s) (kd: + a resnet18 teacher, {epochs} epoch(s)), "
          f"one torch thread, median of {reps}\n")
    print("| run | native s | portable s | portable / native |\n|---|---|---|---|")
    for name, args in runs.items():
        args = [*args, "--epochs", str(epochs), "--teacher-epochs", str(epochs)] if name == "kd" else \
            [*args, "--epochs", str(epochs)]
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(reps):
            for portable in (False, True):
                record, _ = kdbench_run(args, {}, portable)
                times[portable].append(record["timing"]["total_s"])
        native, portable_s = statistics.median(times[False]), statistics.median(times[True])
        print(f"| {name} ({record['student']}) | {native:.1f} | {portable_s:.1f} | {portable_s / native:.2f} |",
              flush=True)


def identity() -> bool:
    here = torch.backends.cpu.get_cpu_capability()
    levels = list(SIMULATED)[list(SIMULATED).index(here):] if here in SIMULATED else ["DEFAULT"]
    print("\nPromise: the canary's kd run on CPUs simulated by capping each kernel library's ISA "
          f"(this CPU: {here})\n")
    print("| simulated CPU | native: student top-1, digest | portable: student top-1, digest |\n|---|---|---|")
    digests: dict[bool, set[str]] = {False: set(), True: set()}
    for level in levels:
        cells = []
        for portable in (False, True):
            # Under --portable ATen's level is fixed to DEFAULT by kdbench itself, whatever the CPU.
            env = {k: v for k, v in SIMULATED[level].items() if not (portable and k == "ATEN_CPU_CAPABILITY")}
            record, run_dir = kdbench_run(["--method", "kd", *TINY], env, portable)
            digest = bits(record, run_dir)
            digests[portable].add(digest)
            cells.append(f"{record['metrics']['top1_last']:.2f}, {digest}")
        print(f"| {level} | {' | '.join(cells)} |", flush=True)
    same = len(digests[True]) == 1
    print(f"\nportable: {'bit-identical' if same else 'DIFFERENT'} across {len(levels)} simulated CPUs; native: "
          f"{len(digests[False])} different results")
    return same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--skip-cost", action="store_true", help="Only the bit-identity check (~2 min).")
    args = parser.parse_args()
    same = identity()
    if not args.skip_cost:
        cost(args.epochs, args.reps)
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
