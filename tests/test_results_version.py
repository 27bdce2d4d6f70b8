"""The RESULTS_VERSION canary: the committed canary records (results/reference/canary, made by
`bash results/canary.sh`) must regenerate to the same numbers, bit for bit, while kdbench.fingerprint.RESULTS_VERSION
stays the same. A change to the harness that alters numbers must raise it (and regenerate the references)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from kdbench.config import RunConfig
from kdbench.fingerprint import RESULTS_VERSION, code_fingerprint
from kdbench.records import RunStore
from kdbench.runner import Paths, execute

CANARY = Path(__file__).resolve().parents[1] / "results" / "reference" / "canary"
NUMBERS_CHANGED = ("numbers changed: raise kdbench.fingerprint.RESULTS_VERSION and regenerate results/reference "
                   "(bash results/regenerate.sh)")
METRICS = ("top1_last", "top1_best", "top5_last", "top5_best", "best_epoch", "epochs")
EPOCH_FIELDS = ("losses", "lr", "top1", "top5", "eval_loss", "train_top1")
TEACHER_METRICS = ("top1", "top5", "top1_best", "sha256")


def _epochs(path: Path) -> list[dict]:
    return [{k: e.get(k) for k in EPOCH_FIELDS} for e in map(json.loads, path.read_text().splitlines())]


def _differences(ref: dict, ours: dict, ref_store: RunStore, our_store: RunStore) -> list[str]:
    out = [f"{ref['method']} {k}: {ref['metrics'][k]!r} → {ours['metrics'][k]!r}"
           for k in METRICS if ref["metrics"][k] != ours["metrics"][k]]
    out += [f"{ref['method']} teacher {k}: {(ref['teacher_metrics'] or {}).get(k)!r} → "
            f"{(ours['teacher_metrics'] or {}).get(k)!r}"
            for k in TEACHER_METRICS if (ref["teacher_metrics"] or {}).get(k) != (ours["teacher_metrics"] or {}).get(k)]
    theirs, mine = _epochs(ref_store.metrics_path(ref["run_id"])), _epochs(our_store.metrics_path(ours["run_id"]))
    out += [f"{ref['method']} epoch {i}: {a} → {b}" for i, (a, b) in enumerate(zip(theirs, mine, strict=True), 1)
            if a != b]
    return out


def test_canary_records_regenerate_identically_while_results_version_stays(tmp_path: Path) -> None:
    reference = RunStore(CANARY)
    records = sorted(reference.iter_records(), key=lambda r: r["method"])
    assert [r["method"] for r in records] == ["ce", "kd"] and all(r["status"] == "completed" for r in records)
    versions = sorted({r["code"]["results_version"] for r in records})
    if versions != [RESULTS_VERSION]:
        pytest.fail(f"reference records are from results version {versions[0]}; regenerate them "
                    "(bash results/regenerate.sh)")
    assert torch.get_num_threads() == 1 and all(r["threads"]["torch_threads"] == 1 for r in records)

    ours = RunStore(tmp_path / "results")
    differences = []
    for ref in records:
        # The canary checks the numbers, not the code's identity: rerun the config under the current fingerprint.
        config = dataclasses.replace(RunConfig.from_dict(ref["config"]),
                                     code=code_fingerprint(ref["method"])["fingerprint"])
        record = execute(config, Paths(ours.root, tmp_path / "zoo", tmp_path / "data"), device="cpu")
        differences += _differences(ref, record, reference, ours)
    if differences:
        pytest.fail(f"{NUMBERS_CHANGED}\n" + "\n".join(differences[:10]))
