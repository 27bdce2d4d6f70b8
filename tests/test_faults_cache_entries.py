"""Teacher-output cache entries a colleague hands you (issue #34): whole files with a valid checksum but the wrong
content, a symlink to /dev/zero, a FIFO, a file far bigger than an entry. Each is a bad entry: `kdbench run` says
so in one line, removes it, recomputes (the numbers of a run without the cache, exactly) and writes a good entry
in its place. Before: int64 values labelled float32 were read as floats and changed the numbers silently; a
(N, 3) entry for 10 classes or an unknown `produced` failed every run that used it; /dev/zero would be read
forever. And kdbench never follows a symlink out of its cache folder, nor writes through one: an entry or namespace
folder linked out of it is neither read nor written through (the link is replaced by the cache's own file or
folder, in one line); `kdbench cache list` does not count what lies elsewhere; `kdbench cache clear` and eviction
remove links, never the files they point to.

Entries are crafted as a colleague would: the real entry of a real run, decoded, changed, re-encoded with a
valid header and checksum. Runs go through the CLI in process; a run that could hang runs in a thread with a
timeout, so a regression fails instead of hanging the suite."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from kdbench.execute.api import run
from kdbench.teachers import cache_folder
from kdbench.teachers.cache_entry import encode_entry, parse_entry
from kdbench.teachers.output_cache import TeacherOutputCache

ARGS = ("--method", "kd", "--teacher", "cifar_resnet8", "--student", "cifar_resnet8", "--dataset", "digits",
        "--epochs", "1", "--teacher-epochs", "1", "--device", "cpu", "--set", "data.image_size=8", "--json")
API = dict(dataset="digits", student="cifar_resnet8", epochs=1, teacher_epochs=1, device="cpu",
           sets=["data.image_size=8"])


def _metrics(record: dict) -> dict:
    return {k: record["metrics"][k] for k in ("top1_last", "top1_best", "top5_last")}


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One zoo teacher, the numbers of the run without the cache, and a cache filled by the same run."""
    base = tmp_path_factory.mktemp("filled")
    zoo, cache = base / "zoo", base / "cache"
    off = run("kd", "cifar_resnet8", **API, results_dir=base / "off", zoo_dir=zoo, teacher_cache="off")
    on = run("kd", "cifar_resnet8", **API, results_dir=base / "on", zoo_dir=zoo, teacher_cache="on", cache_dir=cache)
    assert _metrics(on) == _metrics(off)
    [entry] = sorted(cache.glob("*/*-logits.kdtc"))  # the logits of epoch 1 (the other entries: its features)
    return {"zoo": zoo, "cache": cache, "entry": entry.relative_to(cache), "off": _metrics(off)}


def _cache_copy(filled: dict, tmp_path: Path) -> tuple[Path, Path]:
    cache = tmp_path / "cache"
    shutil.copytree(filled["cache"], cache)
    return cache, cache / filled["entry"]


def _kdbench_run(in_process, filled: dict, cache: Path, tmp_path: Path, timeout_s: float = 300):
    """`kdbench run ... --cache-dir CACHE --json`, in process, in a thread that must end within `timeout_s`."""
    args = (*ARGS, "--zoo-dir", str(filled["zoo"]), "--results-dir", str(tmp_path / "results"), "--cache-dir",
            str(cache))
    done: list = []
    worker = threading.Thread(target=lambda: done.append(in_process("run", *args)), daemon=True)
    worker.start()
    worker.join(timeout_s)
    assert not worker.is_alive(), f"kdbench run did not end within {timeout_s} s (reading the entry without end?)"
    result = done[0]
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), result.stderr


def _assert_recomputed_and_replaced(record: dict, stderr: str, entry: Path, filled: dict,
                                    named: Path | None = None) -> None:
    """The run's numbers are the cache-off run's, one line names the bad entry (or `named`), a good one replaced
    it."""
    assert _metrics(record) == filled["off"]  # exactly the numbers of the run without the cache
    flat = "".join(stderr.split())  # rich wraps a long line: compared without whitespace
    assert flat.count("isdamaged") == 1 and "recomputing" in flat, stderr
    assert "".join(str(named or entry).split()) in flat, stderr
    assert record["teacher_cache"]["corrupt_entries_recomputed"] == 1
    assert entry.is_file() and not entry.is_symlink()  # a good entry in its place
    good, _ = parse_entry((filled["cache"] / filled["entry"]).read_bytes())
    tensors, meta = parse_entry(entry.read_bytes())
    assert torch.equal(tensors["values"], good["values"]) and meta["produced"] == "float32"


