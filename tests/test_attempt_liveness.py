"""Liveness of a run across attempts (issue #39): counting the attempts that saved nothing, the line that stops such
a run, each attempt's progress in `kdbench status --json`, the start-up phases in the record, and a resumed run that
does not evaluate its given teacher again. The stall end to end on SLURM is in tests/test_sweep_slurm_liveness.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from kdbench.core.progress import Reporter
from kdbench.store.liveness import stalled_attempts
from kdbench.sweep.stalls import stall_line, timeout_min_for

TINY = ["--batch-size", "256", "--set", "data.image_size=8"]


def _attempt(start: int, end: int | None, reason: str | None = "timeout", step_end: int = 0) -> dict[str, Any]:
    return {"position_at_start": {"epoch": start, "step": 0}, "reason": reason,
            "position": None if end is None else {"epoch": end, "step": step_end}}


@pytest.mark.parametrize(("history", "stalled"), [
    ([_attempt(0, 3), _attempt(3, 6)], 0),
    ([_attempt(0, 3), _attempt(3, 3)], 1),
    ([_attempt(0, 3), _attempt(3, 3), _attempt(3, 3)], 2),
    # killed outright (no end): judged by where the next attempt started
    ([_attempt(0, None, "lost"), _attempt(0, 0)], 2),
    ([_attempt(0, None, "lost"), _attempt(2, 2)], 1),
    # steps saved within an epoch are progress (step checkpoints)
    ([_attempt(3, 3), _attempt(3, 3, step_end=40)], 0),
    # a completed attempt ends the count; an older record's epochs_at_start / epochs_done are read as positions
    ([_attempt(0, 3, "completed"), _attempt(0, 0)], 1),
    ([{"epochs_at_start": 4, "epochs_done": 4, "reason": "timeout"}, _attempt(4, 4)], 2),
    ([{"epochs_at_start": 2, "epochs_done": 4, "reason": "timeout"}, _attempt(4, 4)], 1),
    # a preemption or scancel that saved nothing says nothing of the time limit: skipped, not counted
    ([_attempt(0, 3), _attempt(3, 3, "preempted"), _attempt(3, 3, "cancelled")], 0),
    ([_attempt(0, 3), _attempt(3, 3), _attempt(3, 3, "preempted"), _attempt(3, 3)], 2),
])
def test_attempts_that_saved_nothing_are_counted_from_the_records(history, stalled):
    assert stalled_attempts(history) == stalled


def test_the_stall_line_says_what_the_last_attempt_spent_and_the_limit_that_lets_it_progress():
    assert timeout_min_for(54) == 1 and timeout_min_for(55) == 2  # a 1-minute attempt has 54 s before its warning
    spent = {"position": {"epoch": 29, "step": 0}, "startup_s": 20.0, "step_s": 0.5, "steps": 80,
             "steps_per_epoch": 120}
    line = stall_line(2, "timeout", spent, 1)
    assert "\n" not in line
    assert "no progress in 2 attempts in a row under --timeout-min 1" in line and "epoch 29 step 0" in line
    assert "start-up took 20.0 s and one step 0.50 s" in line
    # 20 s + 120 steps x 0.5 s + 10 s of evaluation and save = 90 s, with a quarter more: 112.5 s -> 3 minutes
    assert line.endswith("--timeout-min 3 would let it progress")
    from kdbench.cli.status_cmd import progress_cell
    from kdbench.sweep.status import attempt_progress

    shown = progress_cell(attempt_progress({"attempts": [_attempt(i, i + 1) for i in range(7)] + [_attempt(7, 7)]}))
    assert shown == "(3 earlier) 3→4 4→5 5→6 6→7 7→7!"
    still_starting = stall_line(2, "timeout", {"position": {"epoch": 0, "step": 0}, "startup_s": None,
                                              "starting_s": 50.0}, 1)
    assert "start-up had not finished after 50.0 s" in still_starting and "--timeout-min 2 or more" in still_starting


class _StopAtEpoch(Reporter):
    """Stops the run (as Ctrl-C would) when epoch `epoch` has trained: the epoch before it is saved."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def phase_end(self, summary: dict[str, Any] | None = None) -> None:
        if summary and summary.get("epoch") == self.epoch:
            raise KeyboardInterrupt


