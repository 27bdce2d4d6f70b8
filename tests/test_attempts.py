"""A run's attempt history (kdbench.store.attempts): what a signal handler writes, and totals across attempts."""

from __future__ import annotations

import json

from kdbench.execute.resolve import RunOptions, resolve_config
from kdbench.store import attempts
from kdbench.store.record_builder import new_record
from kdbench.store.records import RunStore
from kdbench.sweep.signals import warning_reason


def _record():
    return new_record(resolve_config(RunOptions(method="ce", student="resnet18", epochs=3)))


def test_an_interruption_marks_the_record_and_the_next_attempt_carries_the_history(tmp_path):
    store = RunStore(tmp_path)
    first = _record()
    attempts.begin(first, None, store, {"torch_threads": 1})
    store.write(first)
    assert warning_reason() == "timeout"  # USR2 with no SIGTERM before it: the time limit's warning
    store.metrics_path(first["run_id"]).write_text(json.dumps({"epoch": 1, "top1": 10.0, "losses": {}}) + "\n")
    attempts.interrupt("timeout")  # what the USR2 / SIGTERM handlers call
    assert warning_reason() == "timeout"
    on_disk = store.load(first["run_id"])
    assert on_disk["status"] == "interrupted"
    (attempt,) = on_disk["attempts"]
    assert attempt["reason"] == "timeout" and attempt["epochs_at_start"] == 0 and attempt["epochs_done"] == 1
    attempts.end(first, "cancelled")  # the exit that follows keeps the first reason
    assert first["attempts"][0]["reason"] == "timeout"
    attempts.finish()

    store.checkpoint_path(first["run_id"]).write_bytes(b"")  # the next attempt resumes
    second = _record()
    attempts.begin(second, on_disk, store)
    assert second["started_at"] == attempt["started_at"] and second["attempts"][1]["epochs_at_start"] == 1
    attempts.end(second, "completed")
    timing = attempts.totals(second, {"train_s": 2.0, "total_s": 3.0})
    assert timing["attempts"] == 2
    assert timing["total_s"] == 3.0 + attempt["duration_s"] and timing["last_attempt"]["total_s"] == 3.0
    attempts.finish()


def test_a_record_left_running_by_a_killed_process_is_closed_as_lost(tmp_path):
    store = RunStore(tmp_path)
    killed = _record()
    attempts.begin(killed, None, store)
    attempts.finish()  # the process vanished: nothing closed the attempt
    again = _record()
    attempts.begin(again, killed, store)
    assert [a["reason"] for a in again["attempts"]] == ["lost", None]
    assert attempts.stop_reason(RuntimeError("boom")) == "failed"
    attempts.finish()
