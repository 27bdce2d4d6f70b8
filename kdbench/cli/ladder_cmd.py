"""`kdbench ladder`: the distilled two-layer GNN beside ResNet18…152 on the same data."""

from __future__ import annotations

import typer
from rich.markup import escape

from kdbench.cli.app import app
from kdbench.cli.eval_cmd import parse_int_list
from kdbench.cli.options import (
    DataRootOption,
    DatasetOption,
    DeviceOption,
    EpochsOption,
    MethodOption,
    ResultsDirOption,
    SetsOption,
    TeacherEpochsOption,
    TeacherOption,
    ZooDirOption,
)
from kdbench.cli.reporter import console, out
from kdbench.cli.tables import rich_table
from kdbench.execute.ladder import LADDER_CNNS, run_ladder
from kdbench.report.leaderboard import build, render
from kdbench.spec.paths import Paths


@app.command("ladder")
def ladder_command(
    teacher: TeacherOption = "resnet152",
    dataset: DatasetOption = "digits",
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated seeds."),
    models: str = typer.Option(",".join(LADDER_CNNS), "--models", help="CNNs trained alone beside the GNN."),
    gnn: str = typer.Option("gnn2", "--gnn", help="The GNN student."),
    method: MethodOption = "cnn2gnn",
    epochs: EpochsOption = None,
    teacher_epochs: TeacherEpochsOption = None,
    sets: SetsOption = None,
    results_dir: ResultsDirOption = None,
    zoo_dir: ZooDirOption = None,
    data_root: DataRootOption = None,
    device: DeviceOption = "auto",
    fmt: str = typer.Option("rich", "--format", help="rich | markdown | csv | latex | html."),
) -> None:
    """Train ResNet18/34/50/101/152 alone, the GNN alone and the distilled GNN; print the ladder table.

    Completed runs are reused, so an interrupted ladder continues where it stopped.

    Example: kdbench ladder --teacher resnet152 --dataset digits --seeds 0,1,2
    """
    def progress(i: int, n: int, record: dict) -> None:
        m = record.get("metrics") or {}
        console.print(escape(f"[{i}/{n}] {record['method']} {record['student']} seed {record['seed']}: "
                             f"{record['status']} top-1 {m.get('top1_last', float('nan')):.2f}"), highlight=False)

    paths = Paths(results_dir, zoo_dir, data_root)
    run_ladder(
        teacher or "resnet152", paths=paths, device=device or "auto", on_run=progress, dataset=dataset,
        seeds=tuple(parse_int_list(seeds, "--seeds")), cnns=tuple(m for m in models.split(",") if m),
        gnn_student=gnn, distill_method=method, epochs=epochs, teacher_epochs=teacher_epochs, sets=sets,
    )
    board = build(results_dir, table="ladder", where=f"dataset={dataset}", distilled=(method,))
    out.print(rich_table(board) if fmt == "rich" else render(board, fmt))
