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
# The interpreter: $PYTHON, else the checkout's .venv, else python3. kdbench must be installed in it (methods/ is
# importable only as the installed kdbench.methods); offline, with torch and timm already there:
# `pip install --no-deps --no-build-isolation -e .`
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
# find_spec, not import: a second torch import would cost seconds.
if ! "$PYTHON" -c "import importlib.util as u, sys; sys.exit(not all(u.find_spec(m) for m in ('kdbench.methods', 'torch', 'timm')))" 2>/dev/null; then
  echo "gpu_check: $PYTHON cannot import kdbench (installed), torch and timm: install kdbench into it first" \
    "(pip install -e . ; offline: pip install --no-deps --no-build-isolation -e .), or set PYTHON" >&2
  exit 2
fi
# nvJPEG decoding on the GPU (torchvision.io.decode_jpeg) + the imagenet set's keyed crops there, timed beside the
# CPU pipelines on 400 generated JPEGs (benchmarks/image_throughput.py --gpu-decode; under a minute). Only where
# nvidia-smi sees a GPU: without one, gpu_check.py below says so.
if [[ " $* " != *" --cpu-dry-run "* ]] && command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  rc=0
  "$PYTHON" benchmarks/image_throughput.py --gpu-decode --images 400 --workers 0,4 --epochs 2 || rc=$?
  if [ "$rc" = 1 ]; then echo "gpu_check: benchmarks/image_throughput.py --gpu-decode failed" >&2; exit 1; fi
  # --compile on the GPU: eager vs torch.compile epoch times, compile overhead and the epochs that repay it
  # (benchmarks/compile_speed.py; a few minutes, most of it compiling ResNet-152).
  "$PYTHON" benchmarks/compile_speed.py --device cuda --threads 16 --epochs 2 \
    --cases cifar_resnet8,resnet18,gnn2,resnet152-teacher,kd-resnet152 --out compile_speed_gpu.json \
    || { echo "gpu_check: benchmarks/compile_speed.py --device cuda failed" >&2; exit 1; }
fi
exec "$PYTHON" benchmarks/gpu_check.py "$@"
