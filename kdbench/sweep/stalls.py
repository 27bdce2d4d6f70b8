"""The one line that stops a run whose attempts no longer advance it, and the time limit that would.

An attempt can only keep what it saves before its time limit's warning: start-up, then the steps up to the next
save (the rest of the epoch, while saves are per epoch). When that no longer fits, every attempt ends where the
last one did; after kdbench.store.liveness.STALLED_ATTEMPTS_TO_FAIL of them the run stops with this line instead
of requeueing forever.
"""

from __future__ import annotations

import math
from typing import Any

from kdbench.sweep.time_limits import usable_s

# Room for a loaded node: an attempt sized exactly to the last one's times would stall again when a little slower.
MARGIN = 1.25
# Evaluation after the epoch and saving its checkpoint come before the save counts: a few seconds on the sets a
# short limit is used with, covered by the margin and this floor.
SAVE_FLOOR_S = 10.0


def timeout_min_for(need_s: float) -> int:
    """The least whole --timeout-min whose attempt has `need_s` seconds before its warning signal."""
    minutes = max(1, math.ceil(need_s / 60))
    while usable_s(minutes) < need_s:
        minutes += 1
    return minutes


def steps_to_next_save(spent: dict[str, Any]) -> int | None:
    """Steps an attempt must take from its saved position before anything more is saved: one where the engine
    saves the step in progress on the time limit's signal (a one-process run: kdbench.train.checkpoint), else the
    rest of the epoch (a data-parallel run saves at epoch ends)."""
    if spent.get("saves_steps"):
        return 1
    per_epoch = spent.get("steps_per_epoch")
    if not per_epoch:
        return None
    return max(1, int(per_epoch) - int((spent.get("position") or {}).get("step") or 0))


def stall_line(stalled: int, reason: str, spent: dict[str, Any], timeout_min: float) -> str:
    """`stalled` attempts in a row ended at the same saved position, the last one on `reason`; `spent` is what
    the last one measured (kdbench.store.attempts.spent)."""
    pos = spent.get("position") or {}
    head = (f"no progress in {stalled} attempts in a row under --timeout-min {timeout_min:g} (each ended at epoch "
            f"{pos.get('epoch', 0)} step {pos.get('step', 0)}; the last on {reason})")
    startup_s, step_s = spent.get("startup_s"), spent.get("step_s")
    if startup_s is None:
        starting = spent.get("starting_s")
        took = f"after {starting:.1f} s" if starting is not None else "before the limit"
        need = (starting or 0.0) + SAVE_FLOOR_S
        return (f"{head}: start-up had not finished {took} in the last attempt; --timeout-min "
                f"{timeout_min_for(need * MARGIN)} or more may let it progress")
    steps = steps_to_next_save(spent)
    if step_s is None or steps is None:
        # Not one step ended: a step takes longer than the attempt trained, which is all that is known of it.
        training_s = spent.get("training_s") or 0.0
        need = startup_s + training_s + SAVE_FLOOR_S
        return (f"{head}: start-up took {startup_s:.1f} s and no step finished in the {training_s:.1f} s after it "
                f"in the last attempt; --timeout-min {timeout_min_for(need * MARGIN)} or more may let it progress")
    need = startup_s + steps * step_s + SAVE_FLOOR_S
    steps_text = f"{steps} step{'s' if steps != 1 else ''}"
    return (f"{head}: start-up took {startup_s:.1f} s and one step {step_s:.2f} s in the last attempt "
            f"({steps_text} to the next save: {steps * step_s:.0f} s); --timeout-min {timeout_min_for(need * MARGIN)} "
            "would let it progress")
