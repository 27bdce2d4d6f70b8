#!/usr/bin/env bash
# GPU validation of kdbench, one table: ce, kd, crd and cnn2gnn runs on CUDA with AMP and channels_last, one run
# data-parallel over every GPU (NCCL, SyncBatchNorm), the teacher-output cache on the device, and the engine's
# images/s against a bare loop, on a CIFAR-100 fixture in a temporary folder (no internet, nothing outside it).
# Budget: at most 8 minutes on one H100 (expected 2-3). Run it whenever a GPU machine is lent; CI runs only
# the CPU dry run (tests/test_gpu_check.py). Exit code: 0 all ok, 1 a check failed, 2 no CUDA device.
#
#   bash benchmarks/gpu_check.sh                  # CUDA, all GPUs
#   bash benchmarks/gpu_check.sh --cpu-dry-run    # the same steps on CPU at toy sizes (~1 minute on 2 cores)
#   bash benchmarks/gpu_check.sh --workdir /tmp/gpu-check   # keep records, logs, zoo and data
#
# The interpreter: $PYTHON, else the checkout's .venv, else python3 (kdbench must be installed in it).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" benchmarks/gpu_check.py "$@"