def _common(dirs, **options) -> dict[str, Any]:
    return {"student": "resnet18", "epochs": 3, "batch_size": 256, "sets": ["data.image_size=8"],
            "results_dir": dirs["results"], "zoo_dir": dirs["zoo"], "data_root": dirs["data"], "device": "cpu",
            **options}


def _stopped_in_second_epoch(dirs, **options) -> dict:
    """The run's record after an attempt stopped in its 2nd epoch (the 1st saved)."""
    import kdbench
    from kdbench.store.records import RunStore

    with pytest.raises(KeyboardInterrupt):
        kdbench.run(reporter=_StopAtEpoch(2), **_common(dirs, **options))
    store = RunStore(dirs["results"])
    (record,) = [r for r in store.iter_records() if r["status"] == "failed"]
    return record


def test_status_json_shows_each_attempts_progress_and_the_record_its_start_up_phases(dirs, in_process):
    from kdbench.store.records import RunStore

    first = _stopped_in_second_epoch(dirs, method="ce")
    assert [a["position"] for a in first["attempts"]] == [{"epoch": 1, "step": 0}]
    # The sweep runs the same config (the same run id): it resumes the stopped run in a second attempt.
    result = CliRunner().invoke(_app(), ["sweep", "--methods", "ce", "--students", "resnet18", "--seeds", "0",
                                         "--epochs", "3", *TINY, "--executor", "debug", "--device", "cpu",
                                         "--results-dir", str(dirs["results"]), "--zoo-dir", str(dirs["zoo"])])
    assert result.exit_code == 0, result.output
    record = RunStore(dirs["results"]).load(first["run_id"])
    status = CliRunner().invoke(_app(), ["status", "--results-dir", str(dirs["results"]), "--json"])
    assert status.exit_code == 0, status.output
    (run,) = json.loads(status.stdout)["runs"]
    assert run["run_id"] == record["run_id"] and run["state"] == "completed"
    assert [(a["from"], a["to"], a["reason"]) for a in run["attempts"]] == [
        ({"epoch": 0, "step": 0}, {"epoch": 1, "step": 0}, "failed"),
        ({"epoch": 1, "step": 0}, {"epoch": 3, "step": 0}, "completed")]
    assert all(a["startup_s"] > 0 and a["steps"] > 0 and a["step_s"] > 0 for a in run["attempts"])
    table = in_process("status", "--results-dir", str(dirs["results"]))
    assert table.returncode == 0 and "0→1 1→3" in table.stderr, table.stderr

    timing = record["timing"]  # the resumed attempt's own phases, and start-up summed over both attempts
    assert {"checks_s", "configure_s", "data_s", "teacher_s", "lock_s", "record_s", "model_s", "cache_s",
            "loaders_s", "resume_s"} <= set(timing["startup"])
    assert timing["startup"] == record["attempts"][-1]["startup"]
    assert timing["startup_s"] == pytest.approx(sum(a["startup_s"] for a in record["attempts"]), abs=1e-3)
    assert first["attempts"][0]["startup_s"] > 0  # written when its first epoch began, before it was stopped


def test_a_resumed_run_does_not_evaluate_its_given_teacher_again(dirs):
    import kdbench

    teacher = kdbench.run("ce", student="resnet18", epochs=1, batch_size=256, sets=["data.image_size=8"],
                          results_dir=dirs["results"], zoo_dir=dirs["zoo"], data_root=dirs["data"], device="cpu")
    options = {"method": "kd", "teacher": f"run:{teacher['run_id']}"}
    first = _stopped_in_second_epoch(dirs, **options)
    record = kdbench.run(**_common(dirs, **options))
    assert first["teacher_metrics"]["evaluated"] == "this attempt"
    assert record["teacher_metrics"]["evaluated"] == "earlier attempt"  # its test-set metrics were kept
    assert record["teacher_metrics"] == first["teacher_metrics"] | {"evaluated": "earlier attempt"}
    assert len(record["attempts"]) == 2 and record["metrics"]["resumed_from_epoch"] == 1


