#!/usr/bin/env bash
# Regenerates the RESULTS_VERSION canaries in results/reference/canary: two tiny digits runs (ce, and kd from a
# freshly trained teacher), 2 epochs each, one torch thread, on CPU, with --portable (the same bits on any x86 CPU,
# so the canary checks the code, not the machine: README, Reproducibility). tests/test_results_version.py reruns
# their configs and fails when the numbers differ while kdbench.store.fingerprint.RESULTS_VERSION was not raised.
#
#   bash results/canary.sh            # ~20 s; called by results/regenerate.sh
#   bash results/canary.sh DIR        # into DIR instead (KDBENCH_CANARY=DIR pytest tests/test_results_version.py)
set -euo pipefail
cd "$(dirname "$0")/.."
R="${1:-results/reference/canary}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # the test runs with one thread: the same float reductions
ZOO="$(mktemp -d)"  # a fresh teacher every time, never one from another version's zoo
trap 'rm -rf "$ZOO"' EXIT
rm -rf "$R/runs"  # only the runs: DIR may be a folder that holds other things
COMMON=(--student cifar_resnet8 --epochs 2 --set data.image_size=8 --results-dir "$R" --zoo-dir "$ZOO" --device cpu --portable)
kdbench run --method ce "${COMMON[@]}" > /dev/null
kdbench run --method kd --teacher cifar_resnet8 --teacher-epochs 2 "${COMMON[@]}" > /dev/null
rm -f "$R"/runs/*/checkpoint.pt "$R"/runs/*/run.lock  # the records and their per-epoch metrics are the canary
ls "$R"/runs
