"""CLI options shared by several commands, each defined once.

`run`, `sweep` and `ladder` declare their common options with these `Annotated` aliases
(`epochs: EpochsOption = None`), so a flag, its short form and its help text exist in one place; the default sits
in each command's signature (e.g. `--device` is `auto` for `run`, unset for `sweep`, whose sweep file may set it).
`ResultsDir`, `ZooDir`, `DataRoot`, `Device` and `Sets` are the same options in the older default-value style
(`zoo_dir: Path = ZooDir`), for the commands that still use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

_RESULTS_HELP = "Run records go here \\[default: ./results or $KDBENCH_RESULTS]."
_ZOO_HELP = "Teacher zoo \\[default: ~/.cache/kdbench/zoo or $KDBENCH_ZOO]."
_DATA_HELP = "Dataset files \\[default: ~/.cache/kdbench/data or $KDBENCH_DATA]."
_DEVICE_HELP = "auto | cpu | cuda | cuda:N."
_SETS_HELP = ("SCOPE.KEY=VALUE, repeatable: kd.temperature=2, data.image_size=32, student.k=0, "
              "recipe.weight_decay=1e-4, recipe.dot_delta=0.075 (DOT's two momenta, any method with a teacher).")

MethodOption = Annotated[str, typer.Option("--method", "-m", help="Distillation method (see `kdbench methods`).")]
TeacherOption = Annotated[str | None, typer.Option("--teacher", "-t", help="Teacher architecture (any timm model).")]
DatasetOption = Annotated[str, typer.Option("--dataset", "-d", help="Dataset (see `kdbench datasets`).")]
TeacherSeedOption = Annotated[int | None, typer.Option("--teacher-seed",
                                                        help="Seed of the zoo teacher to use or train.")]
WhereOption = Annotated[list[str] | None, typer.Option(
    "--where", "-w", help="Filter runs first: COLUMN=VALUE[,COLUMN=VALUE…] (comma = AND, `|` = OR, `!=` negates), "
    "e.g. method=kd|crd,dataset=digits; a setting as --set names it (recipe.dot_delta=0|none, data.subset_seed=none: "
    "none = left at its default); setting=none keeps the runs at their method's defaults; repeatable: every --where "
    "must hold.")]


def join_where(where: list[str] | None) -> str | None:
    """Several --where flags as one filter: all of them must hold (their clauses joined by AND)."""
    parts = [w for w in where or [] if w.strip()]
    return ",".join(parts) or None


EpochsOption = Annotated[int | None, typer.Option("--epochs", help="Student epochs \\[default: the dataset recipe's].")]
TeacherEpochsOption = Annotated[int | None, typer.Option("--teacher-epochs",
                                                          help="Teacher epochs \\[default: recipe's].")]
BatchSizeOption = Annotated[int | None, typer.Option("--batch-size",
                                                      help="Training batch size \\[default: recipe's].")]
LrOption = Annotated[float | None, typer.Option("--lr", help="Base learning rate, a finite number in (0, 10] "
                                                "\\[default: recipe's].")]
SetsOption = Annotated[list[str] | None, typer.Option("--set", help=_SETS_HELP)]
ResultsDirOption = Annotated[Path | None, typer.Option("--results-dir", help=_RESULTS_HELP)]
ZooDirOption = Annotated[Path | None, typer.Option("--zoo-dir", help=_ZOO_HELP)]
DataRootOption = Annotated[Path | None, typer.Option("--data-root", help=_DATA_HELP)]
DeviceOption = Annotated[str | None, typer.Option("--device", help=_DEVICE_HELP)]
ForceOption = Annotated[bool, typer.Option("--force", help="Rerun runs that already completed.")]
TeacherCacheOption = Annotated[str | None, typer.Option(
    "--teacher-cache", help="on | off: read and fill the cache of the teacher's outputs (the same numbers either "
    "way; `kdbench methods` says what each method caches).")]
TeacherCacheDtypeOption = Annotated[str | None, typer.Option(
    "--teacher-cache-dtype", help="float32 (exact: the same numbers as no cache) | float16 (half the size, other "
    "numbers: part of the run id).")]
CacheDirOption = Annotated[Path | None, typer.Option(
    "--cache-dir", help="Teacher-output cache \\[default: ~/.cache/kdbench/teacher-outputs or $KDBENCH_CACHE; "
    "size cap $KDBENCH_CACHE_GB, default 20].")]

ResultsDir = typer.Option(None, "--results-dir", help=_RESULTS_HELP)
ZooDir = typer.Option(None, "--zoo-dir", help=_ZOO_HELP)
DataRoot = typer.Option(None, "--data-root", help=_DATA_HELP)
Device = typer.Option("auto", "--device", help=_DEVICE_HELP)
Sets = typer.Option(None, "--set", help=_SETS_HELP)


def path_or_none(p: Path | None) -> Path | None:
    return Path(p).expanduser() if p is not None else None
