"""Time limits that let long runs finish: the warning signal, how often a job may requeue, and a pre-check.

SLURM sends submitit's warning signal (USR2) `signal_delay_s` before the limit; the job then requeues itself
and resumes from the run's last epoch checkpoint. submitit's default delay (90 s) is longer than a 1-minute
limit, and its default of 3 requeues after timeouts stops a 240-epoch run on a 4-hour partition long before
it ends. Here the delay is a tenth of the limit (at most 90 s, never under the time a checkpoint and the
requeue take), a job may requeue `max_requeues` times, and an attempt that saved nothing counts toward
failure instead: kdbench.store.liveness.STALLED_ATTEMPTS_TO_FAIL of them in a row and the run fails with the
line of kdbench.sweep.stalls (an epoch longer than the limit would otherwise requeue forever).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kdbench.store.records import RunStore, UnreadableHistory
from kdbench.sweep.grid import SweepRun

# What the warning must leave at least: pickling the job and `scontrol requeue` (the engine already saved the
# last finished epoch), plus a few seconds of scheduler skew.
CHECKPOINT_FLOOR_S = 5
MAX_SIGNAL_DELAY_S = 90
# Enough for 240 epochs at one epoch per attempt (the worst case a pre-check lets through without a warning).
DEFAULT_MAX_REQUEUES = 300


def signal_delay_s(timeout_min: float, checkpoint_s: float = CHECKPOINT_FLOOR_S) -> int:
    """Seconds before the limit at which the job is told to checkpoint and requeue."""
    limit_s = timeout_min * 60
    return int(round(max(min(MAX_SIGNAL_DELAY_S, limit_s / 10), checkpoint_s, CHECKPOINT_FLOOR_S)))


def usable_s(timeout_min: float) -> float:
    """Seconds of one attempt before its warning signal."""
    return timeout_min * 60 - signal_delay_s(timeout_min)


def _kind(config: dict[str, Any]) -> str:
    """What sets an epoch's cost: dataset, its parameters, student and batch size."""
    return json.dumps([config.get("dataset"), config.get("data_params"), config.get("student"),
                       (config.get("recipe") or {}).get("batch_size")], sort_keys=True, default=str)


def measured_epoch_s(runs: list[SweepRun], store: RunStore) -> dict[str, float]:
    """Run id → one epoch's time in seconds, where known: from the run's own metrics (a resumed run), else the
    slowest mean epoch of the records in the store that share its dataset, data parameters, student and
    batch size."""
    by_kind: dict[str, float] = {}
    for record in store.iter_records():
        epoch_s = (record.get("timing") or {}).get("epoch_s_mean")
        if epoch_s:
            kind = _kind(record.get("config") or {})
            by_kind[kind] = max(by_kind.get(kind, 0.0), float(epoch_s))
    out: dict[str, float] = {}
    for run in runs:
        try:  # bounded, and never through a link out of the results folder
            times = [epoch.get("epoch_s") or 0.0 for epoch in store.read_history(run.run_id)]
        except UnreadableHistory:  # no measurement to trust: as for a run that has none yet
            times = []
        if any(times):
            out[run.run_id] = max(times)
        elif _kind(run.config.to_dict()) in by_kind:
            out[run.run_id] = by_kind[_kind(run.config.to_dict())]
    return out


def limit_warnings(runs: list[SweepRun], results_dir: str | Path | None, timeout_min: float) -> list[str]:
    """A line per run whose measured epoch does not fit in one attempt (it would never make progress).

    Runs with no measurement yet get no warning: nothing here predicts an epoch's time without running one.
    """
    window = usable_s(timeout_min)
    by_run = {run.run_id: run for run in runs}
    return [f"run {rid} ({by_run[rid].label()}): one epoch took {epoch_s:.0f}s, longer than the {window:.0f}s "
            f"an attempt has under --timeout-min {timeout_min:g}; it cannot progress (raise --timeout-min)"
            for rid, epoch_s in measured_epoch_s(runs, RunStore(results_dir)).items() if epoch_s >= window]
