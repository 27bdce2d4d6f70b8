"""The teacher-output cache (kdbench.teachers.output_cache) and the keyed augmentation it rests on: a run with the cache
gives the numbers of the same run without it, other runs with the same teacher and seed read it, a damaged entry is
recomputed, a full cache evicts, `kdbench cache clear` empties it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from kdbench.data.loaders import make_train_loader
from kdbench.data.tensor_dataset import IndexedTensorDataset
from kdbench.data.transforms import PadCropFlip
from kdbench.execute.api import run
from kdbench.teachers import cache_entry, cache_folder
from kdbench.teachers import output_cache as teacher_cache

TINY = dict(dataset="digits", student="cifar_resnet8", epochs=2, teacher_epochs=1, device="cpu",
            sets=["data.image_size=8"], infer_batch_size=8)


def _kd(dirs: dict[str, Path], cache: Path, results: str, mode: str = "on", sets: tuple[str, ...] = (),
        method: str = "kd", **kw) -> dict:
    return run(method, "cifar_resnet8", **{**TINY, "sets": [*TINY["sets"], *sets], **kw},
               results_dir=dirs["results"] / results, zoo_dir=dirs["zoo"], teacher_cache=mode, cache_dir=cache)


def _numbers(record: dict) -> tuple:
    return record["metrics"]["top1_last"], record["metrics"]["top1_best"], record["metrics"]["top5_last"]


def test_kd_with_the_cache_equals_kd_without_and_another_temperature_reads_it(dirs, tmp_path):
    cache = tmp_path / "cache"
    off = _kd(dirs, cache, "off", mode="off")
    assert off["teacher_cache"] == {"mode": "off"} and not cache.exists()
    filling = _kd(dirs, cache, "fill")
    reading = _kd(dirs, cache, "read")
    assert off["run_id"] == filling["run_id"] == reading["run_id"]
    assert _numbers(off) == _numbers(filling) == _numbers(reading)
    f, r = filling["teacher_cache"], reading["teacher_cache"]
    assert f["mode"] == "on" and f["hits"] == 0 and f["misses"] > 0 and f["bytes_written"] > 0
    assert r["hits"] == f["misses"] and r["misses"] == 0 and r["bytes_read"] > 0 and r["bytes_written"] == 0
    # Another hyperparameter, same teacher and seed: every batch's logits come from the cache.
    hot = _kd(dirs, cache, "t2", sets=("kd.temperature=2",))
    assert hot["run_id"] != off["run_id"] and hot["teacher_cache"]["hits"] == f["misses"]
    assert hot["teacher_cache"]["misses"] == 0
    # The batch a sample's logits were computed in is part of the key: another batch size reads nothing.
    other_batch = _kd(dirs, cache, "b32", batch_size=32, epochs=1)
    assert other_batch["teacher_cache"]["hits"] == 0 and other_batch["teacher_cache"]["namespace"] != f["namespace"]


def test_features_are_cached_and_give_the_numbers_of_recomputing_them(dirs, tmp_path):
    cache = tmp_path / "cache"
    one_epoch = {"method": "fitnet", "epochs": 1}
    off = _kd(dirs, cache, "off", mode="off", **one_epoch)
    filling = _kd(dirs, cache, "fill", **one_epoch)
    reading = _kd(dirs, cache, "read", **one_epoch)
    assert _numbers(off) == _numbers(filling) == _numbers(reading)
    assert filling["teacher_cache"]["features"] == "cached" and reading["teacher_cache"]["misses"] == 0
    assert reading["teacher_cache"]["hits"] > 0


def test_a_corrupted_entry_is_recomputed_never_used(dirs, tmp_path):
    cache = tmp_path / "cache"
    first = _kd(dirs, cache, "a")
    entry = sorted(cache.glob("*/e00001-logits.kdtc"))[0]
    blob = bytearray(entry.read_bytes())
    blob[-5] ^= 0xFF  # one flipped byte in the payload
    entry.write_bytes(bytes(blob))
    second = _kd(dirs, cache, "b", force=True)
    tc = second["teacher_cache"]
    assert _numbers(second) == _numbers(first)
    assert tc["corrupt_entries_recomputed"] == 1 and tc["misses"] > 0 and tc["hits"] > 0  # epoch 2 still read
    assert cache_entry.decode_entry(entry.read_bytes()) is not None  # rewritten whole
    entry.write_bytes(entry.read_bytes()[:100])  # truncated
    assert cache_entry.decode_entry(entry.read_bytes()) is None


def _filled_cache(root: Path, seed: int, cap: int) -> teacher_cache.TeacherOutputCache:
    cache = teacher_cache.TeacherOutputCache(root, {"seed": seed}, num_train=100, epochs=1, cap=cap)
    cache.begin_epoch(1)
    cache.store({"logits": torch.randn(100, 10)}, torch.arange(100))
    cache.flush()
    return cache


def test_a_full_cache_evicts_the_least_recently_used_entries(tmp_path):
    a = _filled_cache(tmp_path, 0, 10**9)
    cap = int(2.5 * a._path("logits").stat().st_size)  # room for two entries
    b = _filled_cache(tmp_path, 1, cap)
    os.utime(a._path("logits"), (1, 1))  # a read long ago, b more recently
    assert b.evicted == 0 and len(cache_folder.entries(tmp_path)) == 2
    c = _filled_cache(tmp_path, 2, cap)
    assert c.evicted == 1 and not a._path("logits").exists() and b._path("logits").exists()


def test_the_cache_is_what_the_train_layer_asks_for(tmp_path):
    """One typed object for the cache's life in a run: the Distiller's `teacher_cache`, driven by the engine."""
    from kdbench.train.method import Distiller
    from kdbench.train.teacher_outputs import TeacherOutputs

    assert isinstance(_filled_cache(tmp_path, 0, 10**9), TeacherOutputs)
    assert Distiller.__annotations__["teacher_cache"] == "TeacherOutputs | None"
    assert not hasattr(Distiller, "begin_epoch")  # the epoch is the engine's to hand to the cache


def _cli(monkeypatch, capsys, *args: str) -> str:
    from kdbench.cli.app import main

    monkeypatch.setenv("COLUMNS", "300")
    monkeypatch.setattr(sys, "argv", ["kdbench", *args])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code in (0, None)
    out = capsys.readouterr()
    return out.out + out.err


def test_cache_clear_empties_the_cache(tmp_path, monkeypatch, capsys):
    cache = _filled_cache(tmp_path, 0, 10**9)
    assert cache.namespace in _cli(monkeypatch, capsys, "cache", "list", "--cache-dir", str(tmp_path))
    assert "removed 1 entries" in _cli(monkeypatch, capsys, "cache", "clear", "--cache-dir", str(tmp_path))
    assert cache_folder.entries(tmp_path) == []
    assert cache.namespace not in _cli(monkeypatch, capsys, "cache", "list", "--cache-dir", str(tmp_path))


def test_augmentation_is_a_function_of_seed_epoch_and_index_not_of_the_global_rng():
    images = torch.randn(12, 3, 8, 8)
    ds = IndexedTensorDataset(images, torch.zeros(12, dtype=torch.long), PadCropFlip(2, True))

    def epoch(loader, epoch_number: int, draw: bool) -> torch.Tensor:
        loader.sampler.set_epoch(epoch_number)
        torch.manual_seed(123)
        out = torch.zeros_like(images)
        for x, _, index in loader:
            out[index] = x
            if draw:  # a method drawing random numbers between batches (CRD's negatives)
                torch.rand(1000)
        return out

    loader = make_train_loader(ds, 4, seed=3, device=torch.device("cpu"))
    quiet = epoch(loader, 1, draw=False)
    assert torch.equal(quiet, epoch(loader, 1, draw=True))
    assert not torch.equal(quiet, images)  # it does augment
    assert not torch.equal(quiet, epoch(loader, 2, draw=False))  # ... differently each epoch
    # The same sample, epoch and seed in a loader of another batch size: the same crop.
    assert torch.equal(quiet, epoch(make_train_loader(ds, 6, seed=3, device=torch.device("cpu")), 1, draw=False))


@pytest.mark.parametrize("mode,dtype", [("maybe", "float32"), ("on", "int8")])
def test_bad_options_are_refused(mode, dtype):
    from kdbench.core.errors import UserError

    with pytest.raises(UserError):
        teacher_cache.check_options(mode, dtype)
