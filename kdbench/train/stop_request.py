"""A request, made from a signal handler, that training stop at the end of its current optimizer step.

A signal arrives between any two bytecodes: in the middle of a step (after the optimizer stepped, before the
scheduler did), a checkpoint would hold no consistent state. So a handler (kdbench.sweep.signals, `kdbench run`'s)
asks :func:`request`; the engine, at the end of the step it is in, saves a step-level checkpoint
(kdbench.train.checkpoint) and then calls what the handler asked to be called (e.g. submitit's requeue and exit).
Outside an epoch's steps (start-up, evaluation, between epochs) there is no step to finish: `request` says so
and the handler acts at once, as before (the last epoch's checkpoint is the one a resumed run starts from).

One process-wide request: a signal handler has no handle on the running engine. Data-parallel engines do not
take requests (their ranks would stop at different steps): the handler acts at once there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

_in_steps = False
_pending: list[Callable[[], None] | None] = []


def request(then: Callable[[], None] | None = None) -> bool:
    """Ask the engine to save where it is at the end of the current step, then call `then` (None: go on
    training). False when no engine is inside an epoch's steps: nothing was asked, the caller acts now."""
    if not _in_steps:
        return False
    _pending.append(then)
    return True


def pending() -> bool:
    return bool(_pending)


def take() -> list[Callable[[], None]]:
    """The requests made since the last call (their `then`s, in order), clearing them."""
    thens = [t for t in _pending if t is not None]
    _pending.clear()
    return thens


@contextmanager
def steps_running() -> Iterator[None]:
    """The engine is inside an epoch's steps: requests are taken until the block ends. One made too late for the
    engine to see (in the last bytecodes of the block) is not lost: what it asked for is done as the block ends,
    as a request outside the steps would have been at once."""
    global _in_steps
    _in_steps = True
    try:
        yield
    finally:
        _in_steps = False
        for then in take():
            then()
