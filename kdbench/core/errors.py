"""Errors a person can act on.

A :class:`UserError` is a mistake in what the user asked for (an unknown name, a number out of range, a missing
dataset). The CLI prints its message as one line and exits with code 2, without a traceback. Anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable


class UserError(Exception):
    """A mistake in the user's request; the message says what to do about it."""

    exit_code = 2


class RunDiverged(Exception):
    """Raised by the engine when a loss is not finite; the run is recorded as `diverged`."""

    def __init__(self, epoch: int, step: int, losses: dict[str, float]) -> None:
        bad = ", ".join(f"{k}={v}" for k, v in losses.items())
        super().__init__(f"non-finite loss at epoch {epoch} step {step}: {bad}")
        self.epoch = epoch
        self.step = step
        self.losses = losses


def shortened(text: str, width: int = 40) -> str:
    """`text` cut to about `width` characters, saying how long it was: an error line quoting a value a file or
    flag gave stays one line when that value is 5,000 digits long."""
    return text if len(text) <= width else f"{text[:width - 10]}…{text[-6:]} ({len(text)} characters)"


def unknown_name(kind: str, name: str, valid: Iterable[str], max_listed: int = 40) -> UserError:
    """A UserError for an unknown `name`, suggesting the closest valid names and listing the valid ones."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    listed = ", ".join(valid[:max_listed]) + (f", … ({len(valid)} in all)" if len(valid) > max_listed else "")
    return UserError(f"unknown {kind} '{shortened(name)}'.{hint} Valid: {listed}")


def check_range(
    name: str, value: float, low: float | None = None, high: float | None = None, *, low_open: bool = False
) -> None:
    """Raise a UserError saying the allowed range when `value` falls outside [low, high] (or (low, high]).

    NaN and ±inf are always refused (a NaN compares false with every bound, so it would slip through silently,
    and an infinite weight or rate only makes the run diverge later)."""
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf)" if high is None else f"{high:g}]"
    allowed = f"{'(' if low_open or low is None else '['}{lo}, {hi}"
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{name}={value:g} is not a finite number; allowed: finite values in {allowed}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and value > high
    if too_low or too_high:
        raise UserError(f"{name}={value:g} is out of range; allowed: {allowed}")
