"""Re-evaluate a finished run at several evaluation batch sizes and store the curve in its record.

Students whose graph spans the batch (CNN2GNN's `batch` mode) predict differently with different neighbours, so
their accuracy is a function of the evaluation batch size (1 = no neighbours at all). The order of the test set
is the run's fixed shuffled order (seeded with the run's seed), so every point of the curve is reproducible.
A batch-independent student (a CNN in eval mode, an anchor-graph GNN) gives a flat curve.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from kdbench.core.environment import resolve_device
from kdbench.core.errors import UserError, check_range
from kdbench.core.safe_load import UnusableCheckpointError, load_plain_checkpoint
from kdbench.core.storage import check_writable
from kdbench.data.loaders import make_eval_loader
from kdbench.execute.build import build_student, load_data
from kdbench.models.state_dicts import STUDENT_PREFIX, check_fits
from kdbench.spec.config import RunConfig
from kdbench.store import exports
from kdbench.store.records import RunStore
from kdbench.train.evaluate import evaluate


def load_trained_student(record: dict[str, Any], store: RunStore, data_root: str | Path | None,
                         device: torch.device, which: str = "last") -> tuple[torch.nn.Module, Any]:
    """The run's student with its weights of the last or the best epoch (`which`), and the run's data.

    The weights come from the run's student exports (kdbench.store.exports); a run from before exports has only its
    resumable checkpoint, which holds the last epoch."""
    if which not in exports.FILES:
        raise UserError(f"--which {which}: expected one of {', '.join(exports.FILES)}")
    if (record.get("method_info") or {}).get("inference_needs_teacher"):
        # cnn2gnn.graph_features=teacher: the student's graph is built on the teacher's features at evaluation,
        # so the student alone would be judged on another graph than the one its numbers were measured with.
        raise UserError(f"run {record['run_id']}'s student predicts through its teacher's features "
                        "(cnn2gnn.graph_features=teacher): it cannot be evaluated without its teacher")
    config = RunConfig.from_dict(record["config"])
    run_dir = store.run_dir(record["run_id"])
    data = load_data(config, data_root, augment="none", validation=False)  # the test split is what it reads
    student = build_student(config, data)
    if exports.read_card(run_dir) is not None:
        weights, _ = exports.load_export(run_dir, which)
        # dtypes too: float bytes whose header says int32 would load as other weights without an error (#34)
        check_fits(student, weights, f"{run_dir / exports.FILES[which]} does not hold run {record['run_id']}'s "
                   "student")
        try:
            student.load_state_dict(weights)
        except RuntimeError:
            raise UserError(f"{run_dir / exports.FILES[which]} does not hold run {record['run_id']}'s student"
                            ) from None
        return student.to(device).eval(), data
    ckpt = store.checkpoint_path(record["run_id"])
    if which != "last" or not ckpt.exists():
        raise UserError(f"run {record['run_id']} has no student export ({exports.FILES[which]}) nor checkpoint; "
                        "rerun it with --force to re-create them")
    state = load_plain_checkpoint(ckpt).get("model")  # the safe loader: a crafted file is refused, never run
    prefix = STUDENT_PREFIX
    items = state.items() if isinstance(state, dict) else []
    weights = {k[len(prefix):]: v for k, v in items if isinstance(k, str) and k.startswith(prefix)}
    try:
        student.load_state_dict(weights)
    except RuntimeError:  # missing / unexpected / misshapen weights: not this run's checkpoint
        raise UnusableCheckpointError(f"checkpoint {ckpt} does not hold run {record['run_id']}'s student") from None
    return student.to(device).eval(), data


def reevaluate(
    run_id: str,
    batch_sizes: list[int],
    *,
    results_dir: str | Path | None = None,
    data_root: str | Path | None = None,
    device: str = "auto",
    which: str = "last",
) -> dict[str, Any]:
    """Evaluate run `run_id`'s student of the last or best epoch (`which`) at each batch size; store and return
    `record["eval_curve"]` (last) or `record["eval_curve_best"]` (best)."""
    for bs in batch_sizes:
        check_range("batch size", bs, 1, 1_000_000)
    store = RunStore(results_dir)
    record = store.load(run_id)
    if record is None:
        known = [r["run_id"] for r in store.iter_records()]
        matches = [k for k in known if k.startswith(run_id)]
        if len(matches) != 1:
            raise UserError(
                f"no run '{run_id}' under {store.root / 'runs'} (kdbench leaderboard --table runs lists them)"
            )
        record = store.load(matches[0])
        assert record is not None
    if record["status"] != "completed":
        raise UserError(f"run {record['run_id']} is {record['status']}, not completed: nothing to re-evaluate")
    # Its record is rewritten: a read-only results folder is one line now, not after the evaluation (issue #34).
    check_writable(store.run_dir(record["run_id"]), f"results dir {store.root}", "--results-dir")
    dev = resolve_device(device)
    student, data = load_trained_student(record, store, data_root, dev, which)
    order_seed = record["config"]["seed"]
    points = []
    for bs in batch_sizes:
        t0 = time.perf_counter()
        ev = evaluate(student, make_eval_loader(data.test, bs, order_seed, dev), dev)
        points.append({"batch_size": bs, "top1": ev.top1, "top5": ev.top5, "loss": ev.loss,
                       "eval_s": time.perf_counter() - t0})
    curve = {"order": "shuffled", "order_seed": order_seed, "points": points, "weights": which,
             "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    record["eval_curve" if which == "last" else f"eval_curve_{which}"] = curve
    store.write(record)
    return record
