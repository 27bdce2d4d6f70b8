"""StepLog's epoch sums: float32 running sums in step order, whether rows are read every step (CPU) or per interval
(GPU), whether `sums` is asked for once or part-way, and across a change of the loss names (a method's new stage).
The values are chosen so that the order of the additions shows in the bits: a pairwise or float64 sum differs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kdbench.core.errors import RunDiverged
from kdbench.core.progress import NULL_REPORTER, Reporter
from kdbench.train.step_log import StepLog

# float32 has a 24-bit significand: 2**24 + 1 is not representable, so adding 1.0 to 2**24 is lost in a
# running sum but not when the ones are added up first.
BIG = float(2**24)
VALUES = [BIG, 1.0, 1.0, 1.0, 1.0, 0.3, 0.7, 1e-3]


def running_sum(xs: list[float]) -> np.float32:
    total = np.float32(0.0)
    for x in xs:
        total = total + np.float32(x)
    return total


def feed(log: StepLog, rows: list[dict[str, float]]) -> None:
    for step, row in enumerate(rows):
        losses = {name: torch.tensor(value) for name, value in row.items()}
        total = torch.tensor(sum(row.values()))
        log.add(step, step + 1, losses, total, 0.1)


def test_the_values_make_the_order_of_additions_visible():
    assert running_sum(VALUES) != np.float32(math.fsum(VALUES))
    assert running_sum(VALUES) != np.add.reduce(np.array(VALUES[::-1], dtype=np.float32))


@pytest.mark.parametrize("every_step", [True, False])
@pytest.mark.parametrize("interval", [1, 3, 50])
def test_sums_are_float32_running_sums_in_step_order(every_step, interval):
    rows = [{"ce": v, "kd": 2 * v} for v in VALUES]
    log = StepLog(NULL_REPORTER, 1, every_step, interval)
    feed(log, rows)
    log.flush()
    assert log.sums["ce"] == running_sum(VALUES)
    assert log.sums["kd"] == running_sum([2 * v for v in VALUES])
    assert log.sums["total"] == running_sum([float(np.float32(3 * v)) for v in VALUES])
    assert all(isinstance(v, np.float32) for v in log.sums.values())


def test_asking_for_sums_part_way_changes_nothing():
    whole, parts = StepLog(NULL_REPORTER, 1, True), StepLog(NULL_REPORTER, 1, True)
    rows = [{"ce": v} for v in VALUES]
    feed(whole, rows)
    feed(parts, rows[:3])
    assert parts.sums["ce"] == running_sum(VALUES[:3])
    for step, row in enumerate(rows[3:], start=3):
        parts.add(step, step + 1, {"ce": torch.tensor(row["ce"])}, torch.tensor(row["ce"]), 0.1)
    assert parts.sums == whole.sums


@pytest.mark.parametrize("every_step", [True, False])
def test_a_change_of_loss_names_carries_each_names_sum_on(every_step):
    # Stage 1 logs ce, stage 2 ce and feat, stage 3 ce again: ce's sum runs through all three, feat's only 2.
    rows = ([{"ce": v} for v in VALUES[:3]] + [{"ce": v, "feat": v / 2} for v in VALUES[3:6]]
            + [{"ce": v} for v in VALUES[6:]])
    log = StepLog(NULL_REPORTER, 1, every_step, 2)
    feed(log, rows)
    log.flush()
    assert log.sums["ce"] == running_sum(VALUES)
    assert log.sums["feat"] == running_sum([v / 2 for v in VALUES[3:6]])
    assert set(log.sums) == {"ce", "feat", "total"}


class Recorder(Reporter):
    def __init__(self) -> None:
        self.iterations: list[tuple[int, dict[str, float], float]] = []

    def iteration(self, step: int, losses: dict[str, float], lr: float) -> None:
        self.iterations.append((step, losses, lr))


def test_one_term_is_its_own_total_and_read_once_as_such():
    recorder = Recorder()
    log = StepLog(recorder, 1, True)
    ce = torch.tensor(0.25)
    log.add(0, 1, {"ce": ce}, ce, 0.1)
    assert recorder.iterations == [(1, {"ce": 0.25, "total": 0.25}, 0.1)]
    with pytest.raises(RunDiverged) as stopped:
        nan = torch.tensor(float("nan"))
        log.add(1, 2, {"ce": nan}, nan, 0.1)
    assert stopped.value.step == 1
    # The term is read, not assumed to be the total, when the total is another tensor.
    log.add(2, 3, {"ce": torch.tensor(0.5)}, torch.tensor(0.75), 0.1)
    assert recorder.iterations[-1] == (3, {"ce": 0.5, "total": 0.75}, 0.1)


class Duck:  # a reporter that does not subclass Reporter
    def __init__(self) -> None:
        self.calls: list[str] = []

    def step(self, n: int = 1, **info: float) -> None:
        self.calls.append("step")

    def iteration(self, step: int, losses: dict[str, float], lr: float) -> None:
        self.calls.append("iteration")


@pytest.mark.parametrize("every_step", [True, False])
def test_every_reporter_that_listens_is_called_at_every_step(every_step):
    duck, recorder, patched = Duck(), Recorder(), Reporter()
    patched_calls: list[int] = []
    patched.step = lambda n=1, **info: patched_calls.append(n)  # set on the instance, not the class
    for reporter in (duck, recorder, patched):
        log = StepLog(reporter, 1, every_step, 2)
        feed(log, [{"ce": v} for v in VALUES[:3]])
        log.flush()
    assert duck.calls.count("iteration") == 3 and duck.calls.count("step") >= 3
    assert [step for step, _, _ in recorder.iterations] == [1, 2, 3]
    assert patched_calls[:1] == [1] and len(patched_calls) >= 3


def test_a_reporter_that_does_not_listen_is_not_called(monkeypatch):
    # The base class's no-ops are skipped, not called: replacing them on the class after the log is made shows
    # no call (a StepLog decides once, when it is made, for the epoch).
    log = StepLog(NULL_REPORTER, 1, True)
    monkeypatch.setattr(Reporter, "iteration", lambda *a, **k: pytest.fail("called"))
    monkeypatch.setattr(Reporter, "step", lambda *a, **k: pytest.fail("called"))
    feed(log, [{"ce": v} for v in VALUES])
    assert log.sums["ce"] == running_sum(VALUES)
