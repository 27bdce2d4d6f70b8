"""Rendering a `Leaderboard` as text: plain aligned columns, markdown, CSV, LaTeX and HTML. (The coloured terminal
table is the command line's: kdbench.cli.tables.)"""

from __future__ import annotations

import html
from pathlib import Path

from kdbench.core.errors import UserError, unknown_name
from kdbench.report.leaderboard.board import Leaderboard

FORMATS = ("text", "markdown", "csv", "latex", "html")

SUFFIX_FORMATS = {".md": "markdown", ".markdown": "markdown", ".csv": "csv", ".tex": "latex", ".html": "html",
                  ".htm": "html", ".txt": "text"}


def format_for_path(path: str | Path) -> str:
    """The output format a file name implies (`.md`, `.csv`, `.tex`, `.html`, `.txt`)."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIX_FORMATS:
        raise UserError(f"cannot tell the format of '{path}' from its suffix: pass --format "
                        f"({', '.join(FORMATS)}) or use one of {', '.join(SUFFIX_FORMATS)}")
    return SUFFIX_FORMATS[suffix]


def grid(board: Leaderboard) -> tuple[list[str], list[list[str]], set[tuple[int, int]]]:
    """Header, rows of strings and the (row, column) positions to emphasise, index included when named."""
    t = board.table
    with_index = t.index.name is not None
    header = ([str(t.index.name)] if with_index else []) + [str(c) for c in t.columns]
    rows, bold = [], set()
    for i, (label, values) in enumerate(t.iterrows()):
        cells = [str(v) for v in values]
        rows.append(([str(label)] if with_index else []) + cells)
        for j, col in enumerate(t.columns):
            if (str(label), str(col)) in board.bold:
                bold.add((i, j + int(with_index)))
    return header, rows, bold


def render(board: Leaderboard, fmt: str = "markdown") -> str:
    """The table as text in `fmt` (one of FORMATS)."""
    if fmt not in FORMATS:
        raise unknown_name("format", fmt, FORMATS)
    if fmt == "csv":
        return board.data.to_csv(index=False)
    if fmt == "markdown":
        return to_markdown(board)
    if fmt == "latex":
        return to_latex(board)
    if fmt == "html":
        return to_html(board)
    return to_text(board)


def to_text(board: Leaderboard) -> str:
    """Plain text: title, aligned columns (the first left, numbers right), best cells marked " *", footer."""
    header, rows, bold = grid(board)
    cells = [header, *[[c + " *" if (i, j) in bold else c for j, c in enumerate(row)] for i, row in enumerate(rows)]]
    widths = [max(len(r[j]) for r in cells) for j in range(len(header))]

    def line(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths, strict=True)))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([board.title, "", line(header), rule, *map(line, cells[1:]), "", *board.footer]) + "\n"


def to_markdown(board: Leaderboard) -> str:
    header, rows, bold = grid(board)

    def cell(text: str, strong: bool) -> str:
        text = text.replace("|", "\\|")
        return f"**{text}**" if strong else text

    lines = [f"**{board.title}**", "", "| " + " | ".join(cell(h, False) for h in header) + " |",
             "|" + "|".join(["---"] + ["--:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(cell(c, (i, j) in bold) for j, c in enumerate(row)) + " |"
              for i, row in enumerate(rows)]
    lines.append("")
    lines += [f"- {line}" for line in board.footer]
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "±": r"$\pm$", "→": r"$\rightarrow$", "←": r"$\leftarrow$", "†": r"$^\dagger$", "·": r"$\cdot$",
                  "‡": r"$^\ddagger$", "§": r"\S{}",
                  "↑": r"$\uparrow$", "↓": r"$\downarrow$", "⇑": r"$\Uparrow$", "⇓": r"$\Downarrow$",
                  "ʷ": r"$^{w}$", "√": r"$\surd$", "α": r"$\alpha$", "−": "-", "²": r"$^2$",
                  "—": "--", "Δ": r"$\Delta$", "σ": r"$\sigma$", "×": r"$\times$", "⊃": r"$\supset$",
                  "≥": r"$\geq$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(board: Leaderboard) -> str:
    header, rows, bold = grid(board)

    def cell(text: str, strong: bool) -> str:
        text = latex_escape(text)
        return rf"\textbf{{{text}}}" if strong else text

    spec = "l" + "r" * (len(header) - 1)
    lines = [r"% kdbench leaderboard; needs \usepackage{booktabs}", r"\begin{table}[t]", r"\centering",
             rf"\caption{{{latex_escape(board.title)}}}", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(cell(h, False) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(cell(c, (i, j) in bold) for j, c in enumerate(row)) + r" \\" for i, row in enumerate(rows)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if board.footer:
        lines.append(r"\par\smallskip{\footnotesize " + r" \\ ".join(latex_escape(f) for f in board.footer) + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def to_html(board: Leaderboard) -> str:
    header, rows, bold = grid(board)
    esc = html.escape
    out = ['<table class="kdbench-leaderboard">', f"<caption>{esc(board.title)}</caption>", "<thead><tr>"]
    out += [f"<th>{esc(h)}</th>" for h in header]
    out += ["</tr></thead>", "<tbody>"]
    for i, row in enumerate(rows):
        cells = [f"<td><strong>{esc(c)}</strong></td>" if (i, j) in bold else f"<td>{esc(c)}</td>"
                 for j, c in enumerate(row)]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody>")
    if board.footer:
        out.append(f'<tfoot><tr><td colspan="{len(header)}">'
                   + "<br/>".join(esc(f) for f in board.footer) + "</td></tr></tfoot>")
    out.append("</table>")
    return "\n".join(out) + "\n"
