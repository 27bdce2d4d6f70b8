"""Atomic writes never leave half files; a record is never overwritten by a different config."""

from __future__ import annotations

import json

import pytest

from kdbench.core.errors import UserError
from kdbench.core.storage import _atomic_replace, atomic_write_json
from kdbench.execute.resolve import RunOptions, resolve_config
from kdbench.store.record_builder import new_record
from kdbench.store.records import RunStore


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "result.json"
    atomic_write_json(path, {"v": 1})

    def crash(f):
        f.write(b'{"v": 2, "trunc')
        raise OSError("disk full")

    with pytest.raises(OSError):
        _atomic_replace(path, crash)
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_store_refuses_to_overwrite_a_record_with_a_different_config(tmp_path):
    store = RunStore(tmp_path)
    config = resolve_config(RunOptions(method="ce"))
    record = new_record(config)
    store.write(record)
    store.write({**record, "status": "completed"})  # same config: fine
    assert store.status(config.run_id) == "completed"
    forged = {**record, "config": {**record["config"], "seed": 99}}
    with pytest.raises(UserError, match="different config"):
        store.write(forged)


def test_records_carry_identity_columns(tmp_path):
    config = resolve_config(RunOptions(method="kd", teacher="resnet34", seed=3))
    record = new_record(config)
    assert (record["method"], record["teacher"], record["student"], record["seed"]) == ("kd", "resnet34", "resnet18", 3)
    assert record["run_id"] == config.run_id and record["config"]["seed"] == 3
