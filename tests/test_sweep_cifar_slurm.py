"""slurm/sweeps/smoke-cifar.yaml through the real single-node SLURM cluster, on the tiny CIFAR-100 fixture in its
true on-disk format: a teacher job, then one dependent array of the student alone and KD (1 epoch each)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fixtures_data import write_cifar100
from test_sweep_slurm import kdbench_cli, sacct, slurm_conf  # noqa: F401  (slurm_conf: the cluster fixture)

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "slurm" / "sweeps" / "smoke-cifar.yaml"
SITE = Path(__file__).resolve().parent / "fixture_site"  # sitecustomize: the fixture's md5s inside the jobs


def test_smoke_cifar_sweep_runs_a_teacher_then_two_runs_on_slurm(slurm_conf, tmp_path, monkeypatch):  # noqa: F811
    from kdbench.store.records import RunStore
    from kdbench.sweep.saved_sweep import load_saved_sweep

    data, results, zoo = tmp_path / "data", tmp_path / "results", tmp_path / "zoo"
    written = write_cifar100(data, train_per_class=2, test_per_class=1, classes=8)
    md5_file = tmp_path / "md5.json"
    md5_file.write_text(json.dumps(written.md5))
    # The jobs inherit this environment from sbatch (--export=ALL, SLURM's default).
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(SITE), os.environ.get("PYTHONPATH")) if p))
    monkeypatch.setenv("KDBENCH_TEST_CIFAR_MD5", str(md5_file))

    args = ["sweep", "--config", SMOKE, "--executor", "slurm", "--results-dir", results, "--zoo-dir", zoo,
            "--data-root", data]
    result = kdbench_cli(*args, "--wait")
    assert result.exit_code == 0, result.output
    (sub,) = load_saved_sweep(results)["submissions"]
    ((teacher_id,),) = [[t["job_id"] for t in sub["teacher_jobs"].values()]]
    assert len(sub["tasks"]) == 2 and sub["dependency"] == f"afterok:{teacher_id}"
    acct = sacct(",".join([teacher_id, *sub["tasks"].values()]))
    assert {acct[j]["state"] for j in [teacher_id, *sub["tasks"].values()]} == {"COMPLETED"}

    store = RunStore(results)
    records = {store.load(rid)["method"]: store.load(rid) for rid in sub["tasks"]}
    assert set(records) == {"ce", "kd"}
    for record in records.values():
        assert record["status"] == "completed" and record["dataset"] == "cifar100"
        assert record["data"]["num_train"] == 16 and record["data"]["num_classes"] == 100  # the fixture, read
        assert record["config"]["recipe"]["name"] == "crd-cifar100" and record["config"]["recipe"]["epochs"] == 1
    assert records["kd"]["teacher"] == "resnet18" and records["kd"]["teacher_metrics"]["cached"] is True

    again = kdbench_cli(*args)
    assert again.exit_code == 0 and "nothing to submit" in again.output
