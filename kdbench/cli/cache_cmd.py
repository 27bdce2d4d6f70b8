"""`kdbench cache list|clear`: the teacher-output cache (kdbench.teachers.output_cache)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from kdbench.cli.app import app
from kdbench.cli.options import CacheDirOption, path_or_none
from kdbench.cli.reporter import console, out
from kdbench.core.storage import check_writable
from kdbench.teachers import cache_folder
from kdbench.teachers import output_cache as teacher_cache

cache_app = typer.Typer(help="The teacher-output cache: a frozen teacher's outputs per (seed, epoch), shared by "
                        "every run that distils from it.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


def _root(cache_dir: Path | None) -> Path:
    return path_or_none(cache_dir) or teacher_cache.default_cache_dir()


@cache_app.command("list")
def list_command(cache_dir: CacheDirOption = None) -> None:
    """One row per teacher × data × seed × batch size: entries (epoch × output files), size, last use.

    Example: kdbench cache list
    """
    root = _root(cache_dir)
    rows = cache_folder.list_namespaces(root)
    total = sum(r["bytes"] for r in rows)
    table = Table(title=f"teacher-output cache at {root} ({total / 1e6:.1f} MB of "
                  f"{teacher_cache.cap_bytes() / 1e9:g} GB)")
    for col in ("namespace", "teacher", "sha256", "dataset", "augment", "seed", "batch", "dtype", "entries", "MB",
                "last used"):
        table.add_column(col, justify="right" if col in ("seed", "batch", "entries", "MB") else "left")
    for r in rows:
        k = r["key"]
        table.add_row(r["namespace"], str(k.get("teacher", "?")), str(k.get("teacher_sha256", ""))[:12],
                      str(k.get("dataset", "?")), str(k.get("augment", "?")), str(k.get("seed", "?")),
                      str(k.get("batch_size", "?")), str(k.get("dtype", "?")), str(r["entries"]),
                      f"{r['bytes'] / 1e6:.1f}", r["last_used"])
    out.print(table)


@cache_app.command("clear")
def clear_command(cache_dir: CacheDirOption = None) -> None:
    """Remove every cached teacher output (runs recompute and refill what they need).

    Example: kdbench cache clear
    """
    root = _root(cache_dir)
    if root.is_dir():  # a read-only cache: one line, not "removed N entries" with every one still there (#34)
        check_writable(root, f"teacher-output cache {root}", "--cache-dir")
    n = cache_folder.clear(root)
    console.print(escape(f"removed {n} entries from {root}"), highlight=False)
