"""A run that needs a teacher another process is training says so at once ("another process is training it;
waiting"), not after the wait: before issue #29 the line never appeared and the run sat silent for minutes."""

from __future__ import annotations

import multiprocessing as mp
import threading
from pathlib import Path

from filelock import FileLock

from kdbench.core.progress import Reporter
from kdbench.execute.create_teacher import create_teacher
from kdbench.execute.resolve import resolve_teacher
from kdbench.teachers.zoo import TeacherZoo

ARCH = "cifar_resnet8"  # trains an epoch of 8-pixel digits in about a second
TINY = {"epochs": 1, "sets": ["data.image_size=8"], "device": "cpu"}


class Watch(Reporter):
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.waiting = threading.Event()

    def log(self, message: str) -> None:
        self.lines.append(message)
        if "another process is training it" in message:
            self.waiting.set()


def _hold(lock_path: str, held, release) -> None:
    """Another process in the middle of training the teacher: it holds the entry's lock until told."""
    with FileLock(lock_path):
        held.set()
        release.wait(timeout=300)


def test_a_run_waiting_for_a_teacher_another_process_trains_says_so_while_it_waits(tmp_path):
    key = resolve_teacher(ARCH, "digits", epochs=1, sets=TINY["sets"])
    entry = TeacherZoo(tmp_path).entry_dir(key)
    entry.mkdir(parents=True)
    ctx = mp.get_context("spawn")
    held, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(entry) + ".lock", held, release))
    holder.start()
    try:
        assert held.wait(timeout=120)
        watch, got = Watch(), {}
        waiter = threading.Thread(target=lambda: got.update(card=create_teacher(ARCH, zoo_dir=tmp_path,
                                                                                  reporter=watch, **TINY)[1]))
        waiter.start()
        said_while_held = watch.waiting.wait(timeout=60)
        assert holder.is_alive() and not got  # the other process still holds the lock: nothing trained yet
    finally:
        release.set()
        holder.join(timeout=60)
    waiter.join(timeout=300)
    assert said_while_held, watch.lines
    assert str(entry) in next(line for line in watch.lines if "another process is training it" in line)
    # The holder left without a teacher (it "died"): the waiter trained it itself.
    assert got["card"]["cached"] is False and Path(got["card"]["path"]) == entry
