"""benchmarks/image_throughput.py runs on a few generated JPEGs and times like with like: both pipelines give
batches of the same shape at each worker count and the table holds their ratio. Timings are not asserted (the
machines are shared): the benchmark reports them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "image_throughput.py"

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


def test_benchmark_times_both_pipelines_on_the_same_batches(tmp_path):
    spec = importlib.util.spec_from_file_location("image_throughput", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.write_tree(tmp_path, images=12, size=(120, 90), classes=3)
    rows = bench.measure(tmp_path, workers=[0], batch_size=4, epochs=1)
    assert [r["pipeline"] for r in rows] == ["kdbench", "torchvision"]
    assert rows[0]["shape"] == rows[1]["shape"] == (4, 3, 224, 224)
    assert all(r["steady"] > 0 for r in rows)
    assert "kdbench / torchvision" in bench.table(rows) and "×" in bench.table(rows)


def test_gpu_decode_is_refused_in_one_line_without_cuda(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(BENCH), "--gpu-decode", "--images", "4"], capture_output=True,
                          text=True, timeout=120, env=env, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "image_throughput: --gpu-decode needs a CUDA device (torchvision.io.decode_jpeg on CUDA) and none is "
        "visible; leave the option out to time the CPU pipelines"]
    assert done.stdout == ""  # refused before writing or timing anything
