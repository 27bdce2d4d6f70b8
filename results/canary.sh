#!/usr/bin/env bash
# Regenerates the RESULTS_VERSION canaries in results/reference/canary: two tiny digits runs (ce, and kd from a
# freshly trained teacher), 2 epochs each, one torch thread, on CPU. tests/test_results_version.py reruns their
# configs and fails when the numbers differ while kdbench.fingerprint.RESULTS_VERSION was not raised.
#
#   bash results/canary.sh            # ~10 s; called by results/regenerate.sh
set -euo pipefail
cd "$(dirname "$0")/.."
R=results/reference/canary
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # the test runs with one thread: the same float reductions
ZOO="$(mktemp -d)"  # a fresh teacher every time, never one from another version's zoo
trap 'rm -rf "$ZOO"' EXIT
rm -rf "$R"
COMMON=(--student cifar_resnet8 --epochs 2 --set data.image_size=8 --results-dir "$R" --zoo-dir "$ZOO" --device cpu)
kdbench run --method ce "${COMMON[@]}" > /dev/null
kdbench run --method kd --teacher cifar_resnet8 --teacher-epochs 2 "${COMMON[@]}" > /dev/null
rm -f "$R"/runs/*/checkpoint.pt "$R"/runs/*/run.lock  # the records and their per-epoch metrics are the canary
ls "$R"/runs