def _app():
    from kdbench.cli.app import _register_commands, app

    _register_commands()
    return app


def test_a_stall_seen_before_the_attempt_opened_its_record_fails_the_stored_record(tmp_path):
    """The warning can come during start-up (imports, data, teacher), before the attempt has an entry: it is
    counted from the stored record, and giving up writes that record `failed` with the line."""
    from kdbench.execute.resolve import RunOptions, resolve_config
    from kdbench.store import attempts
    from kdbench.store.record_builder import new_record
    from kdbench.store.records import RunStore

    store = RunStore(tmp_path)
    record = new_record(resolve_config(RunOptions(method="ce", student="resnet18", epochs=3)))
    record.update(status="interrupted", attempts=[_attempt(0, 0)])
    store.write(record)
    attempts.finish()  # no attempt open in this process
    stalled, spent = attempts.stalled_so_far(store, record["run_id"], "timeout")
    assert stalled == 2 and spent["startup_s"] is None and spent["starting_s"] > 0
    assert attempts.stalled_so_far(store, record["run_id"], "preempted")[0] == 1  # a preemption is no stall
    line = stall_line(stalled, "timeout", spent, 1)
    attempts.give_up(line, store, record["run_id"])
    stored = store.load(record["run_id"])
    assert stored["status"] == "failed" and stored["error"] == line
    assert [a["reason"] for a in stored["attempts"]] == ["timeout", "failed"]


def test_the_saved_position_reads_the_step_of_a_step_checkpoint(tmp_path):
    # A stop signal saves the step in progress (kdbench.train.checkpoint): an attempt that saved steps 1..S of
    # epoch E+1 made progress, and the position says so, read without loading the checkpoint's tensors.
    import torch

    from kdbench.store.liveness import saved_position
    from kdbench.store.records import RunStore
    from kdbench.train import rng_state
    from kdbench.train.checkpoint import StepPosition, save_checkpoint

    store, run_id = RunStore(tmp_path), "0123456789abcdef"
    store.run_dir(run_id).mkdir(parents=True)
    epoch = json.dumps({"epoch": 1, "top1": 10.0, "losses": {"ce": 2.0}})
    store.metrics_path(run_id).write_text(epoch + "\n")
    model = torch.nn.Linear(2, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    assert saved_position(store, run_id) == {"epoch": 1, "step": 0}  # no checkpoint yet
    position = StepPosition(2, 7, 0.1, 0.1, {"ce": 1.0, "total": 1.0}, torch.tensor(3), 64, rng_state.capture())
    save_checkpoint(store.checkpoint_path(run_id), model, opt, scaler, [], position)
    assert saved_position(store, run_id) == {"epoch": 1, "step": 7}
    save_checkpoint(store.checkpoint_path(run_id), model, opt, scaler, [])  # an epoch boundary's
    assert saved_position(store, run_id) == {"epoch": 1, "step": 0}


def test_a_one_process_run_saves_at_the_next_step_so_the_stall_line_asks_for_one_step():
    spent = {"position": {"epoch": 29, "step": 0}, "startup_s": 20.0, "step_s": 0.5, "steps": 80,
             "steps_per_epoch": 120, "saves_steps": True}
    line = stall_line(2, "timeout", spent, 1)
    assert "(1 step to the next save: 0 s)" in line, line


def test_a_step_that_outlasts_the_attempt_asks_for_more_than_the_attempt_trained():
    spent = {"position": {"epoch": 0, "step": 0}, "startup_s": 4.0, "step_s": None, "steps": 0,
             "steps_per_epoch": None, "training_s": 46.0, "saves_steps": True}
    line = stall_line(2, "timeout", spent, 1)
    assert "no step finished in the 46.0 s after it" in line, line
    # 4 s + 46 s + 10 s of evaluation and save = 60 s, with a quarter more: 75 s -> 2 minutes at least
    assert line.endswith("--timeout-min 2 or more may let it progress"), line
