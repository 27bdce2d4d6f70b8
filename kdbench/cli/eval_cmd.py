"""`kdbench eval RUN_ID --batch-sizes 1,16,64,256`: accuracy vs evaluation batch size for a finished run."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from kdbench.cli.app import app
from kdbench.cli.options import DataRoot, Device, ResultsDir
from kdbench.cli.reporter import out
from kdbench.core.errors import UserError
from kdbench.execute.reevaluate import reevaluate


def parse_int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{what}: expected comma-separated integers, got '{text}'") from None
    if not values:
        raise UserError(f"{what}: give at least one value")
    return values


@app.command("eval")
def eval_command(
    run_id: str = typer.Argument(..., help="Run id (or a unique prefix) of a completed run."),
    batch_sizes: str = typer.Option("1,16,64,256", "--batch-sizes", help="Comma-separated evaluation batch sizes."),
    results_dir: Path = ResultsDir,
    data_root: Path = DataRoot,
    device: str = Device,
    which: str = typer.Option("last", "--which", help="The student of the last or the best epoch: last | best."),
) -> None:
    """Re-evaluate a finished run at several evaluation batch sizes and store the curve in its record.

    Students whose graph spans the batch (cnn2gnn with graph=batch) depend on their neighbours; CNNs and
    anchor-graph students give a flat curve.

    Example: kdbench eval 3f2a9c01 --batch-sizes 1,16,64,256
    """
    record = reevaluate(run_id, parse_int_list(batch_sizes, "--batch-sizes"), results_dir=results_dir,
                        data_root=data_root, device=device, which=which)
    curve = record["eval_curve" if which == "last" else f"eval_curve_{which}"]
    table = Table(title=f"run {record['run_id']} ({record['method']}, {record['student']}, {which} epoch): "
                  f"accuracy vs eval batch size (order seed {curve['order_seed']})")
    for col in ("batch size", "top-1", "top-5", "loss"):
        table.add_column(col, justify="right")
    for p in curve["points"]:
        table.add_row(str(p["batch_size"]), f"{p['top1']:.2f}", f"{p['top5']:.2f}", f"{p['loss']:.4f}")
    out.print(table)
