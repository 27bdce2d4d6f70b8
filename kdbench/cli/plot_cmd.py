"""`kdbench plot`: accuracy vs inference time per image, and training curves, as PNG and PDF."""

from __future__ import annotations

from pathlib import Path

import typer

from kdbench.cli.app import app
from kdbench.cli.options import ResultsDir, WhereOption, join_where
from kdbench.cli.reporter import console
from kdbench.core.errors import UserError
from kdbench.report.leaderboard import METRICS, filter_runs, prepare_runs
from kdbench.report.plots import FORMATS, accuracy_vs_time, select_runs, training_curves
from kdbench.report.results import load_runs
from kdbench.store.records import RunStore

# Without --runs or --where, curves are drawn for every run only when there are few enough to read.
MAX_DEFAULT_CURVES = 12


@app.command("plot")
def plot_command(
    out_dir: Path = typer.Option(Path("plots"), "--out-dir", help="Folder for the figures."),
    runs: str = typer.Option(None, "--runs", help="Training curves of these runs: ID,ID,… (unique prefixes do)."),
    where: WhereOption = None,
    metric: str = typer.Option("top1_last", "--metric", help=f"Accuracy axis: {' | '.join(METRICS)}."),
    formats: str = typer.Option("png,pdf", "--formats", help=f"Comma-separated: {', '.join(FORMATS)}."),
    results_dir: Path = ResultsDir,
    strict: bool = typer.Option(False, "--strict", help="An unreadable run record or metrics.jsonl is an error "
                                "(exit 2), not a warning."),
) -> None:
    """Accuracy vs inference time per image (one point per model / method, error bars = std over seeds) and
    training curves (test top-1 and training loss per epoch) of chosen runs.

    Examples:

      kdbench plot --out-dir plots

      kdbench plot --where dataset=digits --runs 3f2a9c,77b0e1
    """
    where = join_where(where)
    all_runs = load_runs(results_dir, strict=strict)
    if all_runs.empty:
        raise UserError(f"no run records under {RunStore(results_dir).root / 'runs'}: run `kdbench run ...` first")
    fmts = [f.strip() for f in formats.split(",") if f.strip()]
    chosen = filter_runs(prepare_runs(all_runs), where)
    written = accuracy_vs_time(chosen, out_dir, metric, fmts)
    if runs:
        curves = select_runs(chosen, [r.strip() for r in runs.split(",") if r.strip()])
    elif where or len(chosen) <= MAX_DEFAULT_CURVES:
        curves = chosen
    else:
        curves = chosen.iloc[:0]
        console.print(f"[dim]›[/dim] {len(chosen)} runs: pick the training curves with --runs or --where",
                      highlight=False)
    written += training_curves(curves, results_dir, out_dir, fmts, strict=strict)
    if not written:
        console.print("nothing to plot: no completed runs with an inference time or a metrics.jsonl")
    for path in written:
        typer.echo(str(path))
