"""The depth ladder: a distilled two-layer GNN beside ResNet18/34/50/101/152 trained on the same data.

The data for the CNN2GNN paper's "two-layer GNN vs deep CNNs" table: every CNN trained alone (`ce`), the GNN
alone (`ce` on `gnn2`), and the GNN distilled from the teacher (`cnn2gnn`), each recording its weight layers,
parameters, top-1, inference time per image at a stated batch size and training time. Runs go through the same
`execute()` as everything else, so a ladder is resumable and its runs appear in every leaderboard.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kdbench.execute.folders import check_run_folders
from kdbench.execute.resolve import RunOptions, resolve_config
from kdbench.execute.runner import execute
from kdbench.spec.paths import Paths

LADDER_CNNS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def ladder_options(
    teacher: str,
    *,
    dataset: str = "digits",
    seeds: tuple[int, ...] = (0,),
    cnns: tuple[str, ...] = LADDER_CNNS,
    gnn_student: str = "gnn2",
    distill_method: str = "cnn2gnn",
    epochs: int | None = None,
    teacher_epochs: int | None = None,
    sets: list[str] | None = None,
) -> list[RunOptions]:
    """Every run of the ladder: each CNN alone, the GNN alone, the GNN distilled from `teacher`, per seed."""
    sets = list(sets or [])
    common = {"dataset": dataset, "epochs": epochs, "teacher_epochs": teacher_epochs}
    # `--set` scopes that only make sense for one method (e.g. cnn2gnn.k) go to that method's runs.
    distill_sets = sets
    plain_sets = [s for s in sets if not s.startswith(f"{distill_method}.")]
    runs: list[RunOptions] = []
    for seed in seeds:
        runs += [RunOptions(method="ce", student=cnn, seed=seed, sets=plain_sets, **common) for cnn in cnns]
        runs.append(RunOptions(method="ce", student=gnn_student, seed=seed, sets=plain_sets, **common))
        runs.append(RunOptions(method=distill_method, teacher=teacher, student=gnn_student, seed=seed,
                               sets=distill_sets, **common))
    return runs


def run_ladder(
    teacher: str,
    *,
    paths: Paths | None = None,
    device: str = "auto",
    on_run: Callable[[int, int, dict[str, Any]], None] | None = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """Run (or reuse, when already completed) every ladder run in this process; return their records."""
    all_opts = ladder_options(teacher, **options)
    configs = [resolve_config(o) for o in all_opts]  # validate every name before training anything
    for config in configs:  # and every folder: a zoo that cannot store the teacher, not after the CNNs trained
        check_run_folders(config, paths or Paths())
    records = []
    for i, config in enumerate(configs):
        record = execute(config, paths, device=device)
        records.append(record)
        if on_run is not None:
            on_run(i + 1, len(configs), record)
    return records
