"""`--log tensorboard` writes event files with the per-step losses by name, the lr and the per-epoch metrics,
the same numbers as `metrics.jsonl`; unknown or uninstalled backends are refused before the run starts."""

from __future__ import annotations

import importlib.util
import json

import pytest

from kdbench.core.errors import UserError
from kdbench.execute.api import run

TINY = {"student": "gnn2", "epochs": 2, "sets": ["data.image_size=8", "student.hidden=16"], "device": "cpu"}


def test_tensorboard_receives_each_steps_losses_and_lr_and_each_epochs_metrics(tmp_path):
    pytest.importorskip("tensorboard", reason="the [tensorboard] extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    record = run("ce", results_dir=tmp_path / "logged", log=["tensorboard"], **TINY)
    plain = run("ce", results_dir=tmp_path / "plain", **TINY)
    assert record["metrics"] == plain["metrics"]  # logging changes no number
    run_dir = tmp_path / "logged" / "runs" / record["run_id"]
    assert record["metric_logs"] == {"tensorboard": "logs/tensorboard"}
    assert list((run_dir / "logs" / "tensorboard").glob("events.out.tfevents.*"))

    events = EventAccumulator(str(run_dir / "logs" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/ce", "train/total", "train/lr", "epoch/top1", "epoch/top5", "epoch/lr", "epoch/loss/ce"} <= tags
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = events.Scalars("train/ce")
    per_epoch = len(steps) // len(epochs)
    assert [s.step for s in steps] == list(range(1, len(epochs) * per_epoch + 1)) and per_epoch > 1
    for i, epoch in enumerate(epochs):
        mean = sum(s.value for s in steps[i * per_epoch:(i + 1) * per_epoch]) / per_epoch
        assert mean == pytest.approx(epoch["losses"]["ce"], rel=1e-5)  # the steps average to the epoch's loss
        lrs = [s.value for s in events.Scalars("train/lr")[i * per_epoch:(i + 1) * per_epoch]]
        # the lr changes every step: the epoch's first and last steps' lrs are in metrics.jsonl
        assert lrs[0] == pytest.approx(epoch["lr"]) and lrs[-1] == pytest.approx(epoch["lr_last"])
    assert [(s.step, s.value) for s in events.Scalars("epoch/top1")] == [
        (e["epoch"], pytest.approx(e["top1"])) for e in epochs]


def test_an_unknown_or_uninstalled_backend_is_refused_before_the_run(tmp_path):
    with pytest.raises(UserError, match="unknown --log backend 'tensorbord'. Did you mean tensorboard"):
        run("ce", results_dir=tmp_path, log=["tensorbord"], **TINY)
    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(UserError, match=r"--log wandb needs the wandb package: pip install 'kdbench\[wandb\]'"):
            run("ce", results_dir=tmp_path, log=["wandb"], **TINY)
    assert not (tmp_path / "runs").exists()  # nothing was written


def test_wandb_writes_an_offline_run_holding_each_steps_losses_and_each_epochs_metrics(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="the [wandb] extra is not installed")
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline is the default
    record = run("ce", results_dir=tmp_path, log=["wandb"], **TINY)
    run_dir = tmp_path / "runs" / record["run_id"]
    assert record["metric_logs"] == {"wandb": "logs/wandb"}
    (offline,) = (run_dir / "logs" / "wandb" / "wandb").glob(f"offline-run-*-{record['run_id']}")
    data = (offline / f"run-{record['run_id']}.wandb").read_bytes()  # wandb's record log (protobuf), not synced
    for name in ("train/ce", "train/total", "train/lr", "iteration", "epoch/top1", "epoch/loss/ce"):
        assert name.encode() in data, name
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        epoch = json.loads(line)
        assert json.dumps(epoch["top1"]).encode() in data  # each epoch's value, as wandb stores it (JSON text)
