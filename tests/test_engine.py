"""One engine: deterministic on CPU, exact resume, losses logged by name, lr schedule as published."""

from __future__ import annotations

import json

import pytest

from kdbench.core.progress import Reporter
from kdbench.execute.api import run
from kdbench.spec.recipe import Recipe
from kdbench.train.schedule import lr_factor

# timm's `test_resnet` (a few thousand parameters) keeps these engine tests about the engine, not about a model.
TINY = {"epochs": 3, "student": "test_resnet", "sets": ["data.image_size=8"], "device": "cpu"}


class InterruptAfter(Reporter):
    """Simulates a kill (preemption, Ctrl-C) at the end of epoch `n`, before that epoch's checkpoint is saved."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.epochs = 0

    def phase_end(self, summary=None) -> None:
        self.epochs += 1
        if self.epochs == self.n:
            raise KeyboardInterrupt


def test_same_command_same_seed_gives_identical_numbers(tmp_path):
    a = run("ce", results_dir=tmp_path / "a", **TINY)
    b = run("ce", results_dir=tmp_path / "b", **TINY)
    assert a["run_id"] == b["run_id"]
    assert a["metrics"] == b["metrics"]
    la = (tmp_path / "a" / "runs" / a["run_id"] / "metrics.jsonl").read_text().splitlines()
    lb = (tmp_path / "b" / "runs" / b["run_id"] / "metrics.jsonl").read_text().splitlines()
    strip = [{k: v for k, v in json.loads(line).items() if not k.endswith("_s")} for line in la]
    assert strip == [{k: v for k, v in json.loads(line).items() if not k.endswith("_s")} for line in lb]


def test_a_different_seed_gives_different_numbers(tmp_path):
    a = run("ce", results_dir=tmp_path, seed=0, **TINY)
    b = run("ce", results_dir=tmp_path, seed=1, **TINY)
    assert a["run_id"] != b["run_id"]
    assert a["metrics"]["top1_last"] != b["metrics"]["top1_last"] or a["metrics"] != b["metrics"]


def test_an_interrupted_run_resumes_and_ends_with_the_uninterrupted_numbers(tmp_path):
    whole = run("ce", results_dir=tmp_path / "whole", **TINY)
    with pytest.raises(KeyboardInterrupt):
        run("ce", results_dir=tmp_path / "cut", reporter=InterruptAfter(3), **TINY)
    cut_record = json.loads((tmp_path / "cut" / "runs" / whole["run_id"] / "result.json").read_text())
    assert cut_record["status"] == "failed"  # interrupted: not completed, so a rerun / resume picks it up
    resumed = run("ce", results_dir=tmp_path / "cut", **TINY)
    assert resumed["metrics"]["resumed_from_epoch"] == 2
    drop = {"resumed_from_epoch"}
    assert {k: v for k, v in resumed["metrics"].items() if k not in drop} == {
        k: v for k, v in whole["metrics"].items() if k not in drop
    }
    lines = (tmp_path / "cut" / "runs" / whole["run_id"] / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_a_completed_config_is_not_rerun_unless_forced(tmp_path):
    first = run("ce", results_dir=tmp_path, **TINY)
    again = run("ce", results_dir=tmp_path, **TINY)
    assert again.get("cached") is True and again["metrics"] == first["metrics"]
    forced = run("ce", results_dir=tmp_path, force=True, **TINY)
    assert not forced.get("cached") and forced["metrics"]["top1_last"] == first["metrics"]["top1_last"]


def test_record_holds_metrics_timing_params_environment(tmp_path):
    # resnet18 for its real layer and parameter counts; one epoch is enough for what a record holds.
    r = run("ce", results_dir=tmp_path, **{**TINY, "student": "resnet18", "epochs": 1})
    assert r["status"] == "completed"
    m = r["metrics"]
    assert set(m) >= {"top1_last", "top1_best", "best_epoch", "top5_last", "top5_best"}
    assert 1 <= m["best_epoch"] <= 3 and m["top1_best"] >= m["top1_last"]
    assert r["student_info"]["params"] > 1_000_000 and r["student_info"]["layers"] == 18
    assert r["inference"]["batch_size"] == 256 and r["inference"]["s_per_image"] > 0
    assert r["environment"]["versions"]["torch"] and r["environment"]["device"]["type"] == "cpu"
    assert "git" in r["environment"] and r["timing"]["train_s"] > 0
    assert r["eval"] == {"batch_size": 256, "order": "shuffled", "order_seed": 0}
    # the student is exported; the resumable checkpoint (optimizer state) is gone once the run completed
    assert (tmp_path / "runs" / r["run_id"] / "student.safetensors").exists()
    assert not (tmp_path / "runs" / r["run_id"] / "checkpoint.pt").exists()


def _lr(r: Recipe, epoch: int, step: int = 0, steps_per_epoch: int = 5) -> float:
    """The lr of step `step` of 1-based `epoch` (5 optimizer steps an epoch)."""
    return r.lr * lr_factor(r, (epoch - 1) * steps_per_epoch + step, steps_per_epoch)


def test_multistep_schedule_follows_repdistiller():
    r = Recipe(name="crd", epochs=240, batch_size=64, lr=0.05, schedule="multistep", milestones=(150, 180, 210))
    assert _lr(r, 150, step=4) == pytest.approx(0.05)
    assert _lr(r, 151) == pytest.approx(0.005)
    assert _lr(r, 211) == pytest.approx(0.00005)


def test_cosine_with_warmup_ramps_per_step_then_decays():
    r = Recipe(name="x", epochs=10, batch_size=8, lr=0.1, schedule="cosine", warmup_epochs=1)
    lrs = [_lr(r, e, k) for e in range(1, 11) for k in range(5)]
    assert lrs[:6] == pytest.approx([0.1 / 6, 0.2 / 6, 0.3 / 6, 0.4 / 6, 0.5 / 6, 0.1])
    assert all(a >= b for a, b in zip(lrs[5:], lrs[6:], strict=False)) and 0 < lrs[-1] < 2e-4
