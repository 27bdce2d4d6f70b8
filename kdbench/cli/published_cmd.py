"""`kdbench published`: the published CIFAR-100 tables kdbench compares itself against (CRD, DKD, HKD)."""

from __future__ import annotations

import typer

from kdbench.cli.app import app
from kdbench.core.errors import UserError
from kdbench.report.leaderboard import render
from kdbench.report.published import PAPERS, load_published
from kdbench.report.published.tables import paper_boards

PUBLISHED_FORMATS = ("markdown", "csv", "latex", "html", "text")


@app.command("published")
def published_command(
    paper: str = typer.Option(None, "--paper", "-p", help=f"Only this paper: {' | '.join(PAPERS)} [default: all]."),
    fmt: str = typer.Option("markdown", "--format", "-f", help=f"{' | '.join(PUBLISHED_FORMATS)}; csv prints one "
                            "row per number with its std, runs, epoch convention and source."),
) -> None:
    """Print the published results as data: top-1 (%) per teacher → student pair and method, with the epoch
    convention (last or best) each paper used. `kdbench leaderboard --published` puts ours beside them.

    Examples:

      kdbench published --paper crd

      kdbench published --format csv > published.csv
    """
    if fmt not in PUBLISHED_FORMATS:
        raise UserError(f"unknown format '{fmt}'. Valid: {', '.join(PUBLISHED_FORMATS)}")
    published = load_published(paper)
    if fmt == "csv":
        typer.echo(published.to_csv(index=False), nl=False)
        return
    typer.echo("\n".join(render(board, fmt) for board in paper_boards(published)), nl=False)
