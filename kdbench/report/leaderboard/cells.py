"""Display strings of single cells: `mean ± std (n)`, parameter counts, inference and training times."""

from __future__ import annotations

from typing import Any

from kdbench.report.leaderboard.board import DECIMALS
from kdbench.report.leaderboard.runs import is_missing


def format_cell(mean: float, std: float, n: int, flag: str = "") -> str:
    """`97.12 ± 0.31 (3)`; one seed has no std: `97.12 (1)`; no run: `—`."""
    if n == 0 or is_missing(mean):
        return "—"
    spread = "" if is_missing(std) else f" ± {std:.{DECIMALS}f}"
    return f"{mean:.{DECIMALS}f}{spread} ({n}){flag}"


def published_cell(top1: float, std: float = float("nan"), runs: Any = None) -> str:
    """A published number: `73.33 ± 0.25 (5)`; std and run count only where the paper gives them."""
    spread = "" if is_missing(std) else f" ± {std:.{DECIMALS}f}"
    count = "" if is_missing(runs) else f" ({int(runs)})"
    return f"{top1:.{DECIMALS}f}{spread}{count}"


def fmt_params(v: Any) -> str:
    """A parameter count: `11.17M`, `84.3k`."""
    if is_missing(v):
        return "—"
    v = float(v)
    return f"{v / 1e6:.2f}M" if v >= 1e5 else f"{v / 1e3:.1f}k"


def fmt_infer(ms: Any, batch: Any, device: Any) -> str:
    """Inference time per image with the batch size and device it was measured at: `0.42 (b=256, cpu)`."""
    if is_missing(ms):
        return "—"
    ms = f"{ms:.2f}" if ms >= 0.1 else f"{ms:.3g}"
    where = ", ".join(str(x) for x in (f"b={int(batch)}" if not is_missing(batch) else "b=mixed", device)
                      if not is_missing(x))
    return f"{ms} ({where})"


def fmt_seconds(v: Any) -> str:
    """A duration in s, min or h."""
    if is_missing(v):
        return "—"
    v = float(v)
    if v < 120:
        return f"{v:.1f} s"
    return f"{v / 60:.1f} min" if v < 7200 else f"{v / 3600:.1f} h"


def fmt_any(v: Any) -> str:
    """Any cell of the runs table: floats to the table's decimals, missing as `—`."""
    if is_missing(v):
        return "—"
    if isinstance(v, float):
        return f"{v:.{DECIMALS}f}"
    return str(v)
