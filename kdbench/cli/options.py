"""CLI options shared by several commands (run, sweep, teachers), defined once."""

from __future__ import annotations

from pathlib import Path

import typer

ResultsDir = typer.Option(None, "--results-dir", help="Run records go here \\[default: ./results or $KDBENCH_RESULTS].")
ZooDir = typer.Option(None, "--zoo-dir", help="Teacher zoo \\[default: ~/.cache/kdbench/zoo or $KDBENCH_ZOO].")
DataRoot = typer.Option(None, "--data-root", help="Dataset files \\[default: ~/.cache/kdbench/data or $KDBENCH_DATA].")
Device = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N.")
Sets = typer.Option(
    None, "--set", help="SCOPE.KEY=VALUE, repeatable: kd.temperature=2, data.image_size=32, student.k=0, "
    "recipe.weight_decay=1e-4.",
)


def path_or_none(p: Path | None) -> Path | None:
    return Path(p).expanduser() if p is not None else None
