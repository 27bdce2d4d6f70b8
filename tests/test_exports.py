"""A completed run exports its student (last and best epoch, plain safetensors) with a card; the resumable
checkpoint goes unless kept; the best-epoch export survives a kill -9 and a resume; `kdbench eval --which`
reads the exports, and still reads an old run that only has `checkpoint.pt`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from kdbench.core.errors import UserError
from kdbench.core.storage import sha256_file
from kdbench.execute.api import run
from kdbench.execute.reevaluate import reevaluate
from kdbench.store import exports

# gnn2 at lr 2 for 4 epochs with seed 7: its best epoch (2: 16.39 % top-1, last 10.28 %) is neither the first nor
# the last (measured at results version 3; the seed was 1 before the augmentation became keyed by sample index).
TINY = {"student": "gnn2", "epochs": 4, "lr": 2.0, "seed": 7, "sets": ["data.image_size=8", "student.hidden=16"],
        "device": "cpu"}


# gnn2's graph spans the evaluation batch: the run's own evaluation batch size reproduces its numbers.
EVAL_BATCH = 256


def _run_dir(results: Path, run_id: str) -> Path:
    return results / "runs" / run_id


def test_a_completed_run_exports_last_and_best_with_a_card_and_drops_its_checkpoint(tmp_path):
    record = run("ce", results_dir=tmp_path, **TINY)
    m = record["metrics"]
    assert 1 < m["best_epoch"] < m["epochs"] and m["top1_best"] > m["top1_last"]  # the case worth testing
    assert record["eval"]["batch_size"] == EVAL_BATCH
    run_dir = _run_dir(tmp_path, record["run_id"])
    assert not (run_dir / "checkpoint.pt").exists()
    assert record["exports"] == {"card": "student.json", "last": "student.safetensors",
                                 "best": "student_best.safetensors", "checkpoint_kept": False}
    card = json.loads((run_dir / "student.json").read_text())
    assert {k: card[k] for k in ("architecture", "num_classes", "in_chans", "image_size", "cifar_stem", "run_id",
                                 "method", "dataset")} == {
        "architecture": "gnn2", "num_classes": 10, "in_chans": 3, "image_size": 8, "cifar_stem": False,
        "run_id": record["run_id"], "method": "ce", "dataset": "digits"}
    assert card["options"]["hidden"] == 16
    assert card["metrics"]["best"] == {"epoch": m["best_epoch"], "top1": m["top1_best"], "top5": m["top5_best"]}
    assert card["exports"]["last"]["sha256"] == sha256_file(run_dir / "student.safetensors")
    assert card["exports"]["best"]["sha256"] == sha256_file(run_dir / "student_best.safetensors")
    assert (card["exports"]["last"]["epoch"], card["exports"]["best"]["epoch"]) == (m["epochs"], m["best_epoch"])
    assert exports.export_epoch(run_dir / "student_best.safetensors") == m["best_epoch"]

    # the exports hold what the run measured: each re-evaluated gives its epoch's top-1
    best = reevaluate(record["run_id"], [EVAL_BATCH], results_dir=tmp_path, device="cpu", which="best")
    assert best["eval_curve_best"]["points"][0]["top1"] == pytest.approx(m["top1_best"])
    last = reevaluate(record["run_id"], [EVAL_BATCH], results_dir=tmp_path, device="cpu", which="last")
    assert last["eval_curve"]["points"][0]["top1"] == pytest.approx(m["top1_last"])


def test_keep_checkpoint_keeps_it_and_a_changed_export_is_refused(tmp_path):
    record = run("ce", results_dir=tmp_path, keep_checkpoint=True, **TINY)
    run_dir = _run_dir(tmp_path, record["run_id"])
    assert (run_dir / "checkpoint.pt").exists() and record["exports"]["checkpoint_kept"] is True
    weights = load_file(str(run_dir / "student_best.safetensors"))
    key = next(iter(weights))
    weights[key] = weights[key] + 1
    save_file(weights, str(run_dir / "student_best.safetensors"))
    with pytest.raises(UserError, match="sha256 differs from its card's"):
        reevaluate(record["run_id"], [EVAL_BATCH], results_dir=tmp_path, device="cpu", which="best")


def test_an_old_run_with_only_a_checkpoint_is_still_evaluated_and_has_no_best(tmp_path):
    record = run("ce", results_dir=tmp_path, keep_checkpoint=True, **TINY)
    exports.remove_exports(_run_dir(tmp_path, record["run_id"]))  # as a run from before exports left it
    last = reevaluate(record["run_id"], [EVAL_BATCH], results_dir=tmp_path, device="cpu")
    assert last["eval_curve"]["points"][0]["top1"] == pytest.approx(record["metrics"]["top1_last"])
    with pytest.raises(UserError, match="has no student export"):
        reevaluate(record["run_id"], [EVAL_BATCH], results_dir=tmp_path, device="cpu", which="best")


KILLED = """
    import os, signal, sys
    from kdbench.store.records import RunStore
    from kdbench.execute.api import run

    real = RunStore.write_metrics

    def write_metrics(self, run_id, history):  # after epoch {epoch}'s checkpoint: the moment of the kill
        if len(history) == {epoch}:
            os.kill(os.getpid(), signal.SIGKILL)
        real(self, run_id, history)

    RunStore.write_metrics = write_metrics
    run("ce", results_dir=sys.argv[1], **{tiny!r})
"""


def test_the_best_export_survives_a_kill_9_after_the_best_epochs_checkpoint(tmp_path):
    whole = run("ce", results_dir=tmp_path / "whole", **TINY)
    best_epoch = whole["metrics"]["best_epoch"]
    script = textwrap.dedent(KILLED).format(epoch=best_epoch, tiny=TINY)
    killed = subprocess.run([sys.executable, "-c", script, str(tmp_path / "cut")], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert killed.returncode == -9, killed.stderr
    cut_dir = _run_dir(tmp_path / "cut", whole["run_id"])
    assert (cut_dir / "checkpoint.pt").exists() and not (cut_dir / "student.json").exists()

    resumed = run("ce", results_dir=tmp_path / "cut", **TINY)
    assert resumed["metrics"]["resumed_from_epoch"] == best_epoch
    assert resumed["metrics"]["top1_best"] == whole["metrics"]["top1_best"]
    assert "best" in resumed["exports"]
    whole_dir = _run_dir(tmp_path / "whole", whole["run_id"])
    for name in ("student.safetensors", "student_best.safetensors"):
        assert sha256_file(cut_dir / name) == sha256_file(whole_dir / name), name