def _rewrite(entry: Path, change) -> None:  # noqa: ANN001
    tensors, meta = parse_entry(entry.read_bytes())
    tensors, meta = change(tensors, meta)
    entry.write_bytes(encode_entry(tensors, meta))  # a valid header and checksum


FORGED = {
    # What the colleague's entry held: the run read these as floats and trained on other numbers (12.78 vs 10.00).
    "int64 values labelled float32": lambda t, m: ({**t, "values": (t["values"] * 10).round().to(torch.int64)}, m),
    "(N, 3) for 10 classes": lambda t, m: ({**t, "values": t["values"][:, :3].contiguous()}, m),
    "an unknown produced": lambda t, m: (t, {**m, "produced": "nn"}),
    "another dtype produced": lambda t, m: (t, {**m, "produced": "int64"}),
    "fewer training samples": lambda t, m: ({"values": t["values"][:-1], "filled": t["filled"][:-1]}, m),
    "a mask that is not 0/1": lambda t, m: ({**t, "filled": t["filled"] * 7}, m),
    "another epoch's entry": lambda t, m: (t, {**m, "epoch": 2}),
    "a field too many": lambda t, m: (t, {**m, "note": "hi"}),
}


@pytest.mark.parametrize("forged", list(FORGED))
def test_a_whole_entry_of_the_wrong_content_is_removed_recomputed_and_said_once(forged, filled, tmp_path,
                                                                                  in_process):
    cache, entry = _cache_copy(filled, tmp_path)
    _rewrite(entry, FORGED[forged])
    record, stderr = _kdbench_run(in_process, filled, cache, tmp_path)
    _assert_recomputed_and_replaced(record, stderr, entry, filled)


def test_an_entry_declaring_fewer_bytes_than_its_shape_takes_is_bad(filled, tmp_path, in_process):
    cache, entry = _cache_copy(filled, tmp_path)
    blob = entry.read_bytes()
    n = int.from_bytes(blob[4:12], "little")
    header = json.loads(blob[12 : 12 + n])
    header["tensors"]["values"]["shape"][1] = 100  # the header claims 100 classes over the 10 classes' bytes
    raw = json.dumps(header, sort_keys=True).encode()
    entry.write_bytes(blob[:4] + len(raw).to_bytes(8, "little") + raw + blob[12 + n :])
    record, stderr = _kdbench_run(in_process, filled, cache, tmp_path)
    _assert_recomputed_and_replaced(record, stderr, entry, filled)


def test_a_feature_entry_of_another_per_sample_shape_is_bad(filled, tmp_path, in_process):
    """A feature map's entry is checked against the shape the teacher gives one sample, learnt from the teacher
    itself (FitNet's stage: (C, H, W); the forged entry holds the same bytes as (C, H·W))."""
    cache = tmp_path / "cache"
    off = run("fitnet", "cifar_resnet8", **API, results_dir=tmp_path / "off", zoo_dir=filled["zoo"],
              teacher_cache="off")
    run("fitnet", "cifar_resnet8", **API, results_dir=tmp_path / "fill", zoo_dir=filled["zoo"],
        teacher_cache="on", cache_dir=cache)
    [entry] = cache.glob("*/e00001-stage2.kdtc")  # FitNet's hint stage (the run stores every stage that fits)
    good, _ = parse_entry(entry.read_bytes())
    _rewrite(entry, lambda t, m: ({**t, "values": t["values"].flatten(2)}, m))
    args = (*ARGS, "--zoo-dir", str(filled["zoo"]), "--results-dir", str(tmp_path / "read"), "--cache-dir", str(cache))
    result = in_process("run", *[("fitnet" if a == "kd" else a) for a in args])
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert _metrics(record) == _metrics(off)
    flat = "".join(result.stderr.split())
    assert flat.count("isdamaged") == 1 and "".join(str(entry).split()) in flat, result.stderr
    assert record["teacher_cache"]["corrupt_entries_recomputed"] == 1
    assert torch.equal(parse_entry(entry.read_bytes())[0]["values"], good["values"])


@pytest.mark.parametrize("shape", [[10**12, 10], [-1, 10], [1437, "10"], [1437, 10.0]])
def test_a_header_declaring_a_shape_its_payload_does_not_hold_is_bad(shape):
    """Header checks alone (a valid checksum over the payload): a shape it cannot hold is a BadEntry, never a
    traceback or an allocation of what the header claims."""
    from kdbench.teachers.cache_entry import BadEntry

    blob = encode_entry({"values": torch.zeros(1437, 10), "filled": torch.ones(1437, dtype=torch.uint8)}, {})
    n = int.from_bytes(blob[4:12], "little")
    header = json.loads(blob[12 : 12 + n])
    header["tensors"]["values"]["shape"] = shape
    if all(isinstance(d, int) for d in shape):
        header["tensors"]["values"]["nbytes"] = abs(shape[0] * shape[1]) * 4
    raw = json.dumps(header, sort_keys=True).encode()
    with pytest.raises(BadEntry):
        parse_entry(blob[:4] + len(raw).to_bytes(8, "little") + raw + blob[12 + n :])


