"""A deadline for a test's block: a regression that hangs (reading /dev/zero, a FIFO, a grid of a million runs,
a `--wait` on a job that never starts) fails its test instead of hanging the suite."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager


class Overran(BaseException):
    """Raised in the main thread when a block overruns its deadline. A BaseException, so that the code under test
    cannot swallow it in an `except Exception`."""


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Interrupt the enclosed block after `seconds` with Overran (the main thread's SIGALRM: it also breaks a
    blocking open() of a FIFO or a read of /dev/zero)."""

    def overrun(signum: int, frame: object) -> None:
        raise Overran(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, overrun)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
