"""A finished run's student, exported as plain tensors: what a person keeps, evaluates, or distils from next.

`runs/<id>/` of a completed run holds
- `student.safetensors`: the student's weights after the last epoch;
- `student_best.safetensors`: its weights at the best epoch (the engine's `FitResult.best`), written while the
  run trains, each time an epoch becomes the best, *before* that epoch's resumable checkpoint, so a run killed
  at any moment and resumed still ends with the right file (a resumed epoch recomputes the same numbers);
- `student.json`: the card that makes the weights usable alone: architecture, num_classes, in_chans,
  image_size, cifar_stem and the student's builder options, the run id, method, dataset, last/best metrics and
  the sha256 of each export.

Safetensors files hold tensors only (no code), and every write is atomic. The optimizer-bearing `checkpoint.pt`
is removed once the exports are written (unless the user keeps it): it is 2-3x the student's size and only
serves resuming.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as safetensors_bytes
from torch import nn

from kdbench.core.errors import UserError
from kdbench.core.safe_load import load_plain_weights
from kdbench.core.storage import atomic_write_bytes, atomic_write_json, sha256_file
from kdbench.models.zoo import create_model

LAST = "student.safetensors"
BEST = "student_best.safetensors"
CARD = "student.json"
FILES = {"last": LAST, "best": BEST}
# `--teacher run:RUN_ID`: a finished run's student as the teacher.
RUN_TEACHER_PREFIX = "run:"


def plain_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict as independent, contiguous CPU tensors (safetensors refuses shared storage)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_student(model: nn.Module, path: Path, *, epoch: int, run_id: str) -> None:
    """Write the student's weights to `path` atomically; the file's metadata names the run and epoch they are
    from. One metadata entry: safetensors writes several in a random order, and the bytes must not vary (the
    file's sha256 goes into the id of a run that distils from it)."""
    data = safetensors_bytes(plain_state(model), metadata={"kdbench": f"{run_id}:{epoch}"})
    atomic_write_bytes(path, data)


def export_epoch(path: Path) -> int | None:
    """The epoch recorded in an export's metadata (None for a file without it)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return int((f.metadata() or {})["kdbench"].rpartition(":")[2])
    except (OSError, KeyError, ValueError, RuntimeError):
        return None


def remove_exports(run_dir: Path) -> None:
    """Drop a run's exports (a forced rerun must not keep the previous run's best epoch)."""
    for name in (LAST, BEST, CARD):
        (run_dir / name).unlink(missing_ok=True)


def write_exports(
    run_dir: Path, student: nn.Module, *, record: dict[str, Any], model_facts: dict[str, Any],
) -> dict[str, Any]:
    """Write `student.safetensors` (the student as it is now: the last epoch) and the card; check that the
    best-epoch export on disk is from the best epoch. Returns what the run record keeps about the exports.

    `record` is the completed run's record (run id, method, dataset, metrics); `model_facts` is how to rebuild
    the student (architecture, num_classes, in_chans, image_size, cifar_stem, options)."""
    metrics = record["metrics"]
    save_student(student, run_dir / LAST, epoch=metrics["epochs"], run_id=record["run_id"])
    files = {"last": {"file": LAST, "epoch": metrics["epochs"], "sha256": sha256_file(run_dir / LAST)}}
    best_epoch = export_epoch(run_dir / BEST) if (run_dir / BEST).exists() else None
    if best_epoch == metrics["best_epoch"]:
        files["best"] = {"file": BEST, "epoch": best_epoch, "sha256": sha256_file(run_dir / BEST)}
    else:  # e.g. a run begun before exports existed, resumed past its best epoch: no file holds those weights
        (run_dir / BEST).unlink(missing_ok=True)
    card = {
        **model_facts,
        "run_id": record["run_id"],
        "method": record["method"],
        "dataset": record["dataset"],
        "seed": record["seed"],
        "metrics": {
            "last": {"epoch": metrics["epochs"], "top1": metrics["top1_last"], "top5": metrics["top5_last"]},
            "best": {"epoch": metrics["best_epoch"], "top1": metrics["top1_best"], "top5": metrics["top5_best"]},
        },
        "exports": files,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_json(run_dir / CARD, card)
    return {"card": CARD, **{which: f["file"] for which, f in files.items()}}


def read_card(run_dir: Path) -> dict[str, Any] | None:
    """The export card of a run folder, or None when it has none (a run from before exports)."""
    path = run_dir / CARD
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is unreadable ({type(e).__name__}); rerun the run with --force") from None
    if not isinstance(card, dict) or not isinstance(card.get("exports"), dict) or "architecture" not in card:
        raise UserError(f"{path} is not a student export card")
    return card


def card_of_file(path: Path, sha256: str) -> dict[str, Any] | None:
    """The card beside `path` when `path` is one of its exports (matched by name), else None. A file whose
    sha256 differs from what its card says is refused: the card would describe other weights."""
    card = read_card(path.parent)
    if card is None:
        return None
    entry = next((e for e in card["exports"].values() if isinstance(e, dict) and e.get("file") == path.name), None)
    if entry is None:
        return None
    if entry.get("sha256") != sha256:
        raise UserError(f"{path}: its sha256 differs from the one in {path.parent / CARD} (the file was changed "
                        "after the run wrote it)")
    return card


def build_from_card(card: dict[str, Any]) -> nn.Module:
    """An untrained model of the card's architecture, built exactly as the run built its student."""
    return create_model(card["architecture"], num_classes=card["num_classes"], in_chans=card["in_chans"],
                        image_size=card["image_size"], cifar_stem=card["cifar_stem"], **card.get("options", {}))


