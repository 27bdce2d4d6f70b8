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