ODD_VALUES = [None, True, -1, 2**70, 1.5, "x", [], [1], {}, {"a": 1}, [[[]]]]


def test_any_header_field_of_any_type_is_a_bad_entry_or_a_good_one_never_an_error():
    """Every header field replaced by values of every JSON type, and a header nested deeper than the parser goes:
    parse_entry answers BadEntry (a ValueError the cache catches), never another exception (a traceback mid-run)."""
    from kdbench.teachers.cache_entry import BadEntry

    blob = encode_entry({"values": torch.zeros(4, 3), "filled": torch.ones(4, dtype=torch.uint8)}, {"epoch": 1})
    n = int.from_bytes(blob[4:12], "little")
    good, payload = json.loads(blob[12 : 12 + n]), blob[12 + n :]

    def variants():
        for key in good:
            for odd in ODD_VALUES:
                yield {**good, key: odd}
        for field in ("dtype", "shape", "offset", "nbytes"):
            for odd in ODD_VALUES:
                yield {**good, "tensors": {**good["tensors"], "values": {**good["tensors"]["values"], field: odd}}}
        yield {**good, "tensors": {**good["tensors"], "extra": good["tensors"]["values"]}}

    headers = [json.dumps(h).encode() for h in variants()] + [b"[" * 20000 + b"]" * 20000]
    for raw in headers:
        with contextlib.suppress(BadEntry):
            parse_entry(blob[:4] + len(raw).to_bytes(8, "little") + raw + payload)


def _dev_zero(entry: Path) -> None:
    entry.unlink()
    entry.symlink_to("/dev/zero")


def _fifo(entry: Path) -> None:
    entry.unlink()
    os.mkfifo(entry)


def _sparse_4_gib(entry: Path) -> None:
    with open(entry, "r+b") as f:  # the good entry, then 4 GiB of holes: no disk used, but memory if read
        f.truncate(4 << 30)


def _trailing_bytes(entry: Path) -> None:
    with open(entry, "ab") as f:
        f.write(b"\0" * 4096)


