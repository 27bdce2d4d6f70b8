"""The published numbers laid out as the papers print them: one table per paper, a row per teacher → student
pair, a column per method."""

from __future__ import annotations

import pandas as pd

from kdbench.report.leaderboard.board import Leaderboard
from kdbench.report.leaderboard.cells import published_cell
from kdbench.report.leaderboard.labels import method_rank
from kdbench.report.leaderboard.runs import is_missing
from kdbench.report.published import EPOCH_WORDS, PAPERS

ROW_LABEL = "table · teacher → student"


def paper_board(rows: pd.DataFrame) -> Leaderboard:
    """One paper's rows (from `load_published`) as a pair × method table; `data` keeps the rows as they are."""
    paper = str(rows["paper"].iloc[0])
    conventions = list(dict.fromkeys(rows["epoch"]))
    mixed = len(conventions) > 1

    def column(method: str, epoch: str) -> str:
        # A paper whose columns mix conventions (DKD's KD column is CRD's last-epoch number) says so per column.
        return f"{method} ({epoch})" if mixed else method

    labels = [f"{t} · {a} → {b}" for t, a, b in zip(rows["table"], rows["teacher"], rows["student"], strict=True)]
    methods = sorted(dict.fromkeys(zip(rows["method"], rows["epoch"], strict=True)), key=lambda m: method_rank(m[0]))
    table = pd.DataFrame("—", index=pd.Index(list(dict.fromkeys(labels)), name=ROW_LABEL),
                         columns=[column(m, e) for m, e in methods], dtype=object)
    for label, r in zip(labels, rows.to_dict("records"), strict=True):
        cell = published_cell(r["top1"], r["std"])  # `top-1 / top-5` where the paper gives top-5
        table.loc[label, column(r["method"], r["epoch"])] = cell if is_missing(r["top5"]) else \
            f"{cell} / {r['top5']:.2f}"

    metric = "top-1 (%)" if rows["top5"].isna().all() else "top-1 (%), `top-1 / top-5` where the paper gives top-5"
    footer = [f"{PAPERS[paper]}; {', '.join(sorted(set(rows['dataset'])))} {metric}",
              "epoch: " + "; ".join(f"{e} = {EPOCH_WORDS[e]}" for e in conventions)]
    runs = sorted({int(n) for n in rows["runs"] if not is_missing(n)})
    if runs:
        footer.append(f"means over {' or '.join(str(n) for n in runs)} runs (column `runs` of --format csv, per row)")
    if {"teacher", "ce"} & set(rows["method"]):
        footer.append("teacher: the teacher alone; ce: the student trained alone (the papers' Student column)")
    footer += [f"source: {s}" for s in dict.fromkeys(rows["source"])]
    notes: dict[str, list[str]] = {}
    for m, n in dict.fromkeys(zip(rows["method"], rows["note"], strict=True)):
        if n and m not in ("teacher", "ce"):
            notes.setdefault(n, []).append(m)
    footer += [f"{', '.join(ms)}: {n}" for n, ms in notes.items()]
    return Leaderboard("published", f"{paper.upper()}: published results", table, rows.reset_index(drop=True), footer)


def paper_boards(published: pd.DataFrame) -> list[Leaderboard]:
    """One board per paper, in the file's order."""
    return [paper_board(published[published["paper"] == p]) for p in dict.fromkeys(published["paper"])]
