"""The teacher paid once for feature methods too (issue #35, point 4): a sweep of kd, dkd, pkt and at on one
teacher and seed, from a cold cache, runs the teacher on each training batch in its first run and never again —
before, the cache kept only what each method asked for, and pkt (embedding) and at (stage maps) each paid the
teacher again: 3 runs of 4. The numbers are those of the same sweep without the cache, bit for bit.

Teacher forwards are counted for real: a forward hook on every module call (benchmarks/teacher_cache.py's
TeacherForwards) counts the calls of the frozen teacher, not the cache's own bookkeeping."""

from __future__ import annotations

import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from kdbench.store.records import RunStore
from kdbench.sweep.saved_sweep import load_saved_sweep
from kdbench.teachers.cache_outputs import choose_stored

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "teacher_cache.py"
SWEEP = ("kd", "dkd", "pkt", "at")
TINY = ["--teachers", "cifar_resnet8", "--students", "cifar_resnet8", "--seeds", "0", "--epochs", "1",
        "--teacher-epochs", "1", "--batch-size", "256", "--set", "data.image_size=8", "--set",
        "teacher_recipe.batch_size=256", "--cpus-per-task", "1", "--executor", "debug", "--device", "cpu"]


@pytest.fixture(scope="module")
def bench() -> SimpleNamespace:
    return SimpleNamespace(**runpy.run_path(str(BENCH)))  # the benchmark's functions (benchmarks is no package)


def _weights(results: Path, record: dict) -> bytes:
    """The run's trained student, byte for byte: any other bit in a teacher output a loss read changes it."""
    return (results / "runs" / record["run_id"] / "student.safetensors").read_bytes()


def _sweep(bench, dirs: dict[str, Path], results: Path, *options: str) -> tuple[dict[str, dict], int]:
    """`kdbench sweep --methods kd,dkd,pkt,at ...` in process: its records by method, and the batches the
    teacher ran on (calls on more than the 2 images of a probe)."""
    from kdbench.cli.app import _register_commands, app

    _register_commands()
    with bench.TeacherForwards() as counted:
        done = CliRunner().invoke(app, ["sweep", "--methods", ",".join(SWEEP), *TINY, "--results-dir", str(results),
                                        "--zoo-dir", str(dirs["zoo"]), *options])
    assert done.exit_code == 0, done.output
    (submission,) = load_saved_sweep(results)["submissions"]
    store = RunStore(results)
    records = {r["method"]: r for r in (store.load(rid) for rid in submission["tasks"])}
    assert sorted(records) == sorted(SWEEP) and all(r["status"] == "completed" for r in records.values())
    return records, counted.batches


def test_a_sweep_of_kd_dkd_pkt_at_pays_the_teacher_in_one_run_only(bench, dirs, tmp_path):
    off, off_batches = _sweep(bench, dirs, tmp_path / "off", "--teacher-cache", "off")
    on, on_batches = _sweep(bench, dirs, tmp_path / "on", "--cache-dir", str(tmp_path / "cache"))
    caches = [r["teacher_cache"] for r in on.values()]
    batches = max(c["misses"] for c in caches)  # the training batches of one run (1 epoch)
    assert batches > 0 and off_batches == 4 * batches  # without the cache every run pays
    assert on_batches == batches  # with it, one run of the four
    [first] = [c for c in caches if c["misses"]]
    assert first["misses"] == batches and first["hits"] == 0
    assert first["stored"][:2] == ["logits", "embedding"] and {"stage2", "stage3"} <= set(first["stored"])
    for c in caches:
        if c is not first:
            assert c["hits"] == batches and c["misses"] == 0 and c["bytes_written"] == 0
    assert on["at"]["teacher_cache"]["features"] == on["pkt"]["teacher_cache"]["features"] == "cached"
    for method in SWEEP:  # the same run, the same numbers: the cache is not in the run id
        assert on[method]["run_id"] == off[method]["run_id"]
        assert on[method]["metrics"] == off[method]["metrics"], method
        assert _weights(tmp_path / "on", on[method]) == _weights(tmp_path / "off", off[method]), method


