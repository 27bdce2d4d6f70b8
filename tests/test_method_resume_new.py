"""A killed hkd run (memory banks), a killed dkd run (warm-up) and a killed ctkd run (learned temperature, λ
curriculum) resume to exactly the numbers of the run that was never interrupted, through the engine's checkpoint,
as `ce` does in test_engine."""

from __future__ import annotations

import json

import pytest

from kdbench.core.progress import Reporter
from kdbench.execute.api import run

# Small on purpose (a resume test trains five student epochs): the smallest CNNs (cifar_resnet8 teacher,
# timm test_resnet student; ResNet-10-T took 3× as long), 8 px, half of digits to train.
TINY = {"teacher": "cifar_resnet8", "student": "test_resnet", "epochs": 2, "teacher_epochs": 1, "device": "cpu",
        "sets": ["data.image_size=8", "data.test_fraction=0.5"]}


class InterruptAfter(Reporter):
    """A kill at the end of the `n`-th phase (the teacher is cached, so phases are the student's epochs)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.phases = 0

    def phase_end(self, summary=None) -> None:
        self.phases += 1
        if self.phases == self.n:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def shared_zoo(tmp_path_factory):
    return tmp_path_factory.mktemp("zoo")  # the teacher trains once for both methods


@pytest.mark.parametrize(("method", "sets"), [("hkd", ["hkd.nce_k=64"]), ("dkd", ["dkd.warmup=3"]),
                                             ("ctkd", ["ctkd.lambda_epochs=3"]),
                                             ("reviewkd", ["reviewkd.warmup=3"])])  # ABF modules + warm-up
def test_a_killed_run_resumes_to_the_uninterrupted_numbers(method, sets, tmp_path, shared_zoo):
    opts = {**TINY, "sets": TINY["sets"] + sets, "zoo_dir": shared_zoo}
    whole = run(method, results_dir=tmp_path / "whole", **opts)
    with pytest.raises(KeyboardInterrupt):
        run(method, results_dir=tmp_path / "cut", reporter=InterruptAfter(2), **opts)
    resumed = run(method, results_dir=tmp_path / "cut", **opts)
    assert resumed["metrics"]["resumed_from_epoch"] == 1
    drop = {"resumed_from_epoch"}
    assert {k: v for k, v in resumed["metrics"].items() if k not in drop} == {
        k: v for k, v in whole["metrics"].items() if k not in drop}
    lines = [json.loads(line) for line in
             (tmp_path / "cut" / "runs" / whole["run_id"] / "metrics.jsonl").read_text().splitlines()]
    whole_lines = [json.loads(line) for line in
                   (tmp_path / "whole" / "runs" / whole["run_id"] / "metrics.jsonl").read_text().splitlines()]
    assert [r["losses"] for r in lines] == [r["losses"] for r in whole_lines]
