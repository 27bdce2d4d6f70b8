"""Teacher-assistant chains as one sweep (`--chain A,B,C`): every stage is planned up front, stage i distilling
from stage i−1's student (`run:<its run id>`), and runs after it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kdbench.core.errors import UserError
from kdbench.execute.api import run
from kdbench.execute.resolve import RunOptions, resolve_config
from kdbench.store.records import RunStore
from kdbench.sweep.chains import local_shares, parse_chains
from kdbench.sweep.saved_sweep import load_saved_sweep

TINY = ["--epochs", "1", "--teacher-epochs", "1", "--batch-size", "256", "--set", "data.image_size=8",
        "--set", "teacher_recipe.batch_size=256", "--cpus-per-task", "1"]


def kdbench_cli(*args: object):
    from kdbench.cli.app import _register_commands, app

    _register_commands()
    return CliRunner().invoke(app, [str(a) for a in args])


def test_a_chain_is_planned_whole_each_stage_after_the_one_before(dirs):
    chain = ["resnet152", "resnet50", "resnet34", "resnet18"]
    result = kdbench_cli("sweep", "--methods", "kd", "--chain", ",".join(chain), "--seeds", "0",
                         "--set", "data.image_size=8", "--executor", "local", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    stages = json.loads(result.stdout)
    assert [(s["teacher"], s["student"]) for s in stages] == list(zip(chain, chain[1:], strict=False))
    assert stages[0]["teacher_run"] is None and stages[0]["teacher_seed"] == 0  # the zoo teacher
    for before, stage in zip(stages, stages[1:], strict=False):
        assert stage["teacher_run"] == before["run_id"]  # the student of the stage before
        # the very run id `kdbench run --teacher run:<id>` gives once that run exists
        assert stage["run_id"] == resolve_config(RunOptions(
            "kd", teacher=stage["teacher"], student=stage["student"], sets=["data.image_size=8"],
            teacher_run=before["run_id"])).run_id
    assert len({s["run_id"] for s in stages}) == 3


def test_chains_parse_from_flags_and_yaml_and_a_worker_keeps_a_chain_in_order():
    assert parse_chains(["resnet152,resnet50,resnet18", "resnet50, resnet18"]) == [
        ["resnet152", "resnet50", "resnet18"], ["resnet50", "resnet18"]]
    assert parse_chains([["resnet152", "resnet50"]]) == parse_chains(["resnet152", "resnet50"]) == [
        ["resnet152", "resnet50"]]
    with pytest.raises(UserError, match="at least two architectures"):
        parse_chains(["resnet18"])
    # runs a, b (b after a), c, d (d after b): b and d join a's worker, after it
    assert local_shares(["a", "b", "c", "d"], {"b": "a", "d": "b"}, 2) == [[0, 1, 3], [2]]
    assert local_shares(["a", "b", "c"], {}, 2) == [[0, 2], [1]]  # no chain: round-robin as before


def test_a_two_stage_chain_runs_on_the_local_executor_stage_two_from_stage_ones_student(dirs, monkeypatch):
    monkeypatch.setenv("KDBENCH_POLL_S", "1")
    result = kdbench_cli("sweep", "--methods", "kd", "--chain", "test_resnet,test_resnet,test_resnet", "--seeds", "0",
                         *TINY, "--executor", "local", "--results-dir", dirs["results"], "--zoo-dir", dirs["zoo"],
                         "--wait")
    assert result.exit_code == 0, result.output
    sweep = load_saved_sweep(dirs["results"])
    first, second = (entry["run_id"] for entry in sweep["runs"])
    store = RunStore(dirs["results"])
    records = [store.load(first), store.load(second)]
    assert [r["status"] for r in records] == ["completed", "completed"]
    assert records[1]["config"]["teacher_run"] == first
    assert records[1]["teacher_metrics"]["source"] == f"run:{first}"
    assert records[1]["teacher_metrics"]["top1"] == pytest.approx(records[0]["metrics"]["top1_last"])
    # by hand, the same stage is the same run
    again = run("kd", f"run:{first}", student="test_resnet", epochs=1, batch_size=256,
                sets=["data.image_size=8", "teacher_recipe.batch_size=256"], results_dir=dirs["results"],
                device="cpu")
    assert again["run_id"] == second and again.get("cached") is True
