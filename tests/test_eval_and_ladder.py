"""`kdbench eval` re-evaluates a finished run at several batch sizes; `kdbench ladder` trains the depth ladder."""

from __future__ import annotations

import json
import sys

import pytest

from kdbench.cli.app import main
from kdbench.core.errors import UserError
from kdbench.execute.api import run
from kdbench.execute.ladder import ladder_options, run_ladder
from kdbench.execute.reevaluate import reevaluate
from kdbench.spec.paths import Paths

TINY = {"epochs": 1, "teacher_epochs": 1, "sets": ["data.image_size=8"], "device": "cpu"}


def test_a_cnn_in_eval_mode_gives_a_flat_batch_size_curve_stored_in_its_record(dirs):
    r = run("ce", student="test_resnet", results_dir=dirs["results"], **TINY)  # timm's tiny ResNet: BatchNorm too
    record = reevaluate(r["run_id"][:8], [1, 7, 64], results_dir=dirs["results"], device="cpu")
    points = record["eval_curve"]["points"]
    assert [p["batch_size"] for p in points] == [1, 7, 64]
    assert len({round(p["top1"], 6) for p in points}) == 1  # BatchNorm in eval mode: no batch dependence
    assert points[-1]["top1"] == pytest.approx(r["metrics"]["top1_last"])
    stored = json.loads((dirs["results"] / "runs" / r["run_id"] / "result.json").read_text())
    assert stored["eval_curve"]["order_seed"] == 0 and stored["status"] == "completed"


def test_a_batch_graph_student_depends_on_its_evaluation_batch(dirs):
    r = run("cnn2gnn", teacher="cifar_resnet8", results_dir=dirs["results"], zoo_dir=dirs["zoo"], **TINY)
    points = reevaluate(r["run_id"], [1, 360], results_dir=dirs["results"], device="cpu")["eval_curve"]["points"]
    # Alone (batch 1) a sample has no neighbours; in the full test set it has k: its outputs, so the test loss,
    # change (accuracy may not, after one tiny epoch).
    assert points[0]["loss"] != pytest.approx(points[1]["loss"], rel=1e-6)


def test_eval_refuses_unknown_runs_and_bad_batch_sizes(dirs, monkeypatch, capsys):
    with pytest.raises(UserError, match="no run 'deadbeef'"):
        reevaluate("deadbeef", [1], results_dir=dirs["results"])
    with pytest.raises(UserError, match="allowed"):
        reevaluate("deadbeef", [0], results_dir=dirs["results"])
    # The CLI's own entry point, in process (a subprocess spent ~10 s importing): exit 2 and the message on stderr.
    monkeypatch.setattr(sys, "argv", ["kdbench", "eval", "x", "--batch-sizes", "a,b"])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 2 and "comma-separated integers" in capsys.readouterr().err


def test_ladder_lists_every_cnn_alone_the_gnn_alone_and_the_distilled_gnn():
    opts = ladder_options("resnet152", seeds=(0, 1), sets=["cnn2gnn.k=5"])
    runs = {(o.method, o.student, o.seed) for o in opts}
    assert len(opts) == 14
    assert ("ce", "resnet101", 1) in runs and ("ce", "gnn2", 0) in runs and ("cnn2gnn", "gnn2", 1) in runs
    assert all("cnn2gnn.k=5" not in o.sets for o in opts if o.method == "ce")


def test_ladder_runs_and_records_layers_params_and_times(dirs):
    records = run_ladder("resnet18", paths=Paths(dirs["results"], dirs["zoo"]), device="cpu", cnns=("resnet18",),
                         epochs=1, teacher_epochs=1, sets=["data.image_size=8"])
    by = {(r["method"], r["student"]): r for r in records}
    assert by[("ce", "resnet18")]["student_info"]["layers"] == 18
    assert by[("ce", "gnn2")]["student_info"]["layers"] == 2
    assert by[("cnn2gnn", "gnn2")]["teacher_metrics"]["layers"] == 18
    assert all(r["status"] == "completed" and r["inference"]["s_per_image"] > 0 and r["timing"]["train_s"] > 0
               for r in records)
    again = run_ladder("resnet18", paths=Paths(dirs["results"], dirs["zoo"]), device="cpu", cnns=("resnet18",),
                       epochs=1, teacher_epochs=1, sets=["data.image_size=8"])
    assert all(r.get("cached") for r in again)
