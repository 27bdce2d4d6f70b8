"""kdbench.core.storage's bounded reads: a device or FIFO is refused, never read forever; `inside` resolves links."""

import os
import threading
from pathlib import Path

import pytest

from kdbench.core.storage import UnsafeFile, inside, read_regular_bytes, sha256_file


def test_sha256_of_a_symlink_to_dev_zero_is_refused_not_read_forever(tmp_path: Path) -> None:
    link = tmp_path / "model.safetensors"
    link.symlink_to("/dev/zero")
    result: list[BaseException] = []
    worker = threading.Thread(target=lambda: _catch(result, sha256_file, link), daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "sha256_file read /dev/zero without end"
    assert isinstance(result[0], UnsafeFile) and "not a regular file" in str(result[0])


def test_a_fifo_without_a_writer_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "entry.kdtc"
    os.mkfifo(fifo)
    result: list[BaseException] = []
    worker = threading.Thread(target=lambda: _catch(result, read_regular_bytes, fifo), daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():  # unblock the reader so the test process can end, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("read_regular_bytes waited on a FIFO for a writer")
    assert isinstance(result[0], UnsafeFile) and "not a regular file" in str(result[0])


def test_reads_stop_at_the_declared_size(tmp_path: Path) -> None:
    f = tmp_path / "blob"
    f.write_bytes(b"x" * 100)
    assert read_regular_bytes(f, max_bytes=100) == b"x" * 100
    with pytest.raises(UnsafeFile, match="more than the 99 declared"):
        read_regular_bytes(f, max_bytes=99)
    with pytest.raises(UnsafeFile):
        sha256_file(f, max_bytes=10)
    assert sha256_file(f) == sha256_file(f, chunk=7)


def test_inside_follows_symlinks_out_of_the_root(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "runs", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / "own").mkdir()
    (root / "link_out").symlink_to(elsewhere)
    (root / "link_in").symlink_to(root / "own")
    assert inside(root, root / "own")
    assert inside(root, root / "link_in")
    assert not inside(root, root / "link_out")
    assert not inside(root, root / "link_out" / "result.json")
    loop = root / "loop"
    loop.symlink_to(loop)
    assert not inside(root, loop)


def _catch(into: list[BaseException], fn, *args) -> None:  # noqa: ANN001
    try:
        fn(*args)
    except BaseException as e:  # noqa: BLE001 - handed to the test thread to assert on
        into.append(e)
