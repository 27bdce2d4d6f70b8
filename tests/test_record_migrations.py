"""kdbench.store.migrations: a record of an older schema is brought to the current one on load, in memory only;
the committed reference records (schema 1) are the real test data."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from test_leaderboard import make_config

from kdbench.spec.config import RunConfig
from kdbench.store.migrations import MIGRATIONS, SCHEMA_VERSION, BadRecord, upgrade
from kdbench.store.record_builder import new_record
from kdbench.store.records import RunStore

REFERENCE = Path(__file__).resolve().parents[1] / "results" / "reference"


def _digests(root: Path) -> dict[str, str]:
    return {p.parent.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.glob("runs/*/result.json")}


def test_the_index_steps_from_every_older_schema_to_the_current_one() -> None:
    assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION))


def test_reference_records_load_at_the_current_schema_and_are_never_rewritten() -> None:
    before = _digests(REFERENCE)
    records = RunStore(REFERENCE).iter_records()
    assert len(records) == len(before) > 0
    for record in records:
        assert record["schema"] == SCHEMA_VERSION and isinstance(record["transductive"], bool)
        assert RunConfig.from_dict(record["config"]).run_id == record["run_id"]  # run ids are what they were
    assert _digests(REFERENCE) == before


def test_a_first_schema_record_without_the_later_blocks_gets_them() -> None:
    config = make_config("cnn2gnn", teacher="resnet50", student="gnn2", method_params={"graph": "batch", "k": 10})
    old = {k: v for k, v in new_record(config).items() if k not in ("schema", "transductive")}
    old["metrics"] = {"top1_last": 90.0}
    record = upgrade(old)
    assert record["schema"] == SCHEMA_VERSION
    assert record["transductive"] is True  # judged from its config: a graph over the evaluation batch
    assert record["metrics"]["best_selected_on"] == "test"  # before validation splits, the best epoch was test's
    minimal = upgrade({"run_id": "0123456789abcdef", "status": "failed"})
    assert minimal["config"] == {} and minimal["metrics"] is None and minimal["transductive"] is False


def test_a_newer_schema_is_refused_with_a_line_saying_to_upgrade() -> None:
    with pytest.raises(BadRecord, match=f"schema {SCHEMA_VERSION + 1}; this version reads up to {SCHEMA_VERSION}"
                                        r"\): upgrade kdbench"):
        upgrade({"run_id": "x", "status": "completed", "schema": SCHEMA_VERSION + 1})


def test_new_records_are_written_at_the_current_schema(dirs: dict[str, Path]) -> None:
    record = new_record(make_config("ce"))
    RunStore(dirs["results"]).write(record)
    stored = json.loads(RunStore(dirs["results"]).result_path(record["run_id"]).read_text())
    assert stored["schema"] == SCHEMA_VERSION and stored["transductive"] is False
