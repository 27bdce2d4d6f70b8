"""Leaderboards on a terminal: a rich Table with the best cells in bold green (the library renders only text)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from kdbench.report.leaderboard import FORMATS, Leaderboard
from kdbench.report.leaderboard.render import grid

# What --format takes on the command line: the terminal table, then every text format of the library.
CLI_FORMATS = ("rich", *FORMATS)


def rich_table(board: Leaderboard) -> Table:
    header, rows, bold = grid(board)
    # Text objects, never strings: rich would read labels and footnotes such as `cnn2gnn [cnn2gnn.k=0]` as markup
    # and drop them.
    table = Table(title=Text(board.title), caption=Text("\n".join(board.footer)), caption_justify="left")
    for j, h in enumerate(header):
        table.add_column(Text(h), justify="left" if j == 0 else "right")
    for i, row in enumerate(rows):
        # A trailing marker as well as bold, so the best cell survives copy-paste and colourless terminals.
        table.add_row(*[Text(c + " *", style="bold green") if (i, j) in bold else Text(c)
                        for j, c in enumerate(row)])
    return table


def print_table(board: Leaderboard) -> None:
    """The table on stdout (it is the command's output), wide when piped or logged so cells are not cut."""
    stdout = Console()
    if not stdout.is_terminal:
        stdout = Console(width=250)
    stdout.print(rich_table(board))
