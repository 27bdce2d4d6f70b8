"""The `kdbench` command. Thin: parse, call one library function, render with rich.

User mistakes (a `UserError`: unknown name, number out of range, missing dataset) print one line and exit 2
without a traceback; a diverged run exits 1.
"""

from __future__ import annotations

import errno
import sys

import typer
from rich.markup import escape

from kdbench.cli.reporter import console
from kdbench.core.errors import UserError

app = typer.Typer(
    name="kdbench",
    help="A benchmark harness for knowledge distillation: one engine, one evaluator, one teacher zoo.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _register_commands() -> None:
    # Each command (group) lives in its own `*_cmd.py` module and adds itself to `app` on import; order of
    # discovery is alphabetical, `--help` lists commands in registration order.
    import importlib
    import pkgutil

    from kdbench import cli

    for info in sorted(pkgutil.iter_modules(cli.__path__), key=lambda i: i.name):
        if info.name.endswith("_cmd"):
            importlib.import_module(f"{cli.__name__}.{info.name}")


def main() -> None:
    _register_commands()
    try:
        app()
    except UserError as e:
        _print_error(str(e))
        sys.exit(2)
    except OSError as e:
        # A full or read-only disk mid-run is the machine's state, not a bug: one line saying what to do (writes are
        # atomic, so the records written so far are whole; the run's record says `failed`, and a rerun resumes).
        if e.errno not in DISK_ERRORS:
            raise
        where = f" writing {e.filename}" if e.filename else ""
        _print_error(f"{e.strerror or e}{where}: free space there (or choose another --results-dir, --zoo-dir or "
                     "KDBENCH_CACHE) and run the same command again (it resumes from the run's last checkpoint, "
                     "if it wrote one)")
        sys.exit(2)


# The OSErrors that mean the disk, not kdbench: no space, over quota, mounted read-only.
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def _print_error(message: str) -> None:
    # The message carries text from elsewhere (paths, a torch/gloo error like `[.../pair.cc:561] Connection
    # closed`, a list `[1, 2]`): printed literally, never read as rich markup.
    console.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
