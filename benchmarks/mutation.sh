#!/usr/bin/env bash
# Mutation testing of the modules that produce kdbench's numbers (long; not part of CI): prints, per module, the
# kill ratio and the surviving mutants. Arguments go to benchmarks/mutation.py, e.g.
#   benchmarks/mutation.sh                                  # every target
#   benchmarks/mutation.sh kdbench.train.evaluate kdbench.train.schedule --json /tmp/mutation.json
#   benchmarks/mutation.sh --list                           # targets, their tests and mutant counts
# One torch thread per test process: the tests are tiny, and the machines this runs on are shared.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
exec "$PYTHON" benchmarks/mutation.py "$@"