def _kdbench_run_isolated(filled: dict, cache: Path, tmp_path: Path, timeout_s: float = 180):
    """`kdbench run` as a subprocess limited to 4 GiB of address space and `timeout_s`: a regression that reads
    /dev/zero or a huge file ends in a MemoryError or the timeout (a failed test), not in the machine's memory."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    args = [sys.executable, "-m", "kdbench", "run", *ARGS, "--zoo-dir", str(filled["zoo"]), "--results-dir",
            str(tmp_path / "results"), "--cache-dir", str(cache)]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, preexec_fn=limit,
                              env={**os.environ, "COLUMNS": "1000"})
    except subprocess.TimeoutExpired:
        pytest.fail(f"kdbench run did not end within {timeout_s} s (reading the entry without end?)")
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout), done.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks to devices and FIFOs are POSIX")
@pytest.mark.parametrize("make,isolated", [(_dev_zero, True), (_sparse_4_gib, True), (_fifo, False),
                                           (_trailing_bytes, False)],
                         ids=["symlink to /dev/zero", "4 GiB sparse file", "FIFO", "bytes past the payload"])
def test_an_entry_that_never_ends_is_refused_without_reading_it(make, isolated, filled, tmp_path, in_process):
    cache, entry = _cache_copy(filled, tmp_path)
    make(entry)
    if isolated:  # a regression would fill memory: in a process of its own, with a memory limit
        record, stderr = _kdbench_run_isolated(filled, cache, tmp_path)
    else:  # a regression would wait forever (a FIFO opened without a writer): a thread with a timeout
        record, stderr = _kdbench_run(in_process, filled, cache, tmp_path, timeout_s=120)
    _assert_recomputed_and_replaced(record, stderr, entry, filled)


# ---------------------------------------------------------------------------------------------------------
# Symlinks out of the cache folder


def _digests(folder: Path) -> dict[str, str]:
    """Every file under `folder` by relative path, with its content's sha256 and its modification time."""
    return {str(p.relative_to(folder)): f"{hashlib.sha256(p.read_bytes()).hexdigest()} {p.stat().st_mtime_ns}"
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_namespace_folder_linked_out_of_the_cache_is_not_read_nor_written_through(filled, tmp_path, in_process):
    cache = tmp_path / "cache"
    shutil.copytree(filled["cache"], cache)
    ns = cache / filled["entry"].parent
    elsewhere = tmp_path / "colleague" / ns.name
    shutil.move(ns, elsewhere)  # the colleague's own folder, with a good entry in it
    ns.symlink_to(elsewhere, target_is_directory=True)
    before = _digests(elsewhere.parent)
    record, stderr = _kdbench_run(in_process, filled, cache, tmp_path)
    assert record["teacher_cache"]["hits"] == 0  # not read
    assert _digests(elsewhere.parent) == before  # nothing written, removed or touched there
    assert ns.is_dir() and not ns.is_symlink()  # a real folder of the cache's own in the link's place
    _assert_recomputed_and_replaced(record, stderr, ns / filled["entry"].name, filled, named=ns)


def test_an_entry_linked_out_of_the_cache_is_not_read_nor_written_through(filled, tmp_path, in_process):
    cache = tmp_path / "cache"
    shutil.copytree(filled["cache"], cache)
    entry = cache / filled["entry"]
    elsewhere = tmp_path / "colleague" / entry.name
    elsewhere.parent.mkdir()
    shutil.move(entry, elsewhere)
    entry.symlink_to(elsewhere)
    before = _digests(elsewhere.parent)
    record, stderr = _kdbench_run(in_process, filled, cache, tmp_path)
    assert record["teacher_cache"]["hits"] == 0
    assert _digests(elsewhere.parent) == before
    _assert_recomputed_and_replaced(record, stderr, entry, filled)


def _filled_cache(root: Path, seed: int) -> TeacherOutputCache:
    cache = TeacherOutputCache(root, {"seed": seed}, num_train=100, epochs=1, cap=10**9)
    cache.begin_epoch(1)
    cache.store({"logits": torch.randn(100, 10)}, torch.arange(100))
    cache.end_epoch()
    return cache


@pytest.fixture
def linked(tmp_path: Path) -> dict:
    """A cache with one namespace of its own, one namespace folder linked out of it and one entry linked out."""
    root, elsewhere = tmp_path / "cache", tmp_path / "colleague"
    own = _filled_cache(root, 0)
    theirs = _filled_cache(elsewhere, 1)  # a whole namespace in the colleague's folder
    (root / theirs.namespace).symlink_to(theirs.dir, target_is_directory=True)
    loose = _filled_cache(elsewhere, 2)._path("logits")
    (own.dir / "e00002-logits.kdtc").symlink_to(loose)
    return {"root": root, "elsewhere": elsewhere, "own": own, "theirs": theirs, "before": _digests(elsewhere)}


def test_cache_list_counts_only_what_lies_in_the_cache(linked, in_process, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    listed = in_process("cache", "list", "--cache-dir", str(linked["root"]))
    assert listed.returncode == 0, listed.stderr
    assert linked["own"].namespace in listed.stdout and linked["theirs"].namespace not in listed.stdout
    [row] = cache_folder.list_namespaces(linked["root"])
    assert row["entries"] == 1 and row["bytes"] == linked["own"]._path("logits").stat().st_size


def test_cache_list_never_waits_on_a_key_file_that_never_ends(linked, in_process, monkeypatch):
    own, other = linked["own"].dir, _filled_cache(linked["root"], 3).dir
    (own / "key.json").unlink()
    os.mkfifo(own / "key.json")  # open() of it would wait for a writer forever
    (other / "key.json").unlink()
    (other / "key.json").symlink_to("/dev/zero")
    monkeypatch.setenv("COLUMNS", "300")
    done: list = []
    worker = threading.Thread(target=lambda: done.append(in_process("cache", "list", "--cache-dir",
                                                                    str(linked["root"]))), daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "kdbench cache list did not end: it read a FIFO or /dev/zero"
    assert done[0].returncode == 0 and own.name in done[0].stdout and other.name in done[0].stdout


def test_cache_clear_removes_links_never_their_targets(linked, in_process):
    cleared = in_process("cache", "clear", "--cache-dir", str(linked["root"]))
    assert cleared.returncode == 0 and "removed 1 entries" in " ".join(cleared.stderr.split())
    assert list(linked["root"].iterdir()) == []  # links removed too
    assert _digests(linked["elsewhere"]) == linked["before"]  # the colleague's files are all there, untouched


def test_eviction_never_deletes_through_links(linked):
    assert cache_folder.evict(linked["root"], cap=0) == 1  # the cache's own entry only
    assert not linked["own"]._path("logits").exists()
    assert _digests(linked["elsewhere"]) == linked["before"]