def load_export(run_dir: Path, which: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The weights of export `which` ("last" or "best") of a run folder, checked against the card's sha256 and
    read by the safe loader, and the card."""
    card = read_card(run_dir)
    if card is None:
        raise UserError(f"{run_dir} has no {CARD}: the run has no student exports")
    entry = card["exports"].get(which)
    if not isinstance(entry, dict):
        raise UserError(f"run {card['run_id']} has no '{which}' export (its card lists: "
                        f"{', '.join(sorted(card['exports']))})")
    path = run_dir / entry["file"]
    if not path.is_file():
        raise UserError(f"{path} is missing; rerun the run with --force to re-create it")
    if sha256_file(path) != entry.get("sha256"):
        raise UserError(f"{path}: sha256 differs from its card's; the file was changed after the run wrote it")
    return load_plain_weights(path), card


def completed_run(spec: str, results_dir: str | Path | None) -> tuple[str, dict[str, Any]]:
    """`run:RUN_ID` → (RUN_ID, its record), for a completed run under `results_dir`; a one-line UserError when
    the run does not exist or is not completed."""
    from kdbench.store.records import RunStore

    run_id = spec.removeprefix(RUN_TEACHER_PREFIX)
    store = RunStore(results_dir)
    record = store.load(run_id) if run_id else None
    if record is None:
        raise UserError(f"--teacher {spec}: no run '{run_id}' under {store.root / 'runs'} "
                        "(kdbench leaderboard --table runs lists them)")
    if record["status"] != "completed":
        raise UserError(f"--teacher {spec}: run {run_id} is {record['status']}, not completed")
    return run_id, record


def run_teacher_file(spec: str, results_dir: str | Path | None) -> Path:
    """`run:RUN_ID` → the run's last-epoch export, for a completed run under `results_dir`. One-line
    UserError when the run does not exist, is not completed, or has no export."""
    from kdbench.store.records import RunStore

    run_id, record = completed_run(spec, results_dir)
    store = RunStore(results_dir)
    if (record.get("method_info") or {}).get("inference_needs_teacher"):  # cnn2gnn.graph_features=teacher
        raise UserError(f"--teacher {spec}: run {run_id}'s student predicts through its own teacher's features "
                        "and cannot serve alone as a teacher")
    path = store.run_dir(run_id) / LAST
    if not path.is_file():
        raise UserError(f"--teacher {spec}: run {run_id} has no {LAST} (it finished before runs exported their "
                        "student; rerun it with --force)")
    return path
