"""`kdbench leaderboard`: paper-like tables from every run record under --results-dir."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from kdbench.cli.app import app
from kdbench.cli.options import ResultsDir, WhereOption, join_where
from kdbench.cli.reporter import console
from kdbench.cli.tables import CLI_FORMATS, print_table
from kdbench.core.errors import UserError
from kdbench.report.leaderboard import FAMILIES, METRICS, TABLES, build, build_published, format_for_path, render
from kdbench.report.results import load_runs
from kdbench.store.records import RunStore


@app.command("leaderboard")
def leaderboard_command(
    table: str = typer.Option("methods", "--table", "-t", help=f"Which table: {' | '.join(TABLES)}."),
    metric: str = typer.Option(None, "--metric", help=f"{' | '.join(METRICS)} (CRD tables: last epoch; "
                               "DKD tables: best epoch) \\[default: top1_last]."),
    where: WhereOption = None,
    fmt: str = typer.Option(None, "--format", "-f", help=f"{' | '.join(CLI_FORMATS)} [default: from --out's suffix, "
                            "else rich]."),
    out: Path = typer.Option(None, "--out", "-o", help="Write the table to this file (.md .csv .tex .html .txt)."),
    distilled: str = typer.Option("cnn2gnn", "--distilled", help="Ladder: distilled methods shown beside the "
                                  "models trained alone (comma-separated)."),
    method: str = typer.Option("cnn2gnn", "--method", "-m", help="Ablation: the method whose variants to compare."),
    rows: str = typer.Option(None, "--rows", help="Pivot: the key(s) of the rows, SCOPE.KEY as --set takes them "
                             "(comma-separated), e.g. kd.temperature."),
    cols: str = typer.Option(None, "--cols", help="Pivot: the key(s) of the columns, e.g. kd.w_kd \\[default: "
                             "one column]."),
    published: bool = typer.Option(False, "--published", help="Ours beside the published CIFAR-100 numbers "
                                    "(`kdbench published`) with Δ, each at the paper's epoch convention."),
    all_code: bool = typer.Option(False, "--all-code", help="Show runs of older code too, as rows of their own "
                                  "(`kd @3f2a1c`); by default only the current code's runs count."),
    family: str = typer.Option("table", "--family", help=f"Methods / ablation: what Holm's correction runs across: "
                               f"{' | '.join(FAMILIES)} (every comparison of the table, or each column's).",
                               show_default=True),
    ci: bool = typer.Option(False, "--ci", help="Show in each cell its difference from ce with the 95 % interval "
                            "(Δ) and the test set's 95 % Wilson interval (W); the CSV always has them."),
    results_dir: Path = ResultsDir,
    strict: bool = typer.Option(False, "--strict", help="An unreadable run record is an error (exit 2), "
                                "not a warning."),
) -> None:
    """Compare runs: KD methods per teacher → student pair, the depth ladder, every run, or one method's ablation.

    Only completed runs are averaged (mean ± std over seeds, seed count in brackets); the footer counts the
    failed, diverged and running ones and names the metric. Only runs of the current code count (each record
    carries its code fingerprint); the footer says how many older ones were left out (`--all-code` shows them).
    Runs that differ in more than their seed (recipe, data parameters, hyperparameters) never share a cell.
    Each method's cell is tested against the student alone of its column (paired t-test by seed; ⇑/⇓ survive
    Holm's correction across the table's comparisons, or each column's with --family column; ↑/↓ are p < 0.05
    alone; ʷ: Welch's test, where the seeds differ); the footer names the family, gives each comparison's
    smallest detectable difference (post-hoc) and the test set's binomial error; --ci puts each difference's 95 %
    interval and the test set's Wilson interval in the cells.

    Examples:

      kdbench leaderboard

      kdbench leaderboard --metric top1_best --out table.tex

      kdbench leaderboard --ci --family column --format markdown

      kdbench leaderboard --table ladder --format markdown

      kdbench leaderboard --table runs --where method=kd,status=failed

      kdbench leaderboard --published --where dataset=cifar100

      kdbench leaderboard --table pivot --rows kd.temperature --cols kd.w_kd --where method=kd

      kdbench leaderboard --table variance --format markdown   (teacher seed × subset draw × seed: which dominates)
    """
    where = join_where(where)
    runs = load_runs(results_dir, strict=strict)
    if runs.empty:
        root = RunStore(results_dir).root
        raise UserError(f"no run records under {root / 'runs'}: run `kdbench run ...` first or pass --results-dir")
    fmt = fmt or (format_for_path(out) if out is not None else "rich")
    if fmt not in CLI_FORMATS:
        raise UserError(f"unknown format '{fmt}'. Valid: {', '.join(CLI_FORMATS)}")
    if published:
        if metric is not None:
            raise UserError("--published compares each paper's number at its own epoch convention (last or best): "
                            "drop --metric")
        board = build_published(runs, where, all_code=all_code)
    else:
        if (rows or cols) and table != "pivot":
            raise UserError("--rows / --cols lay out the pivot table: add --table pivot")
        board = build(runs, table, metric or "top1_last", where,
                      distilled=[m.strip() for m in distilled.split(",") if m.strip()], method=method,
                      all_code=all_code, rows=_keys(rows), cols=_keys(cols), family=family, ci=ci)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render(board, "text" if fmt == "rich" else fmt))  # a file holds no colours
        console.print(escape(f"wrote {board.title} ({len(board.table)} rows) to {out}"), highlight=False)
    elif fmt == "rich":
        print_table(board)
    else:
        typer.echo(render(board, fmt), nl=False)


def _keys(text: str | None) -> list[str]:
    return [k.strip() for k in (text or "").split(",") if k.strip()]