def test_the_outputs_stored_are_the_embedding_then_the_smallest_stages_that_fit_the_cap():
    outputs = {"logits": torch.zeros(2, 10), "stage1": torch.zeros(2, 16, 8, 8), "stage2": torch.zeros(2, 32, 4, 4),
               "stage3": torch.zeros(2, 64, 2, 2), "embedding": torch.zeros(2, 64)}
    rows = 100  # training samples × epochs
    mb = {n: v[0].numel() * 4 * rows for n, v in outputs.items()}  # float32 entries
    everything = choose_stored(outputs, rows, sum(mb.values()), "float32")
    assert everything == ["logits", "embedding", "stage3", "stage2", "stage1"]
    assert choose_stored(outputs, rows, mb["embedding"] + mb["stage3"] + mb["stage2"], "float32") == \
        ["logits", "embedding", "stage3", "stage2"]
    assert choose_stored(outputs, rows, mb["embedding"] - 1, "float32") == ["logits"]  # logits are always kept
    # float16 entries take half: the same cap holds every stage.
    assert choose_stored(outputs, rows, sum(mb.values()) // 2, "float16") == everything


def test_stage_maps_read_under_channels_last_give_the_numbers_of_recomputing_them(dirs, tmp_path):
    """A channels_last teacher's maps come back channels_last: AT's mean over a map's channels sums in another
    order on a contiguous copy (other bits), so a read map in the wrong layout changed AT's numbers."""
    from kdbench.execute.api import run

    tiny = dict(student="cifar_resnet8", dataset="digits", epochs=1, teacher_epochs=1, device="cpu",
                sets=["data.image_size=8"], zoo_dir=dirs["zoo"], channels_last=True, cache_dir=tmp_path / "cache")
    off = run("at", "cifar_resnet8x4", **tiny, results_dir=tmp_path / "off", teacher_cache="off")
    run("kd", "cifar_resnet8x4", **tiny, results_dir=tmp_path / "kd")  # fills the cache with every stage
    read = run("at", "cifar_resnet8x4", **tiny, results_dir=tmp_path / "read")
    assert read["teacher_cache"]["misses"] == 0 and read["teacher_cache"]["hits"] > 0
    assert read["metrics"] == off["metrics"]
    assert _weights(tmp_path / "read", read) == _weights(tmp_path / "off", off)


def test_under_float16_a_method_reading_another_methods_maps_trains_as_if_it_had_filled_them(dirs, tmp_path):
    """`--teacher-cache-dtype float16` rounds every output, read or computed: AT reading the maps a KD run stored
    trains the weights of an AT run that computed (and rounded) them itself."""
    from kdbench.execute.api import run

    tiny = dict(student="cifar_resnet8", dataset="digits", epochs=1, teacher_epochs=1, device="cpu",
                sets=["data.image_size=8"], zoo_dir=dirs["zoo"], teacher_cache_dtype="float16")
    own = run("at", "cifar_resnet8", **tiny, results_dir=tmp_path / "own", cache_dir=tmp_path / "own-cache")
    run("kd", "cifar_resnet8", **tiny, results_dir=tmp_path / "kd", cache_dir=tmp_path / "cache")
    read = run("at", "cifar_resnet8", **tiny, results_dir=tmp_path / "read", cache_dir=tmp_path / "cache")
    assert own["teacher_cache"]["hits"] == 0 and read["teacher_cache"]["misses"] == 0
    assert _weights(tmp_path / "read", read) == _weights(tmp_path / "own", own)


def test_stage_maps_past_the_cap_are_left_out_and_recomputed_with_the_same_numbers(dirs, tmp_path, monkeypatch):
    """$KDBENCH_CACHE_GB bounds what a computing run stores: at 2 MB (digits, 1437 samples, 1 epoch) the logits,
    the embedding (0.4 MB) and the smallest stage map (64×2×2: 1.5 MB) fit, the others do not. pkt then reads
    everything; at, whose pairs take the larger maps, runs the teacher again, rewrites nothing, and trains the
    student of the run without the cache."""
    from kdbench.execute.api import run

    monkeypatch.setenv("KDBENCH_CACHE_GB", "0.002")
    tiny = dict(student="cifar_resnet8", dataset="digits", epochs=1, teacher_epochs=1, device="cpu",
                sets=["data.image_size=8"], zoo_dir=dirs["zoo"], cache_dir=tmp_path / "cache")
    off = run("at", "cifar_resnet8", **tiny, results_dir=tmp_path / "off", teacher_cache="off")
    kd = run("kd", "cifar_resnet8", **tiny, results_dir=tmp_path / "kd")["teacher_cache"]
    assert kd["stored"] == ["logits", "embedding", "stage3"]
    pkt = run("pkt", "cifar_resnet8", **tiny, results_dir=tmp_path / "pkt")["teacher_cache"]
    assert pkt["misses"] == 0 and pkt["hits"] == kd["misses"]
    at = run("at", "cifar_resnet8", **tiny, results_dir=tmp_path / "at")
    tc = at["teacher_cache"]
    assert tc["features"] == "recomputed" and tc["misses"] == kd["misses"] and tc["bytes_written"] == 0
    assert _weights(tmp_path / "at", at) == _weights(tmp_path / "off", off)
